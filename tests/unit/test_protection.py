"""pile.protection: the trip table, in two layers, inside MicroPython.

1. The table's semantics, exactly: Protection(board, thresholds(board_cfg, cfg)).judge(
   inputs, now) called directly (Rig) with inputs the test chooses (a list indexed by the
   IN_* constants, in the units the gun hands them: mV, mA, 0.1 degC) and a test clock
   stepped 10 ms at a time as the gun's control step runs.  The board is the real
   simulated one (manual clock, fresh storage): its relay shows that a FAULT trip opens
   it before judge() returns, and its bench fires the HAL alarm (estop / leakage).
2. The whole path through the real gun step: kit.Pile (the real App on a manual-clock
   simulated board, stepped board time, the bench driving the world) for what needs the
   gun's inputs, outputs and session end: the alarm, the lock and its retries, the CP and
   the pilot's debounce, the real metering on a dead ADC, the stop code of the order.

Timings are counted from the first step (judge() call) that sees a change to the step
that trips or clears, as the old tests counted from the first control tick.
"""
import json

from hal import sim
from pile import journal, protection
from pile.gun import CHARGING, FAULTED, LOCK_MS
from pile.pilot import current_da
from pile.protection import (ABOVE, AUTO, BELOW, FAULT, IN_ABSENT, IN_CP, IN_DIODE,
                             IN_ESTOP, IN_HARD, IN_LEAK, IN_LOCK, IN_MA, IN_METER, IN_MV,
                             IN_OFFER, IN_RCD, IN_SOFT, IN_TEMP, IN_UNLOCK, IN_WELDED,
                             INPUTS, IS, RULES, UNPLUG, WARN, Protection, thresholds)
from kit import Pile, fresh_dir


def _board_cfg(**prot):
    with open("boards/sim/board.json") as f:
        cfg = json.load(f)
    cfg["protection"].update(prot)
    return cfg


def _idle():
    """The inputs of an idle, plugged pile with nothing wrong (relay open: no current)."""
    inp = [False] * INPUTS
    inp[IN_MV] = 230000
    inp[IN_MA] = None
    inp[IN_OFFER] = 32000
    inp[IN_TEMP] = 250
    inp[IN_SOFT] = inp[IN_HARD] = None
    return inp


