"""Protection: one trip table, evaluated on every control tick, that opens the relay itself.

Each row of RULES is one condition: its code (PROTOCOL.md §4 ranges; the table in
docs/faults.md), whether it is a fault (opens the relay, blocks charging) or a warning,
how long the condition must hold before it trips, and how it clears: AUTO once the
condition has been gone for the row's clear time, UNPLUG once it is gone and the vehicle
is unplugged.  A trip calls board.relay_set(False) at once — before the session, the
network or any other task hears of it — then tells the charger, which ends the session
with the fault's code.  Emergency stop and leakage also reach trip() straight from the
HAL's alarm callback (an IRQ on the board), without waiting for a tick.
Thresholds come from the board file's "protection" section.
"""
import time

from pile import log

FAULT, WARN = "F", "W"
AUTO, UNPLUG = "auto", "unplug"

# code: (name, kind, test, hold key, clear, clear ms)
RULES = {
    3003: ("emergency stop", FAULT, "estop", None, AUTO, 1000),
    4004: ("leakage current", FAULT, "leak", None, UNPLUG, 0),
    4006: ("leakage detector self-test failed", FAULT, None, None, UNPLUG, 0),
    4000: ("over-voltage", FAULT, "over_v", "v_hold_ms", AUTO, 5000),
    4001: ("under-voltage", FAULT, "under_v", "v_hold_ms", AUTO, 5000),
    4002: ("over-current", FAULT, "over_i", None, UNPLUG, 0),
    3010: ("connector over-temperature", FAULT, "hot", "t_hold_ms", AUTO, 0),
    3020: ("connector temperature derating", WARN, "warm", "t_hold_ms", AUTO, 5000),
    3008: ("contactor welded", FAULT, "welded", "weld_hold_ms", AUTO, 1000),
    3011: ("connector lock failure", FAULT, None, None, UNPLUG, 0),
    3012: ("control pilot fault", FAULT, "cp_fault", "cp_hold_ms", AUTO, 1000),
    3013: ("vehicle diode missing", FAULT, "diode", None, UNPLUG, 0),
    3006: ("meter failure", FAULT, "meter_dead", "meter_hold_ms", AUTO, 2000),
}
DEFAULTS = {
    "v_margin_dv": 0, "v_hold_ms": 2000, "oc_soft_pct": 10, "oc_soft_add_da": 5,
    "oc_soft_ms": 5000, "oc_hard_pct": 150, "t_derate_c": 70, "t_stop_c": 85,
    "t_resume_c": 60, "derate_da": 160, "t_hold_ms": 1000, "weld_hold_ms": 300,
    "cp_hold_ms": 50, "meter_hold_ms": 1000, "meter_min_mv": 50000,
}


