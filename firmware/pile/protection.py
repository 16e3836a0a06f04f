"""Protection: the trip table, judged from the inputs the gun hands it every step.

RULES is the table (docs/faults.md lists it for people).  A row:

    (code, kind, input, test, limit, limit while active, hold, clear, clear after)

  code     the number reported in totalFaultEvt and used as the stop code (the names
           below: every code the firmware uses); rows may share a code (over-current and the
           lock have two): the code is active while either row holds
  kind     FAULT opens the relay and blocks charging; WARN is only reported
  input    the index of the value in the gun's input list (the IN_* names below)
  test     IS: the value is true; ABOVE / BELOW: the value is not None and above / below
           the limit
  limit    a key of the thresholds, and the key of the limit that holds while the code
           is active (a hysteresis), or 0
  hold     a key: how long (board ms) the test must hold before the row trips; 0: at once
  clear    AUTO: the code clears once its test has failed for `clear after` (a key, ms);
           UNPLUG: in addition the vehicle must have been absent (CP A) since the trip

The thresholds are DEFAULTS, overlaid by the board file's "protection" section and then
by the config's "protection" object, plus the limits derived from them and the board's
ratings (max_mv ..., in the units of the inputs).

judge() only judges: it never reaches into the gun.  The two safety paths that must not
wait stay here: a FAULT trip opens the relay (board.relay_set(False)) before judge()
returns, and the HAL's alarm (estop and leakage: an IRQ on the board) opens it and
latches the alarm, which blocks the interlock at once (code()) and becomes its row's trip
at the next judge().  The gun then ends the session with the fault's code.
"""
import time

from micropython import const

from pile import log

FAULT, WARN = "F", "W"
AUTO, UNPLUG = "auto", "unplug"
IS, ABOVE, BELOW = "is", "above", "below"
# the inputs, as the gun's list holds them (mV, mA, 0.1 degC; None: no valid reading)
IN_ESTOP = const(0)     # the emergency stop is pressed (board)
IN_LEAK = const(1)      # the residual-current detector trips (board)
IN_RCD = const(2)       # the leakage self-test before a start failed (this step)
IN_METER = const(3)     # the last ADC burst is impossible (pile.metering)
IN_MV = const(4)        # mains RMS voltage of a plausible burst
IN_MA = const(5)        # current of a plausible burst while the relay is closed
IN_OFFER = const(6)     # the current the PWM offers (mA)
IN_TEMP = const(7)      # gun temperature
IN_WELDED = const(8)    # relay commanded open, feedback closed
IN_LOCK = const(9)      # the lock did not engage, or let go while charging (this step)
IN_UNLOCK = const(10)   # unlock commanded, the lock still reports locked
IN_CP = const(11)       # CP at 0 V (E) or at -12 V the pile does not drive (F), settled
IN_DIODE = const(12)    # the vehicle's diode is missing
IN_ABSENT = const(13)   # the CP reads A (no vehicle) and is readable
IN_VENT = const(14)     # the vehicle asks for ventilation (D) on a pile without it
IN_SOFT = const(15)     # derived here: current above the soft and hard over-current
IN_HARD = const(16)     # limits (mA; negative below them)
INPUTS = const(17)

# every fault and warning code of the firmware (docs/faults.md)
ESTOP, METER, WELDED, HOT, LOCK, CP, DIODE, VENT, DERATED = 3003, 3006, 3008, 3010, \
    3011, 3012, 3013, 3014, 3020
OVER_V, UNDER_V, OVER_I, LEAK, RCD = 4000, 4001, 4002, 4004, 4006

