"""Protection: one trip table, evaluated on every control tick, that opens the relay itself.

RULES is the table (docs/faults.md lists it for people).  A row:

    (code, condition, kind, hold, clear, clear_after)

  code         the number reported in totalFaultEvt and used as the stop code
               (PROTOCOL.md section 4 ranges); two rows may share a code (over-current
               has a slow and a fast row): the code is active while either tripped
  condition    the name of the condition (see check) that says whether it holds now,
               also the name the log gives the trip; leakage_selftest_failed never holds
               here: the session's leakage self-test calls trip(), as does its lock check
               for lock_failure
  kind         FAULT opens the relay and blocks charging; WARN is only reported
  hold         how long the condition must hold before the row trips: a key of the
               thresholds (ms of board time) or 0 (at once)
  clear        AUTO: the code clears once its condition has been gone for clear_after;
               UNPLUG: in addition the vehicle must have been unplugged (CP state A)
               since the trip
  clear_after  a key of the thresholds (ms) or 0

The thresholds are DEFAULTS, overlaid by the board file's "protection" section and then
by the config's "protection" object.  Voltages come from the board's ratings
(ot_max_vol / ot_min_vol, 0.1 V) widened by v_margin_dv.

A FAULT trip calls board.relay_set(False) first -- before the session, the network or
any other task hears of it -- then tells the charger (on_fault), which ends the session
with the fault's code as its stop reason and writes its order.  Emergency stop and
leakage also arrive from the HAL's alarm callback (an IRQ on the board): it opens the
relay and latches a flag, nothing else (no allocation, no files); the latched alarm
blocks the interlock at once (code()) and the next tick trips the row.
"""
import time
from micropython import const

from pile import log
from pile.pilot import current_da

FAULT, WARN = "F", "W"
AUTO, UNPLUG = "auto", "unplug"
_ESTOP = const(3003)
_LEAKAGE = const(4004)
_LOCK = const(3011)
_CP_FAULT = const(3012)
_CP_SETTLE = const(3)   # control ticks after a CP duty change before a CP fault counts

# Evaluated in this order each tick: the meter row judges the ADC burst that the voltage
# and current rows after it read.  The condition's name is also what the log says.
RULES = (
    (3003, "emergency_stop", FAULT, 0, AUTO, "estop_clear_ms"),
    (4004, "leakage", FAULT, 0, UNPLUG, 0),
    (4006, "leakage_selftest_failed", FAULT, 0, UNPLUG, 0),   # tripped by the session
    (3006, "meter_failure", FAULT, "meter_hold_ms", AUTO, "meter_clear_ms"),
    (4000, "over_voltage", FAULT, "v_hold_ms", AUTO, "v_clear_ms"),
    (4001, "under_voltage", FAULT, "v_hold_ms", AUTO, "v_clear_ms"),
    (4002, "over_current_hard", FAULT, 0, UNPLUG, 0),
    (4002, "over_current", FAULT, "oc_soft_ms", UNPLUG, 0),
    (3010, "over_temperature", FAULT, "t_hold_ms", AUTO, 0),
    (3020, "hot_current_derated", WARN, "t_hold_ms", AUTO, "t_clear_ms"),
    (3008, "contactor_welded", FAULT, "weld_hold_ms", AUTO, "weld_clear_ms"),
    (3011, "lock_failure", FAULT, "unlock_hold_ms", UNPLUG, 0),
    (3012, "cp_fault", FAULT, "cp_hold_ms", AUTO, "cp_clear_ms"),
    (3013, "diode_missing", FAULT, 0, UNPLUG, 0),
)
DEFAULTS = {
    "estop_clear_ms": 1000,     # emergency stop released this long: cleared
    "v_margin_dv": 0,           # 0.1 V added to ot_max_vol, taken from ot_min_vol
    "v_hyst_dv": 20,            # back inside the limits by 2 V before the clear time runs
    "v_hold_ms": 2000, "v_clear_ms": 5000,
    "oc_soft_pct": 10,          # soft: above the PWM limit + 10 % + 0.5 A ...
    "oc_soft_add_da": 5,
    "oc_soft_ms": 5000,         # ... for 5 s (also the vehicle's time to follow a lower PWM)
    "oc_hard_pct": 125,         # hard: above 125 % of the highest limit of the last oc_soft_ms
    "t_derate_c": 70,           # warning 3020, current limited to derate_da
    "derate_da": 160,
    "t_hyst_c": 5,              # derating ends below t_derate_c - t_hyst_c
    "t_stop_c": 85,             # fault 3010 ...
    "t_resume_c": 60,           # ... until below this
    "t_hold_ms": 1000, "t_clear_ms": 5000,
    "weld_hold_ms": 300, "weld_clear_ms": 1000,
    "unlock_retry_ms": 1500,    # the unlock is driven again this often ...
    "unlock_hold_ms": 4500,     # ... and fails after this long (three tries)
    "cp_hold_ms": 50, "cp_clear_ms": 1000,
    "meter_hold_ms": 1000, "meter_clear_ms": 2000,
    "meter_dc_counts": 300,     # a burst's mean this far from the calibrated offset
}