class Rig:
    """Board + protection; the test sets `inp` and steps the clock: every step is one
    judge() of a copy of `inp` (judge derives IN_SOFT / IN_HARD in the list it gets, and
    the gun refills its list every step).  `tripped` collects what judge() returned."""

    def __init__(self, cfg=None, **prot):
        self.bcfg = _board_cfg(**prot)
        self.board = sim.Board(self.bcfg, {"storage": fresh_dir(), "manual": True})
        self.p = thresholds(self.bcfg, cfg)
        self.prot = Protection(self.board, self.p)
        self.t = 1000
        self.inp = _idle()
        self.tripped = []
        self.step()

    def step(self, ms=10, n=1):
        for _ in range(n):
            self.t += ms
            self.board.advance(ms)
            code = self.prot.judge(list(self.inp), self.t)
            if code:
                assert code in self.prot.active and protection.kind(code) == FAULT, code
                assert not self.board.relay_cmd, "judge() returned with the relay closed"
                self.tripped.append(code)

    def run(self, ms, tick=10):
        """Step for `ms` of board time."""
        self.step(tick, ms // tick)

    def charge(self):
        """Plug, PWM 53 %, lock, relay closed: the car draws 31.8 A of the 31.8 offered."""
        b = self.board
        b.bench({"cmd": "plug"})
        b.cp_set(53)
        b.lock_set(True)
        self.run(400)
        assert b.lock_feedback() and b.cp_level() == "C"
        b.relay_set(True)
        assert b.contacts and b.violation_count == 0
        self.inp[IN_OFFER] = current_da(53) * 100
        self.inp[IN_MA] = 31800
        self.step()
        assert not self.prot.active and b.relay_cmd, self.prot.active

    def active(self):
        return sorted(self.prot.active)

    def opened(self):
        return not self.board.relay_cmd and not self.board.contacts


def _until(rig, code, limit_ms, tick=10):
    """Step until `code` is active; return the board ms from the first step that saw the
    change (the one right after the caller's change) to the trip, None after limit_ms."""
    first = rig.t + tick
    while rig.t - first < limit_ms:
        rig.step(tick)
        if code in rig.prot.active:
            return rig.t - first
    return None


def _cleared(rig, code, limit_ms, tick=10):
    """Like _until, for the moment `code` clears."""
    first = rig.t + tick
    while rig.t - first < limit_ms:
        rig.step(tick)
        if code not in rig.prot.active:
            return rig.t - first
    return None


# === 1. the table ==========================================================================

def test_table_rows_are_complete():
    rig = Rig()
    p = rig.p
    seen = set()
    for row in RULES:
        code, kind, inp, test, limit, back, hold, clear, after = row
        assert 3000 <= code <= 5999 and kind in (FAULT, WARN), row
        assert 0 <= inp < INPUTS and test in (IS, ABOVE, BELOW), row
        if test == IS:
            assert limit == 0 and back == 0, row
        else:       # a missing key would silently read as a limit of 0
            for key in (limit, back):
                assert key == 0 or key in p, (row, key)
        for key in (hold, after):
            assert key == 0 or key in protection.DEFAULTS, (row, key)
        assert clear in (AUTO, UNPLUG), row
        assert protection.kind(code) == kind
        seen.add(code)
    assert protection.kind(1234) is None
    # every code has one kind and one clear rule, even when two rows share it
    for code in seen:
        rows = [r for r in RULES if r[0] == code]
        assert len(set((r[1], r[7], r[8]) for r in rows)) == 1, code
    assert sorted(c for c in seen if len([r for r in RULES if r[0] == c]) > 1) == \
        [3011, 4002]                             # over-current and the lock have two rows
    # the module's names of the codes are the table's codes
    names = (protection.ESTOP, protection.METER, protection.WELDED, protection.HOT,
             protection.LOCK, protection.CP, protection.DIODE, protection.VENT,
             protection.DERATED, protection.OVER_V, protection.UNDER_V, protection.OVER_I,
             protection.LEAK, protection.RCD)
    assert sorted(names) == sorted(seen) == [3003, 3006, 3008, 3010, 3011, 3012, 3013,
                                             3014, 3020, 4000, 4001, 4002, 4004, 4006]
    # every row is judged: inputs that hold every row at once (but under-voltage, which
    # cannot hold with over-voltage) trip every code, the warning too, in the table's
    # order within a step, and judge() returns the first fault that tripped
    inp = _idle()
    for row in RULES:
        inp[row[2]] = True if row[3] == IS else None
    inp[IN_MV], inp[IN_TEMP], inp[IN_MA], inp[IN_OFFER] = 300000, 900, 60000, 31800
    assert rig.prot.judge(list(inp), 2000) == 3003     # no hold: at once
    assert rig.prot.judge(list(inp), 2000 + 5000) == 3006  # the first held fault row
    assert sorted(rig.prot.active) == sorted(seen - {4001}), rig.active()
    assert rig.prot.codes() == [3003, 4004, 4006, 4002, 3011, 3013,     # at once
                                3006, 4000, 3010, 3008, 3012]           # held
    assert rig.prot.codes(WARN) == [3014, 3020] and rig.prot.code() == 3003
    # docs/faults.md is the project's one table of codes: every code is in it
    with open("docs/faults.md") as f:
        doc = f.read()
    for code in seen:
        assert "| %d |" % code in doc, code


def test_thresholds_from_board_then_config():
    p = thresholds(_board_cfg(t_stop_c=90, v_hold_ms=2000), {"protection": {"v_hold_ms": 700}})
    assert p["t_stop_c"] == 90                   # board file
    assert p["v_hold_ms"] == 700                 # config wins over the board file
    assert p["oc_soft_ms"] == protection.DEFAULTS["oc_soft_ms"] == 5000
    assert p["max_mv"] == 253000 and p["min_mv"] == 187000     # ratings
    assert p["max_mv_back"] == 251000 and p["min_mv_back"] == 189000
    assert (p["t_stop"], p["t_resume"], p["t_derate"], p["t_derate_back"]) == \
        (899, 599, 699, 649)                     # 0.1 degC
    p = thresholds(_board_cfg(v_margin_dv=50), None)
    assert p["max_mv"] == 258000 and p["min_mv"] == 182000
    p = thresholds(_board_cfg(), {"protection": "junk"})   # not an object: ignored
    assert p["v_hold_ms"] == 2000 and p["t_stop"] == 849
    # and judge() goes by them: the config's 700 ms voltage hold
    r = Rig(cfg={"protection": {"v_hold_ms": 700}}, t_stop_c=90)
    r.inp[IN_MV] = 253100
    assert _until(r, 4000, 3000) == 700
    r.inp[IN_TEMP] = 899
    r.run(3000)
    assert 3010 not in r.prot.active
    r.inp[IN_TEMP] = 900
    assert _until(r, 3010, 2000) == 1000


# --- at once ---------------------------------------------------------------------------

def test_estop_held_and_cleared_auto():
    r = Rig()
    r.charge()
    r.inp[IN_ESTOP] = True
    assert _until(r, 3003, 100) == 0
    assert r.tripped == [3003] and r.opened() and r.prot.changed
    assert r.prot.idle_duty() == 0               # clears by itself: CP shows F
    r.run(3000)
    assert r.active() == [3003] and r.tripped == [3003]    # held while pressed
    r.inp[IN_ESTOP] = False
    assert _cleared(r, 3003, 3000) == 1000       # estop_clear_ms after release
    assert r.prot.code() == 0 and r.prot.idle_duty() == 100


def test_alarm_latches_until_judged():
    r = Rig()
    r.charge()
    r.board.bench({"cmd": "fault", "name": "estop", "on": True})
    r.board.bench({"cmd": "fault", "name": "estop", "on": False})   # a short pulse
    # the alarm alone: relay open, the interlock blocked, no trip yet
    assert r.opened() and r.prot.code() == 3003 and r.prot.active == {}
    r.step()                                     # the input says released: still trips
    assert r.tripped == [3003] and r.active() == [3003] and r.prot.irq == 0
    assert _cleared(r, 3003, 2000) == 1000
    r.board.bench({"cmd": "fault", "name": "leakage", "on": True})
    assert r.prot.code() == 4004 and r.prot.active == {}
    r.inp[IN_LEAK] = True
    r.step()
    assert r.tripped == [3003, 4004] and r.active() == [4004]


def test_unplug_while_condition_lasts_counts():
    r = Rig()
    r.charge()
    r.inp[IN_LEAK] = True
    r.step()
    assert r.tripped == [4004] and r.opened()
    assert r.prot.idle_duty() == 100             # +12 V so that the unplug can be seen
    r.inp[IN_MA] = None                          # the relay is open
    r.inp[IN_ABSENT] = True                      # unplugged
    r.run(100)
    assert r.active() == [4004]                  # the condition is still there
    assert r.prot.idle_duty() == 0               # unplug seen: F until it clears
    r.inp[IN_ABSENT] = False                     # plugged back in meanwhile
    r.run(100)
    r.inp[IN_LEAK] = False
    assert _cleared(r, 4004, 100) == 0


def test_unplug_clears_only_after_the_trip():
    r = Rig()
    r.inp[IN_ABSENT] = True                      # absent before: does not count
    r.run(100)
    r.inp[IN_ABSENT] = False
    r.inp[IN_RCD] = True                         # the gun's leakage self-test failed
    r.step()
    r.inp[IN_RCD] = False                        # a one-step input
    assert r.tripped == [4006] and r.active() == [4006]
    r.run(5000)
    assert r.active() == [4006]
    r.inp[IN_ABSENT] = True
    assert _cleared(r, 4006, 100) == 0


# --- held trips ------------------------------------------------------------------------

def test_over_voltage_hold_and_hysteresis():
    r = Rig()
    r.charge()
    r.inp[IN_MV] = 253000                        # at the limit: not above
    r.run(5000)
    assert r.active() == []
    r.inp[IN_MV] = 253100
    assert _until(r, 4000, 3000) == 2000         # v_hold_ms
    assert r.opened() and r.tripped == [4000]
    r.inp[IN_MV] = 252000                        # inside the limit, not by 2 V
    r.run(10000)
    assert r.active() == [4000]
    r.inp[IN_MV] = 251100                        # by 1.9 V: not yet
    r.run(10000)
    assert r.active() == [4000]
    r.inp[IN_MV] = 250900
    assert _cleared(r, 4000, 9000) == 5000       # v_clear_ms after it went


def test_voltage_glitch_shorter_than_hold_does_nothing():
    r = Rig()
    r.charge()
    for mv in (260000, 180000):
        r.inp[IN_MV] = mv
        r.run(1990)
        r.inp[IN_MV] = 230000
        r.step()
    r.run(3000)
    assert r.active() == [] and r.board.relay_cmd and r.tripped == []


def test_under_voltage():
    r = Rig()
    r.inp[IN_MV] = 186900
    assert _until(r, 4001, 3000) == 2000
    assert r.prot.idle_duty() == 0 and r.prot.code() == 4001
    r.inp[IN_MV] = 188000                        # back in, but within the hysteresis
    r.run(6000)
    assert r.active() == [4001]
    r.inp[IN_MV] = 230000
    assert _cleared(r, 4001, 6000) == 5000


def test_no_reading_pauses_the_voltage_rows():
    r = Rig()
    r.inp[IN_MV] = 260000
    r.run(1500)
    r.inp[IN_MV] = None                          # no valid burst: judged as nothing
    r.run(5000)
    assert r.active() == []
    r.inp[IN_MV] = 260000                        # the hold starts again
    assert _until(r, 4000, 3000) == 2000
    r.inp[IN_MV] = None                          # no reading: the row does not hold (the
    assert _cleared(r, 4000, 6000) == 5000       # meter row blocks meanwhile), v_clear_ms


def test_soft_over_current():
    r = Rig()
    r.charge()
    lim = current_da(53) * 100                   # 31.8 A offered by the PWM
    edge = lim * 110 // 100 + 500
    assert edge == 35480
    r.inp[IN_MA] = edge
    r.run(20000)
    assert r.active() == []                      # at the threshold, not above
    r.inp[IN_MA] = edge + 100
    assert _until(r, 4002, 6000) == 5000         # oc_soft_ms
    assert r.tripped == [4002] and r.opened()
    r.inp[IN_MA] = None                          # relay open: no current reading
    r.run(10000)
    assert r.active() == [4002]                  # needs the unplug
    assert r.prot.idle_duty() == 100
    r.inp[IN_ABSENT] = True
    assert _cleared(r, 4002, 100) == 0


def test_soft_over_current_interrupted_restarts_the_hold():
    r = Rig()
    r.charge()
    r.inp[IN_MA] = 40000 - 300                   # soft, below hard (125 % = 39.75 A)
    r.run(4000)
    r.inp[IN_MA] = 31000
    r.step()
    r.inp[IN_MA] = 39400
    assert _until(r, 4002, 6000) == 5000


def test_hard_over_current_at_once():
    r = Rig()
    r.charge()
    r.inp[IN_MA] = current_da(53) * 100 * 125 // 100      # at the hard limit: soft only
    r.run(4990)
    assert r.active() == []
    r = Rig()
    r.charge()
    r.inp[IN_MA] = current_da(53) * 100 * 125 // 100 + 100
    assert _until(r, 4002, 100) == 0
    assert r.active() == [4002] and r.tripped == [4002] and r.opened()
    r.run(6000)                                  # the soft row of the same code: no news
    assert r.tripped == [4002] and r.prot.codes() == [4002]


def test_lowered_limit_gives_the_vehicle_time():
    r = Rig()
    r.charge()
    r.inp[IN_OFFER] = current_da(26) * 100       # derated to 15.6 A; the car still draws 32
    r.inp[IN_MA] = 32000
    r.run(4000)
    assert r.active() == []                      # no hard trip during the grace
    r.inp[IN_MA] = 15500                         # the car followed in time
    r.run(10000)
    assert r.active() == []
    # a car that does not follow: soft trip after oc_soft_ms (19 A: above 15.6 A + 10 %
    # + 0.5 A, below the hard 125 %)
    r.inp[IN_MA] = 19000
    assert _until(r, 4002, 6000) == 5000
    # hard: 125 % of the lowered limit (19.5 A) once oc_soft_ms have passed since the
    # last step that offered the higher one
    r = Rig()
    r.charge()
    high = r.t                                   # the last step offering 31.8 A
    r.inp[IN_OFFER] = current_da(26) * 100
    r.inp[IN_MA] = 17000                         # following, but not all the way
    r.run(4000)
    r.inp[IN_MA] = 19600                         # above the soft limit from here
    r.run(1000)
    assert r.active() == [] and r.t == high + 5000
    assert _until(r, 4002, 100) == 0             # the hard row, 4 s before the soft one
    assert r.t == high + 5010 and r.tripped == [4002]


def test_no_current_rows_while_relay_open():
    r = Rig()
    r.charge()
    r.inp[IN_MA] = None                          # the relay opens: no current reading
    r.run(10000)
    assert r.active() == []
    r.inp[IN_MA] = 31800                         # closed again at 31.8 A for a step
    r.step()
    r.inp[IN_OFFER] = current_da(26) * 100       # open, and the offer lowered meanwhile
    r.inp[IN_MA] = None
    r.run(100)
    # no reading forgets the highest offer: a relay closed again at 15.6 A has its hard
    # limit (19.5 A) at once, with no grace
    r.inp[IN_MA] = 19600
    assert _until(r, 4002, 100) == 0


def test_temperature_derate_stop_resume():
    r = Rig()
    r.charge()
    r.inp[IN_TEMP] = 699                         # 0.1 degC
    r.run(5000)
    assert r.active() == [] and r.prot.derate_da() is None
    r.inp[IN_TEMP] = 700
    assert _until(r, 3020, 2000) == 1000         # t_hold_ms
    assert r.prot.codes(WARN) == [3020] and r.prot.codes() == []
    assert r.prot.derate_da() == 160 and r.board.relay_cmd and r.tripped == []
    assert r.prot.code() == 0 and r.prot.idle_duty() == 100
    r.inp[IN_TEMP] = 650                         # hysteresis: not below 65.0
    r.run(10000)
    assert r.active() == [3020]
    r.inp[IN_TEMP] = 649
    assert _cleared(r, 3020, 9000) == 5000       # t_clear_ms below t_derate_c - t_hyst_c
    r.inp[IN_TEMP] = 849
    r.run(5000)
    assert r.active() == [3020]
    r.inp[IN_TEMP] = 850
    assert _until(r, 3010, 2000) == 1000
    assert r.tripped == [3010] and r.opened() and r.prot.code() == 3010
    assert r.prot.idle_duty() == 0               # clears by itself: F meanwhile
    r.inp[IN_TEMP] = 610
    r.run(10000)
    assert r.active() == [3010]                  # stopped until below t_resume_c
    r.inp[IN_TEMP] = 600
    r.run(1000)
    assert r.active() == [3010]
    r.inp[IN_TEMP] = 599
    assert _cleared(r, 3010, 100) == 0


def test_temperature_spike_below_hold_ignored():
    r = Rig()
    r.inp[IN_TEMP] = 1200
    r.run(990)
    r.inp[IN_TEMP] = 250
    r.run(3000)
    r.inp[IN_TEMP] = None                        # no sensor reading: nothing to judge
    r.run(3000)
    assert r.active() == []


def test_welded_contactor():
    r = Rig()
    r.inp[IN_WELDED] = True
    assert _until(r, 3008, 1000) == 300          # weld_hold_ms
    assert r.prot.code() == 3008 and r.tripped == [3008]
    r.inp[IN_WELDED] = False
    assert _cleared(r, 3008, 2000) == 1000       # weld_clear_ms


def test_unlock_hold_and_lock_rows_share_a_code():
    r = Rig()
    r.inp[IN_UNLOCK] = True                      # unlock commanded, still locked
    assert _until(r, 3011, 6000) == 4500         # unlock_hold_ms
    assert r.tripped == [3011] and r.prot.idle_duty() == 100
    r.inp[IN_UNLOCK] = False
    r.run(5000)
    assert r.active() == [3011]                  # needs the unplug
    r.inp[IN_ABSENT] = True
    assert _cleared(r, 3011, 100) == 0
    # the other row of 3011: the lock lost while charging trips at once (a one-step
    # input); the code stays while either row holds
    r.inp[IN_ABSENT] = False
    r.charge()
    r.inp[IN_LOCK] = True
    r.step()
    r.inp[IN_LOCK] = False
    assert r.tripped == [3011, 3011] and r.opened()
    r.inp[IN_UNLOCK] = True                      # and then the unlock does not follow
    r.inp[IN_ABSENT] = True
    r.run(10000)
    assert r.active() == [3011] and r.tripped == [3011, 3011]
    r.inp[IN_UNLOCK] = False
    assert _cleared(r, 3011, 100) == 0


def test_cp_fault_hold_and_clear():
    r = Rig()
    r.inp[IN_CP] = True
    r.run(40)
    r.inp[IN_CP] = False                         # shorter than cp_hold_ms
    r.run(100)
    assert r.active() == []
    r.inp[IN_CP] = True
    assert _until(r, 3012, 1000) == 50           # cp_hold_ms
    assert r.tripped == [3012]
    assert r.prot.idle_duty() == 100             # +12 V: the CP must be read to clear
    r.inp[IN_CP] = False
    assert _cleared(r, 3012, 2000) == 1000       # cp_clear_ms


def test_diode_missing():
    r = Rig()
    r.charge()
    r.inp[IN_DIODE] = True
    assert _until(r, 3013, 100) == 0             # no hold (the pilot's reads are the gun's)
    assert r.tripped == [3013] and r.opened() and r.prot.idle_duty() == 100
    r.inp[IN_DIODE] = False
    r.run(5000)
    assert r.active() == [3013]
    r.inp[IN_ABSENT] = True
    assert _cleared(r, 3013, 100) == 0


def test_meter_failure_hold_and_clear():
    r = Rig()
    r.charge()
    r.inp[IN_METER] = True                       # the gun: no reading meanwhile
    r.inp[IN_MV] = r.inp[IN_MA] = None
    assert _until(r, 3006, 2000) == 1000         # meter_hold_ms
    assert r.active() == [3006] and r.tripped == [3006]
    r.run(5000)
    assert r.active() == [3006]
    r.inp[IN_METER] = False
    r.inp[IN_MV] = 230000
    assert _cleared(r, 3006, 5000) == 2000       # meter_clear_ms


def test_idle_duty_rules():
    r = Rig()
    assert r.prot.idle_duty() == 100             # nothing active
    r.inp[IN_TEMP] = 750
    r.run(1010)
    assert r.prot.codes(WARN) == [3020] and r.prot.idle_duty() == 100   # a warning
    r.inp[IN_MV] = 180000
    r.run(2010)
    assert r.prot.codes() == [4001] and r.prot.idle_duty() == 0    # auto: F
    r.inp[IN_LEAK] = True
    r.step()
    assert r.prot.idle_duty() == 100             # one waits for the unplug: +12 V
    r.inp[IN_ABSENT] = True
    r.step()
    assert r.prot.codes() == [4001, 4004] and r.prot.idle_duty() == 0
    r.inp[IN_CP] = True                          # the CP fault is read at +12 V
    r.run(100)
    assert r.prot.codes() == [4001, 4004, 3012] and r.prot.idle_duty() == 100


def test_reports_list_in_trip_order_and_flag_changes():
    r = Rig()
    r.charge()
    r.inp[IN_TEMP] = 750
    r.run(1100)
    r.prot.changed = False
    r.inp[IN_LEAK] = True
    r.step()
    r.inp[IN_ESTOP] = True
    r.step()
    assert r.prot.changed
    assert r.prot.codes() == [4004, 3003] and r.prot.codes(WARN) == [3020]
    assert r.prot.code() == 4004                 # the first fault
    assert r.tripped == [4004, 3003]             # each new fault is returned once
    r.prot.changed = False
    r.run(500)
    assert not r.prot.changed                    # nothing new: no report
    r.inp[IN_ESTOP] = False
    r.run(1000)
    assert not r.prot.changed
    r.step()                                     # 3003 clears: a change
    assert r.prot.changed and r.prot.codes() == [4004]


# === 2. the whole path: the real gun step ==================================================

def _p_until(p, pred, ms):
    """Step the pile 10 ms at a time until pred(); return the board ms from the first step
    after the caller's change to the step that saw it, None after ms."""
    first = p.t + 10
    while p.t - first < ms:
        p.step(10)
        if pred():
            return p.t - first
    return None


def _watch(p):
    """Each order the gun journals, as (trade, stop code, relay commanded, contacts) at
    that moment."""
    seen = []
    add = p.journal.add

    def spy(rec, *more):
        if rec[0] == journal.ORDER:
            seen.append((rec[1], rec[9], p.board.relay_cmd, p.board.contacts))
        return add(rec, *more)

    p.journal.add = spy
    return seen


_SID = [2000]


def _start(p, trade):
    """startChargeSrv through the app's downlink, each with its own session_id (the app
    answers a repeated one again without acting on it)."""
    _SID[0] += 1
    p.deliver("startChargeSrv", {"gun_no": 1, "pre_trade_no": trade, "charge_mode": 10},
              sid=_SID[0])


def _charging(p, trade="T1"):
    p.bench("plug")
    p.step(100)
    _start(p, trade)
    p.until(lambda: p.gun.state == CHARGING and p.board.contacts, 3000, "charging")
    p.step(100)
    assert p.gun.s.trade == trade and p.board.relay_cmd and p.prot.active == {}


def _distinct(xs):
    """The journal resends what the platform has not acknowledged: each value once."""
    out = []
    for x in xs:
        if x not in out:
            out.append(x)
    return out


def _ack_all(p):
    """The platform acknowledges every journal record sent so far (the journal keeps at
    most journal.WINDOW unacknowledged at once)."""
    for cmd, _, sid in p.sent:
        if cmd in ("startChaResEvt", "orderUpdateEvt"):
            p.ack(sid)


def _reasons(p):
    """(trade, reason) of each orderUpdateEvt sent."""
    return _distinct([(b["pre_trade_no"], b["reason"]) for _, b in p.events("orderUpdateEvt")])


def test_estop_alarm_opens_relay_before_any_step():
    p = Pile(relay_min_open_s=0)
    orders = _watch(p)
    _charging(p)
    p.bench("fault", name="estop", on=True)
    # the alarm callback alone: relay open, interlock blocked, the session not yet ended
    assert not p.board.relay_cmd and not p.board.contacts
    assert p.prot.code() == 3003 and p.prot.active == {}
    assert p.gun.s is not None and orders == [] and p.gun.work_status() == FAULTED
    p.step(10)
    assert p.prot.codes() == [3003] and p.gun.s is None
    assert orders == [("T1", 3003, False, False)]
    p.step(100)
    assert _reasons(p) == [("T1", 3003)]
    assert p.board.duty == 0                     # clears by itself: CP shows F
    p.step(3000)
    assert p.prot.codes() == [3003]              # held while pressed
    p.bench("fault", name="estop", on=False)
    assert _p_until(p, lambda: not p.prot.active, 3000) == 1000     # estop_clear_ms
    assert p.board.duty == 100 and p.board.violation_count == 0


def test_short_estop_pulse_still_trips():
    p = Pile(relay_min_open_s=0)
    orders = _watch(p)
    _charging(p)
    p.bench("fault", name="estop", on=True)
    p.bench("fault", name="estop", on=False)     # gone before the step
    assert not p.board.relay_cmd and p.prot.code() == 3003
    p.step(10)
    assert p.prot.codes() == [3003] and orders == [("T1", 3003, False, False)]
    assert _p_until(p, lambda: not p.prot.active, 2000) == 1000
    p.step(100)
    assert _reasons(p) == [("T1", 3003)]


def test_leakage_clears_only_after_unplug():
    p = Pile(relay_min_open_s=0)
    orders = _watch(p)
    _charging(p)
    p.bench("fault", name="leakage", on=True)
    assert not p.board.relay_cmd and p.prot.code() == 4004 and orders == []
    p.step(10)
    assert p.prot.codes() == [4004] and orders == [("T1", 4004, False, False)]
    assert p.board.duty == 100                   # +12 V so that the unplug can be seen
    p.bench("fault", name="leakage", on=False)
    p.step(10000)
    assert p.prot.codes() == [4004]              # gone, but still plugged
    assert p.gun.work_status() == FAULTED
    p.bench("unplug")
    assert _p_until(p, lambda: not p.prot.active, 100) == 10     # the pilot's two reads
    p.step(100)
    assert _reasons(p) == [("T1", 4004)] and p.gun.work_status() == 10


def test_leakage_selftest_failure_trips_at_the_next_step():
    p = Pile(relay_min_open_s=0)
    p.bench("plug")
    p.step(100)
    p.bench("fault", name="rcd_dead", on=True)
    _start(p, "T1")
    assert p.prot.active == {} and p.gun.s is None
    p.step(10)
    assert p.prot.codes() == [4006] and not p.board.relay_cmd
    p.step(100)
    assert [b for _, b in p.events("startChaResEvt")] == [
        {"gun_no": 1, "pre_trade_no": "T1", "start_result": 11, "fault_code": 4006}]
    p.bench("fault", name="rcd_dead", on=False)
    p.step(5000)
    assert p.prot.codes() == [4006]
    p.bench("unplug")
    assert _p_until(p, lambda: not p.prot.active, 100) == 10


def test_unplug_counts_only_while_the_cp_is_readable():
    p = Pile(relay_min_open_s=0)
    p.bench("mains", v=150)                      # unplugged; under-voltage: CP at -12 V
    assert _p_until(p, lambda: p.prot.active, 3000) is not None
    assert p.t == 50 + 2000                      # v_hold_ms from the first burst
    assert p.board.duty == 0 and p.gun.pilot.state == "A"
    p.bench("plug")                              # the pile cannot see this at -12 V
    p.step(100)
    p.bench("fault", name="leakage", on=True)
    p.step(10)
    assert p.prot.codes() == [4001, 4004]
    assert p.board.duty == 100                   # +12 V again to see the unplug
    p.bench("fault", name="leakage", on=False)
    p.step(10000)
    assert p.gun.pilot.state == "B" and 4004 in p.prot.active   # never seen absent
    p.bench("unplug")
    assert _p_until(p, lambda: 4004 not in p.prot.active, 100) == 10


def test_welded_contactor_after_the_session():
    p = Pile(relay_min_open_s=0)
    orders = _watch(p)
    _charging(p)
    p.bench("fault", name="welded", on=True)
    p.step(2000)
    assert p.prot.active == {} and p.gun.state == CHARGING   # closed as commanded
    p.bench("stop")                              # the session opens the relay at its end:
    p.until(lambda: not p.board.relay_cmd, 3000)  # once the vehicle has left C (PWM off)
    assert p.board.contacts
    assert orders == [("T1", 1001, False, True)]
    # weld_hold_ms from the step after the one that opened the relay (this one)
    assert _p_until(p, lambda: 3008 in p.prot.active, 1000) == 300 - 10
    assert p.prot.code() == 3008 and p.gun.work_status() == FAULTED
    assert p.board.lock_cmd                      # held locked while the contacts are live
    p.bench("fault", name="welded", on=False)
    assert not p.board.contacts
    assert _p_until(p, lambda: not p.prot.active, 2000) == 1000        # weld_clear_ms
    p.step(500)
    assert not p.board.lock_cmd and not p.board.lock_feedback()


def test_unlock_failure_with_retries():
    p = Pile(relay_min_open_s=0)
    _charging(p)
    drives = []
    real = p.board.lock_set
    p.board.lock_set = lambda x: (drives.append((p.t, x)), real(x))
    p.bench("fault", name="lock_stuck", on=True)
    p.bench("stop")                              # the session unlocks at its end (once
    p.until(lambda: drives, 3000)                # the vehicle has left C: PWM off first)
    assert len(drives) == 1 and drives[0][1] is False
    t0 = drives[0][0]                            # the step that drove the unlock
    # unlock_hold_ms from the first step that saw the unlock fail: here the measurement
    # round's step right after the one that drove it, in the same 10 ms
    assert _p_until(p, lambda: 3011 in p.prot.active, 6000) == 4500 - 10
    # the first try and three retries, one every gun.LOCK_MS, before the trip
    assert drives == [(t0 + k * LOCK_MS, False) for k in range(4)], (t0, drives)
    assert p.t == t0 + 4500
    assert p.board.duty == 100 and p.gun.work_status() == FAULTED
    p.bench("fault", name="lock_stuck", on=False)
    p.step(1000)
    assert not p.board.lock_feedback() and p.prot.codes() == [3011]
    p.bench("unplug")
    assert _p_until(p, lambda: not p.prot.active, 100) == 10


def test_normal_unlock_is_no_fault():
    p = Pile(relay_min_open_s=0)
    _charging(p)
    drives = []
    real = p.board.lock_set
    p.board.lock_set = lambda x: (drives.append(x), real(x))
    p.bench("stop")
    p.step(10000)
    assert p.prot.active == {} and not p.board.lock_feedback()
    assert drives == [False]                     # driven once, no retry


def test_cp_fault_and_no_false_trip_on_duty_change():
    p = Pile(relay_min_open_s=0)
    p.bench("plug")
    p.step(100)
    assert p.gun.pilot.state == "B"
    p.bench("temp", c=90)                        # a fault that shows F (-12 V) ...
    assert _p_until(p, lambda: 3010 in p.prot.active, 2000) == 1000
    assert p.board.duty == 0 and p.board.cp_level() == "F"
    seen = set()
    for _ in range(100):
        p.step(10)
        seen.update(p.prot.active)
    assert p.gun.pilot.state == "B"              # the pile reads nothing at its own -12 V
    p.bench("temp", c=25)                        # ... and back to +12 V
    for _ in range(100):
        p.step(10)
        seen.update(p.prot.active)
    assert 3010 in seen and 3012 not in seen and p.board.duty == 100
    assert p.prot.codes() == [] and p.gun.pilot.state == "B"
    p.step(5000)                                 # the derating warning clears too
    orders = _watch(p)
    _charging(p)
    p.bench("fault", name="cp_short", on=True)
    assert _p_until(p, lambda: 3012 in p.prot.active, 1000) == 60   # debounce, cp_hold_ms
    assert orders == [("T1", 3012, False, False)]
    assert p.board.duty == 100                   # +12 V: the CP must be read to clear
    p.step(2000)
    assert p.prot.codes() == [3012]              # still at 0 V
    p.bench("fault", name="cp_short", on=False)
    assert _p_until(p, lambda: not p.prot.active, 2000) == 1010     # debounce, cp_clear_ms
    p.step(100)
    assert _reasons(p) == [("T1", 3012)]


def test_diode_missing_through_the_pilot():
    p = Pile(relay_min_open_s=0)
    orders = _watch(p)
    _charging(p)
    p.bench("fault", name="diode", on=True)
    assert _p_until(p, lambda: 3013 in p.prot.active, 100) == 10   # the pilot's two reads
    assert orders == [("T1", 3013, False, False)] and p.board.duty == 100
    p.bench("fault", name="diode", on=False)
    p.step(5000)
    assert p.prot.codes() == [3013]
    p.bench("unplug")
    assert _p_until(p, lambda: not p.prot.active, 100) == 10


def test_meter_failure_with_real_metering():
    p = Pile(relay_min_open_s=0)
    orders = _watch(p)
    _charging(p)
    while p.t % 50:
        p.step(10)
    # a dead ADC reads 0 on both channels: measured against the offsets that would be
    # 409 V and 51 A, which must trip neither over-voltage nor over-current
    p.bench("fault", name="adc_dead", on=True)
    change = p.t
    assert _p_until(p, lambda: p.prot.active, 2000) is not None
    assert p.t == change + 50 + 1000             # meter_hold_ms from the first bad burst
    assert p.prot.codes() == [3006] and orders == [("T1", 3006, False, False)]
    p.step(3000)
    assert p.prot.codes() == [3006]
    p.bench("fault", name="adc_dead", on=False)
    change = p.t
    assert _p_until(p, lambda: not p.prot.active, 3000) is not None
    assert p.t == change + 50 + 2000             # meter_clear_ms from the first good one
    p.bench("mains", v=275)
    p.step(3000)
    assert p.prot.codes() == [4000]
    p.bench("mains", v=0)                        # mains gone: under-voltage, not the meter
    p.step(6000)
    assert p.prot.codes() == [4001], p.prot.codes()
    p.bench("mains", v=230)
    p.step(6000)
    assert p.prot.active == {}
    p.bench("mains", v=0, noise=0)               # a flat line: no AC at all, a meter fault
    p.step(1500)
    assert p.prot.codes() == [3006], p.prot.codes()
    p.step(100)
    assert _reasons(p) == [("T1", 3006)]


def test_tripped_session_ends_with_the_fault_code():
    p = Pile(relay_min_open_s=0)
    orders = _watch(p)
    # soft over-current: a car that draws 36 A of the 31.8 offered, for oc_soft_ms
    _charging(p, "T1")
    while p.t % 50:
        p.step(10)
    p.bench("car", demand_a=36, greedy=True)
    change = p.t
    assert _p_until(p, lambda: p.prot.active, 6000) is not None
    assert p.t == change + 50 + 5000, p.t - change
    assert p.prot.codes() == [4002] and p.gun.s is None
    # refused while active, with the fault's code
    _start(p, "T2")
    p.bench("unplug")
    p.step(100)
    assert p.prot.active == {}
    _ack_all(p)
    # hard over-current: at once, on the first burst that shows it
    p.bench("car", demand_a=32, greedy=False)
    _charging(p, "T3")
    while p.t % 50:
        p.step(10)
    p.bench("car", demand_a=45, greedy=True)
    change = p.t
    assert _p_until(p, lambda: p.prot.active, 100) is not None
    assert p.t == change + 50 and p.prot.codes() == [4002] and p.gun.s is None
    p.bench("unplug")
    p.step(100)
    _ack_all(p)
    # over-temperature during a charge
    p.bench("car", demand_a=32, greedy=False)
    _charging(p, "T4")
    p.bench("temp", c=86)
    assert _p_until(p, lambda: p.prot.active, 2000) == 1000
    assert p.prot.codes() == [3010] and p.gun.s is None
    p.step(200)
    # each session ended in the step that tripped, its relay open by then
    assert orders == [("T1", 4002, False, False), ("T3", 4002, False, False),
                      ("T4", 3010, False, False)]
    assert _reasons(p) == [("T1", 4002), ("T3", 4002), ("T4", 3010)]
    assert _distinct([(b["pre_trade_no"], b["start_result"], b["fault_code"])
                      for _, b in p.events("startChaResEvt")]) == \
        [("T1", 10, 0), ("T2", 11, 4002), ("T3", 10, 0), ("T4", 10, 0)]
    assert p.board.violation_count == 0