class Protection:
    def __init__(self, board, board_cfg):
        self.board = board
        p = dict(DEFAULTS)
        p.update(board_cfg.get("protection", {}))
        rate = board_cfg["ratings"]
        self.p = p
        self.max_mv = (rate["ot_max_vol"] + p["v_margin_dv"]) * 100
        self.min_mv = (rate["ot_min_vol"] - p["v_margin_dv"]) * 100
        self.active = {}        # code -> ticks when it tripped
        self.pending = {}       # code -> ticks when its condition first held
        self.gone = {}          # code -> ticks when its condition first went away
        self.changed = False
        self.charger = None     # set by the app: .relay, .on_fault(code), .pilot, .limit_da()
        self.metering = None
        self.hot = False
        self.oc_since = None
        board.on_alarm(self._alarm)

    # --- what the rest of the firmware asks -----------------------------------------------
    def code(self):
        """The first active fault that blocks charging, or 0."""
        for code in self.active:
            if RULES[code][1] == FAULT:
                return code
        return 0

    def faults(self):
        return [c for c in self.active if RULES[c][1] == FAULT]

    def warnings(self):
        return [c for c in self.active if RULES[c][1] == WARN]

    def derate_da(self):
        return self.p["derate_da"] if 3020 in self.active else None

    # --- tripping -------------------------------------------------------------------------
    def _alarm(self, name):
        """From the HAL's alarm (IRQ): open the relay first, book-keep after."""
        self.board.relay_set(False)
        if self.charger:
            self.charger.relay = False
        self.trip(3003 if name == "estop" else 4004)

    def trip(self, code):
        if RULES[code][1] == FAULT:
            self.board.relay_set(False)
            if self.charger:
                self.charger.relay = False
        if code in self.active:
            return
        self.active[code] = self.board.ticks_ms()
        self.gone.pop(code, None)
        self.changed = True
        log.warn("prot", "%s %d: %s" % ("FAULT" if RULES[code][1] == FAULT else "warning",
                                        code, RULES[code][0]))
        if RULES[code][1] == FAULT and self.charger:
            self.charger.on_fault(code)

    def _clear(self, code):
        del self.active[code]
        self.changed = True
        log.info("prot", "cleared %d: %s" % (code, RULES[code][0]))

    # --- the table, evaluated every tick --------------------------------------------------
    def check(self):
        now = self.board.ticks_ms()
        for code, (name, kind, test, hold, clear, clear_ms) in RULES.items():
            cond = getattr(self, "_" + test)() if test else code in self.active
            if cond:
                self.gone.pop(code, None)
                if code not in self.active:
                    first = self.pending.setdefault(code, now)
                    if time.ticks_diff(now, first) >= (self.p[hold] if hold else 0):
                        self.pending.pop(code, None)
                        self.trip(code)
                continue
            self.pending.pop(code, None)
            if code in self.active:
                self._maybe_clear(code, clear, clear_ms, now)

    def _maybe_clear(self, code, clear, clear_ms, now):
        gone = self.gone.setdefault(code, now)
        if clear == UNPLUG and self.charger.pilot.state != "A":
            return
        if time.ticks_diff(now, gone) >= clear_ms:
            self.gone.pop(code, None)
            self._clear(code)

    def unplugged(self):
        """Faults that clear on unplug and have no live condition (lock, self-test)."""
        for code in list(self.active):
            if RULES[code][4] == UNPLUG and not RULES[code][2]:
                self._clear(code)

    # --- the conditions -------------------------------------------------------------------
    def _estop(self):
        return self.board.estop()

    def _leak(self):
        return self.board.leakage()

    def _mains_mv(self):
        m = self.metering
        return m.mv if m and m.last is not None else None

    def _over_v(self):
        mv = self._mains_mv()
        return mv is not None and mv > self.max_mv

    def _under_v(self):
        mv = self._mains_mv()
        return mv is not None and self.p["meter_min_mv"] <= mv < self.min_mv

    def _meter_dead(self):
        mv = self._mains_mv()
        return mv is not None and mv < self.p["meter_min_mv"]

    def _over_i(self):
        if not self.metering or not self.charger or not self.charger.relay:
            self.oc_since = None
            return False
        ma, limit_ma = self.metering.ma, self.charger.limit_da() * 100
        if ma > limit_ma * self.p["oc_hard_pct"] // 100:
            return True
        if ma > limit_ma * (100 + self.p["oc_soft_pct"]) // 100 + self.p["oc_soft_add_da"] * 100:
            now = self.board.ticks_ms()
            if self.oc_since is None:
                self.oc_since = now
            return time.ticks_diff(now, self.oc_since) >= self.p["oc_soft_ms"]
        self.oc_since = None
        return False

    def _temp(self):
        t = self.board.gun_temp_c()
        return -1000 if t is None else t

    def _hot(self):
        t = self._temp()
        if t >= self.p["t_stop_c"]:
            self.hot = True
        elif t < self.p["t_resume_c"]:
            self.hot = False
        return self.hot

    def _warm(self):
        return self._temp() >= self.p["t_derate_c"]

    def _welded(self):
        return bool(self.charger) and not self.charger.relay and self.board.relay_feedback()

    def _cp_fault(self):
        c = self.charger
        if not c:
            return False
        return c.pilot.state == "E" or (c.pilot.state == "F" and c.duty != 0)

    def _diode(self):
        return bool(self.charger) and not self.charger.pilot.diode_ok