def _row(code):
    """The (first) row of `code`: rows sharing a code agree on all but the condition."""
    for row in RULES:
        if row[0] == code:
            return row
    raise ValueError("no trip rule %r" % code)


class Protection:
    def __init__(self, board, board_cfg, cfg=None):
        self.board = board
        p = dict(DEFAULTS)
        p.update(board_cfg.get("protection", {}))
        if cfg and isinstance(cfg.get("protection"), dict):
            p.update(cfg["protection"])
        self.p = p
        rate = board_cfg["ratings"]
        cal = board_cfg.get("cal", {})
        self.voff, self.ioff = cal.get("v_offset", 2048), cal.get("i_offset", 2048)
        self.max_mv = (rate["ot_max_vol"] + p["v_margin_dv"]) * 100
        self.min_mv = (rate["ot_min_vol"] - p["v_margin_dv"]) * 100
        self.active = {}        # code -> trip number (reports list codes in trip order)
        self.trips = 0
        self.pending = {}       # row index -> ticks when its condition first held
        self.gone = {}          # code -> ticks when its condition first went away
        self.unplug_seen = {}   # code -> True once the vehicle was unplugged after the trip
        self.live = {}          # code -> condition of any of its rows, this tick
        self.changed = False
        self.charger = None     # set by the app: .relay .lock .duty .pilot .limit_da() .on_fault()
        self.metering = None    # set by the app: .mv .ma .last and the last burst .bv .bi
        self.irq = 0            # alarm latched by the IRQ callback, not yet tripped
        self.meter_bad = False  # the last burst is impossible (voltage/current rows pause)
        self.burst_t = None     # .last of the burst judged last
        self.oc_ref = 0         # highest current limit (mA) offered in the last oc_soft_ms
        self.oc_ref_t = 0
        self.unlock_t = None    # when the unlock was last driven while still locked
        self.cp_duty = None     # the CP duty of the last tick, and ticks since it changed:
        self.cp_settle = 0      # the pilot reads the new level only after its debounce
        board.on_alarm(self._alarm)

    # --- what the rest of the firmware asks -----------------------------------------------
    def code(self):
        """The first active fault that blocks charging (a latched alarm first), or 0."""
        return self.irq or (self.faults() or [0])[0]

    def faults(self, kind=FAULT):
        """Active codes of `kind` (faults; warnings()) in trip order."""
        codes = [c for c in self.active if _row(c)[2] == kind]
        codes.sort(key=self.active.get)
        return codes

    def warnings(self):
        return self.faults(WARN)

    def derate_da(self):
        return self.p["derate_da"] if 3020 in self.active else None

    def idle_duty(self):
        """CP duty while no session runs: 100 (+12 V), or 0 (state F, unavailable) while a
        fault blocks -- except while a fault can only clear by what the CP shows: one that
        waits for the unplug, and the CP fault itself.  Those keep +12 V so the CP can be
        read (the vehicle sees B without PWM: no charging either way); at -12 V the pile
        drives the line itself and reads nothing of the vehicle."""
        if not self.code():
            return 100
        for code in self.active:
            if code == _CP_FAULT or _row(code)[4] == UNPLUG and \
                    code not in self.unplug_seen:
                return 100
        return 0

    def unplugged(self):
        """The vehicle was unplugged (CP state A): faults that clear on unplug may go."""
        for code in self.active:
            if _row(code)[4] == UNPLUG:
                self.unplug_seen[code] = True

    # --- tripping -------------------------------------------------------------------------
    def _alarm(self, name):
        """The HAL's alarm (an IRQ on the board): open the relay, latch, nothing else."""
        self.board.relay_set(False)
        if self.charger:
            self.charger.relay = False
        self.irq = _ESTOP if name == "estop" else _LEAKAGE

    def trip(self, code):
        """Trip `code` now (the table does it; the session for lock and self-test)."""
        row = _row(code)
        fault = row[2] == FAULT
        if fault:
            self.board.relay_set(False)
            if self.charger:
                self.charger.relay = False
        if code in self.active:
            return
        self.trips += 1
        self.active[code] = self.trips
        self.changed = True
        log.warn("prot", "%s %d: %s" % ("FAULT" if fault else "warning", code, row[1]))
        if fault and self.charger:
            self.charger.on_fault(code)

    # --- the table, evaluated every tick --------------------------------------------------
    # The conditions are written inline, one branch per RULES row: a method costs about
    # 150 bytes of heap, and this runs 14 rows every 10 ms.
    def check(self):
        b, c, m = self.board, self.charger, self.metering
        p, live, active = self.p, self.live, self.active
        now = b.ticks_ms()
        irq = self.irq
        if c:
            if c.duty != self.cp_duty:
                self.cp_duty, self.cp_settle = c.duty, 0
            elif self.cp_settle < _CP_SETTLE:
                self.cp_settle += 1
        reading = m is not None and m.last is not None      # a burst to judge
        for row in RULES:
            live[row[0]] = False
        for k in range(len(RULES)):
            code, test, _, hold, _, _ = RULES[k]
            if test == "emergency_stop":
                held = irq == _ESTOP or b.estop()
            elif test == "leakage":
                held = irq == _LEAKAGE or b.leakage()
            elif test == "leakage_selftest_failed":
                held = False                    # the session's self-test calls trip()
            elif test == "meter_failure":
                # each new ADC burst is judged once: all voltage samples equal (no AC at
                # all), or a mean far from the calibrated offset (dead, stuck or railed
                # ADC); while it is impossible the voltage and current rows ignore it
                if reading and m.last != self.burst_t:
                    self.burst_t = m.last
                    v, i = getattr(m, "bv", None), getattr(m, "bi", None)
                    dc = p["meter_dc_counts"]
                    self.meter_bad = bool(v and i and (
                        max(v) == min(v) or abs(sum(v) // len(v) - self.voff) > dc or
                        abs(sum(i) // len(i) - self.ioff) > dc))
                held = self.meter_bad
            elif test == "over_voltage":        # mains RMS, with a hysteresis
                held = reading and not self.meter_bad and \
                    m.mv > self.max_mv - (p["v_hyst_dv"] * 100 if 4000 in active else 0)
            elif test == "under_voltage":
                held = reading and not self.meter_bad and \
                    m.mv < self.min_mv + (p["v_hyst_dv"] * 100 if 4001 in active else 0)
            elif test == "over_current_hard" or test == "over_current":
                # relay closed: soft, above the limit the PWM offers now + oc_soft_pct +
                # oc_soft_add_da (the row holds it oc_soft_ms); hard, above oc_hard_pct of
                # the highest limit offered during the last oc_soft_ms (the vehicle's time
                # to follow a lowered PWM)
                hard = test == "over_current_hard"
                held = False
                if not (c and c.relay and reading) or self.meter_bad:
                    if hard:
                        self.oc_ref = 0
                else:
                    da = current_da(c.duty) if 0 < c.duty < 100 else None
                    lim = (c.limit_da() if da is None else da) * 100
                    if not hard:
                        held = m.ma > lim * (100 + p["oc_soft_pct"]) // 100 + \
                            p["oc_soft_add_da"] * 100
                    else:
                        if lim >= self.oc_ref or \
                                time.ticks_diff(now, self.oc_ref_t) > p["oc_soft_ms"]:
                            self.oc_ref, self.oc_ref_t = lim, now
                        held = m.ma > self.oc_ref * p["oc_hard_pct"] // 100
            elif test == "over_temperature" or test == "hot_current_derated":
                t = b.gun_temp_c()              # the gun's; with hysteresis
                if t is None:
                    held = False
                elif test == "over_temperature":
                    held = t >= p["t_resume_c" if 3010 in active else "t_stop_c"]
                else:
                    held = t >= p["t_derate_c"] - (p["t_hyst_c"] if 3020 in active else 0)
            elif c is None:
                held = False
            elif test == "contactor_welded":    # commanded open, contacts still closed
                held = not c.relay and b.relay_feedback()
            elif test == "lock_failure":
                # unlock commanded but the lock still reports locked: driven again every
                # unlock_retry_ms; the row trips after unlock_hold_ms
                held = bool(not c.lock and b.lock_feedback())
                if not held:
                    self.unlock_t = None
                elif self.unlock_t is None:
                    self.unlock_t = now
                elif time.ticks_diff(now, self.unlock_t) >= p["unlock_retry_ms"]:
                    self.unlock_t = now
                    if _LOCK not in active:
                        log.warn("prot", "lock still locked; unlock again")
                    b.lock_set(False)
            elif test == "cp_fault":
                # CP at 0 V (E), or at -12 V while the pile does not drive -12 V (F), once
                # the pilot has settled after the last duty change
                held = self.cp_settle >= _CP_SETTLE and (
                    c.pilot.state == "E" or c.pilot.state == "F" and c.duty != 0)
            elif test == "diode_missing":
                held = not c.pilot.diode_ok
            else:
                raise ValueError("no condition " + test)
            # --- hold, then trip
            if held:
                live[code] = True
            if not held or code in active:
                self.pending.pop(k, None)
            elif time.ticks_diff(now, self.pending.setdefault(k, now)) >= p.get(hold, 0):
                self.pending.pop(k, None)
                self.trip(code)
        if self.irq == irq:
            self.irq = 0        # the latched alarm has become a row's trip by now
        if c and c.duty and c.pilot.state == "A":
            self.unplugged()            # (at duty 0 the pilot shows an old state)
        for code in live:               # (not over active: clearing changes it)
            if code not in active:
                continue
            if live[code]:
                self.gone.pop(code, None)
                continue
            gone = self.gone.setdefault(code, now)
            row = _row(code)
            if (row[4] == AUTO or code in self.unplug_seen) and \
                    time.ticks_diff(now, gone) >= p.get(row[5], 0):
                del active[code]
                self.gone.pop(code, None)
                self.unplug_seen.pop(code, None)
                self.changed = True
                log.info("prot", "cleared %d: %s" % (code, row[1]))