# Judged in this order each step; the first FAULT that trips is the session's stop code.
RULES = (
    (ESTOP, FAULT, IN_ESTOP, IS, 0, 0, 0, AUTO, "estop_clear_ms"),
    (LEAK, FAULT, IN_LEAK, IS, 0, 0, 0, UNPLUG, 0),
    (RCD, FAULT, IN_RCD, IS, 0, 0, 0, UNPLUG, 0),
    (METER, FAULT, IN_METER, IS, 0, 0, "meter_hold_ms", AUTO, "meter_clear_ms"),
    (OVER_V, FAULT, IN_MV, ABOVE, "max_mv", "max_mv_back", "v_hold_ms", AUTO, "v_clear_ms"),
    (UNDER_V, FAULT, IN_MV, BELOW, "min_mv", "min_mv_back", "v_hold_ms", AUTO, "v_clear_ms"),
    (OVER_I, FAULT, IN_HARD, ABOVE, 0, 0, 0, UNPLUG, 0),
    (OVER_I, FAULT, IN_SOFT, ABOVE, 0, 0, "oc_soft_ms", UNPLUG, 0),
    (HOT, FAULT, IN_TEMP, ABOVE, "t_stop", "t_resume", "t_hold_ms", AUTO, 0),
    (DERATED, WARN, IN_TEMP, ABOVE, "t_derate", "t_derate_back", "t_hold_ms", AUTO,
     "t_clear_ms"),
    (WELDED, FAULT, IN_WELDED, IS, 0, 0, "weld_hold_ms", AUTO, "weld_clear_ms"),
    (LOCK, FAULT, IN_LOCK, IS, 0, 0, 0, UNPLUG, 0),
    (LOCK, FAULT, IN_UNLOCK, IS, 0, 0, "unlock_hold_ms", UNPLUG, 0),
    (CP, FAULT, IN_CP, IS, 0, 0, "cp_hold_ms", AUTO, "cp_clear_ms"),
    (DIODE, FAULT, IN_DIODE, IS, 0, 0, 0, UNPLUG, 0),
    (VENT, WARN, IN_VENT, IS, 0, 0, 0, AUTO, 0),
)
_CODE = const(0)        # the fields of a row
_KIND = const(1)
_IN = const(2)
_TEST = const(3)
_LIMIT = const(4)
_BACK = const(5)
_HOLD = const(6)
_CLEAR = const(7)
_AFTER = const(8)

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
    "unlock_hold_ms": 4500,     # an unlock driven again every 1.5 s fails after this long
    "cp_hold_ms": 50, "cp_clear_ms": 1000,
    "meter_hold_ms": 1000, "meter_clear_ms": 2000,
    "meter_dc_counts": 300,     # a burst's mean this far from the calibrated offset
}


def thresholds(board_cfg, cfg):
    """DEFAULTS overlaid by the board's and the config's "protection", plus the limits
    derived from them in the inputs' units (the voltages from the board's ratings, 0.1 V)."""
    p = dict(DEFAULTS)
    p.update(board_cfg.get("protection", {}))
    if cfg and type(cfg.get("protection")) is dict:
        p.update(cfg["protection"])
    r = board_cfg["ratings"]
    p["max_mv"] = (r["ot_max_vol"] + p["v_margin_dv"]) * 100
    p["min_mv"] = (r["ot_min_vol"] - p["v_margin_dv"]) * 100
    p["max_mv_back"] = p["max_mv"] - p["v_hyst_dv"] * 100
    p["min_mv_back"] = p["min_mv"] + p["v_hyst_dv"] * 100
    # over-temperature trips at t_stop_c: "above" the value 0.1 degC below it
    p["t_stop"], p["t_resume"] = p["t_stop_c"] * 10 - 1, p["t_resume_c"] * 10 - 1
    p["t_derate"] = p["t_derate_c"] * 10 - 1
    p["t_derate_back"] = (p["t_derate_c"] - p["t_hyst_c"]) * 10 - 1
    return p


def kind(code):
    for row in RULES:
        if row[_CODE] == code:
            return row[_KIND]
    return None


class Protection:
    def __init__(self, board, p):
        self.board, self.p = board, p
        self.active = {}        # code -> trip number (reports list codes in trip order)
        self.trips = 0
        self.since = [None] * len(RULES)    # ticks since a row's test first held
        self.gone = {}          # code -> ticks since its tests all failed
        self.unplug_seen = {}   # code -> True once the vehicle was absent after the trip
        self.live = {}          # code -> whether any of its rows' tests holds, this step
        self.changed = False    # the active set changed (the reports say so)
        self.irq = 0            # alarm latched by the IRQ callback, not yet tripped
        self.oc_ref = self.oc_t = 0     # highest offer (mA) in the last oc_soft_ms, when
        board.on_alarm(self._alarm)

    # --- what the rest of the firmware asks -----------------------------------------------
    def code(self):
        """The first active fault that blocks charging (a latched alarm first), or 0."""
        return self.irq or (self.codes() or [0])[0]

    def codes(self, k=FAULT):
        """Active codes of kind k (FAULT, or WARN: the warnings) in trip order."""
        out = [c for c in self.active if kind(c) == k]
        out.sort(key=self.active.get)
        return out

    def derate_da(self):
        return self.p["derate_da"] if DERATED in self.active else None

    def idle_duty(self):
        """CP duty while no session runs: 100 (+12 V), or 0 (state F, unavailable) while a
        fault blocks -- except while a fault can only clear by what the CP shows: one that
        waits for the unplug, and the CP fault itself.  Those keep +12 V so the CP can be
        read (the vehicle sees B without PWM: no charging either way); at -12 V the pile
        drives the line itself and reads nothing of the vehicle."""
        if not self.code():
            return 100
        for row in RULES:
            c = row[_CODE]
            if c in self.active and (c == CP or row[_CLEAR] == UNPLUG and
                                     c not in self.unplug_seen):
                return 100
        return 0

    # --- tripping -------------------------------------------------------------------------
    def _alarm(self, name):
        """The HAL's alarm (an IRQ on the board): open the relay, latch, nothing else."""
        self.board.relay_set(False)
        self.irq = ESTOP if name == "estop" else LEAK

    def _trip(self, row):
        code = row[_CODE]
        if row[_KIND] == FAULT:
            self.board.relay_set(False)         # first: nothing else is waited for
        if code in self.active:
            return 0
        self.trips += 1
        self.active[code] = self.trips
        self.changed = True
        log.warn("prot", "%s %d" % ("FAULT" if row[_KIND] == FAULT else "warning", code))
        return code if row[_KIND] == FAULT else 0

    def judge(self, inp, now):
        """Judge the inputs (a list of INPUTS values, see IN_*) at board ticks `now`:
        trip what holds long enough, clear what has gone long enough.  Return the first
        FAULT code that tripped in this call (the relay is open by then), else 0."""
        p, live, active = self.p, self.live, self.active
        irq = self.irq
        if irq == ESTOP:
            inp[IN_ESTOP] = True
        elif irq == LEAK:
            inp[IN_LEAK] = True
        self._over_current(inp, now)
        if inp[IN_ABSENT]:
            for c in active:
                self.unplug_seen[c] = True
        for c in active:
            live[c] = False
        tripped = 0
        for k in range(len(RULES)):
            row = RULES[k]
            code, x, test = row[_CODE], inp[row[_IN]], row[_TEST]
            if test == IS:
                held = bool(x)
            elif x is None:
                held = False
            else:
                lim = p.get(row[_BACK] if code in active else row[_LIMIT], 0)
                held = x > lim if test == ABOVE else x < lim
            if held:
                live[code] = True
            if not held or code in active:
                self.since[k] = None
            elif self.since[k] is None and p.get(row[_HOLD], 0) > 0:
                self.since[k] = now
            elif self.since[k] is None or \
                    time.ticks_diff(now, self.since[k]) >= p[row[_HOLD]]:
                self.since[k] = None
                code = self._trip(row)
                tripped = tripped or code
        if self.irq == irq:
            self.irq = 0        # the latched alarm has become its row's trip by now
        self._clear(now)
        return tripped

    def _over_current(self, inp, now):
        """The over-current inputs: the current above the soft limit (the offer now +
        oc_soft_pct + oc_soft_add_da) and above the hard one (oc_hard_pct of the highest
        offer of the last oc_soft_ms: the vehicle's time to follow a lowered PWM)."""
        p, ma, lim = self.p, inp[IN_MA], inp[IN_OFFER]
        if ma is None:
            self.oc_ref = 0
            inp[IN_SOFT] = inp[IN_HARD] = None
            return
        if lim >= self.oc_ref or time.ticks_diff(now, self.oc_t) > p["oc_soft_ms"]:
            self.oc_ref, self.oc_t = lim, now
        inp[IN_SOFT] = ma - lim * (100 + p["oc_soft_pct"]) // 100 - p["oc_soft_add_da"] * 100
        inp[IN_HARD] = ma - self.oc_ref * p["oc_hard_pct"] // 100

    def _clear(self, now):
        for row in RULES:
            code = row[_CODE]
            if code not in self.active or self.live.get(code):
                self.gone.pop(code, None)
                continue
            gone = self.gone.setdefault(code, now)
            if (row[_CLEAR] == AUTO or code in self.unplug_seen) and \
                    time.ticks_diff(now, gone) >= self.p.get(row[_AFTER], 0):
                del self.active[code]
                self.gone.pop(code, None)
                self.unplug_seen.pop(code, None)
                self.changed = True
                log.info("prot", "cleared %d" % code)
