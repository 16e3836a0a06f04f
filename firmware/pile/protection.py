"""Protection: one trip table, evaluated on every control tick, that opens the relay itself.

RULES is the table (docs/faults.md lists it for people).  A row:

    (code, name, kind, condition, hold, clear, clear_after)

  code         the number reported in totalFaultEvt and used as the stop code
               (PROTOCOL.md section 4 ranges); two rows may share a code (over-current
               has a slow and a fast row): the code is active while either tripped
  kind         FAULT opens the relay and blocks charging; WARN is only reported
  condition    the name of the condition (see _holds) that says whether it holds now;
               None for a row that only another module trips (the session's lock and
               leakage self-test checks call trip())
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

from pile import log
from pile.pilot import current_da

FAULT, WARN = "F", "W"
AUTO, UNPLUG = "auto", "unplug"
ESTOP, LEAKAGE, LOCK, CP_FAULT = 3003, 4004, 3011, 3012
CP_SETTLE = 3           # control ticks after a CP duty change before a CP fault counts

# Evaluated in this order each tick: the meter row judges the ADC burst that the voltage
# and current rows after it read.
RULES = (
    (3003, "emergency stop", FAULT, "estop", 0, AUTO, "estop_clear_ms"),
    (4004, "leakage current", FAULT, "leak", 0, UNPLUG, 0),
    (4006, "leakage detector self-test failed", FAULT, None, 0, UNPLUG, 0),
    (3006, "meter failure: ADC readings impossible", FAULT, "meter_dead", "meter_hold_ms",
     AUTO, "meter_clear_ms"),
    (4000, "over-voltage", FAULT, "over_v", "v_hold_ms", AUTO, "v_clear_ms"),
    (4001, "under-voltage", FAULT, "under_v", "v_hold_ms", AUTO, "v_clear_ms"),
    (4002, "over-current far above the limit", FAULT, "oc_hard", 0, UNPLUG, 0),
    (4002, "over-current", FAULT, "oc_soft", "oc_soft_ms", UNPLUG, 0),
    (3010, "connector over-temperature", FAULT, "hot", "t_hold_ms", AUTO, 0),
    (3020, "connector hot: current derated", WARN, "warm", "t_hold_ms", AUTO, "t_clear_ms"),
    (3008, "contactor welded", FAULT, "welded", "weld_hold_ms", AUTO, "weld_clear_ms"),
    (3011, "connector lock failure", FAULT, "unlock", "unlock_hold_ms", UNPLUG, 0),
    (3012, "control pilot fault", FAULT, "cp_fault", "cp_hold_ms", AUTO, "cp_clear_ms"),
    (3013, "vehicle diode missing", FAULT, "diode", 0, UNPLUG, 0),
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


def _ms(p, key):
    return p[key] if key else 0


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
        self.hyst_mv = p["v_hyst_dv"] * 100
        self.active = {}        # code -> trip number (reports list codes in trip order)
        self.trips = 0
        self.pending = {}       # row index -> ticks when its condition first held
        self.gone = {}          # code -> ticks when its condition first went away
        self.unplug_seen = {}   # code -> True once the vehicle was unplugged after the trip
        self.live = {}          # code -> condition of any of its rows, this tick
        for row in RULES:
            self.live[row[0]] = False
        self.changed = False
        self.charger = None     # set by the app: .relay .lock .duty .pilot .limit_da() .on_fault()
        self.metering = None    # set by the app: .mv .ma .last and the last burst .bv .bi
        self.irq = 0            # alarm latched by the IRQ callback, not yet tripped
        self.meter_bad = False  # the last burst is impossible (voltage/current rows pause)
        self._burst_t = None
        self.oc_ref = 0         # highest current limit (mA) offered in the last oc_soft_ms
        self.oc_ref_t = 0
        self.unlock_t = None
        self.cp_duty = None     # the CP duty of the last tick, and ticks since it changed:
        self.cp_settle = 0      # the pilot reads the new level only after its debounce
        self._irq_now = 0
        board.on_alarm(self._alarm)

    # --- what the rest of the firmware asks -----------------------------------------------
    def code(self):
        """The first active fault that blocks charging (a latched alarm first), or 0."""
        if self.irq:
            return self.irq
        best = 0
        for code, n in self.active.items():
            if self._row(code)[2] == FAULT and (not best or n < self.active[best]):
                best = code
        return best

    def faults(self):
        return self._list(FAULT)

    def warnings(self):
        return self._list(WARN)

    def _list(self, kind):
        codes = [c for c in self.active if self._row(c)[2] == kind]
        codes.sort(key=self.active.get)
        return codes

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
            if code == CP_FAULT or self._row(code)[5] == UNPLUG and \
                    not self.unplug_seen.get(code):
                return 100
        return 0

    def unplugged(self):
        """The vehicle was unplugged (CP state A): faults that clear on unplug may go."""
        for code in self.active:
            if self._row(code)[5] == UNPLUG:
                self.unplug_seen[code] = True

    @staticmethod
    def _row(code):
        """The (first) row of `code`: rows sharing a code agree on all but the condition."""
        for row in RULES:
            if row[0] == code:
                return row
        raise ValueError("no trip rule %r" % code)

    # --- tripping -------------------------------------------------------------------------
    def _alarm(self, name):
        """The HAL's alarm (an IRQ on the board): open the relay, latch, nothing else."""
        self.board.relay_set(False)
        if self.charger:
            self.charger.relay = False
        self.irq = ESTOP if name == "estop" else LEAKAGE

    def trip(self, code):
        """Trip `code` now (the table does it; the session for lock and self-test)."""
        row = self._row(code)
        kind = row[2]
        if kind == FAULT:
            self.board.relay_set(False)
            if self.charger:
                self.charger.relay = False
        if code in self.active:
            return
        self.trips += 1
        self.active[code] = self.trips
        self.gone.pop(code, None)
        self.unplug_seen.pop(code, None)
        self.changed = True
        log.warn("prot", "%s %d: %s" % ("FAULT" if kind == FAULT else "warning", code, row[1]))
        if kind == FAULT and self.charger:
            self.charger.on_fault(code)

    def _clear(self, code):
        del self.active[code]
        self.gone.pop(code, None)
        self.unplug_seen.pop(code, None)
        self.changed = True
        log.info("prot", "cleared %d: %s" % (code, self._row(code)[1]))

    # --- the table, evaluated every tick --------------------------------------------------
    def check(self):
        now = self.board.ticks_ms()
        p, live = self.p, self.live
        irq = self._irq_now = self.irq
        if self.charger:
            if self.charger.duty != self.cp_duty:
                self.cp_duty, self.cp_settle = self.charger.duty, 0
            elif self.cp_settle < CP_SETTLE:
                self.cp_settle += 1
        for code in live:
            live[code] = False
        for k in range(len(RULES)):
            code, _, _, test, hold, _, _ = RULES[k]
            cond = test is not None and self._holds(test)
            if not cond:
                self.pending.pop(k, None)
                continue
            live[code] = True
            if code in self.active:
                self.pending.pop(k, None)
                continue
            first = self.pending.get(k)
            if first is None:
                first = self.pending[k] = now
            if time.ticks_diff(now, first) >= _ms(p, hold):
                self.pending.pop(k, None)
                self.trip(code)
        if self.irq == irq:
            self.irq = 0        # the latched alarm has become a row's trip by now
        if self.charger and self.charger.duty and self.charger.pilot.state == "A":
            self.unplugged()            # (at duty 0 the pilot shows an old state)
        if self.active:
            for code in live:           # (not over self.active: _clear changes it)
                if code not in self.active:
                    continue
                if live[code]:
                    self.gone.pop(code, None)
                else:
                    self._maybe_clear(code, now)

    def _maybe_clear(self, code, now):
        gone = self.gone.get(code)
        if gone is None:
            gone = self.gone[code] = now
        row = self._row(code)
        if row[5] == UNPLUG and not self.unplug_seen.get(code):
            return
        if time.ticks_diff(now, gone) >= _ms(self.p, row[6]):
            self._clear(code)

    # --- the conditions -------------------------------------------------------------------
    # One method for all of them: a method costs about 200 bytes of heap on the board.
    def _holds(self, test):
        """Whether the condition `test` (RULES column 4) holds now."""
        c, b, p = self.charger, self.board, self.p
        if test == "estop":
            return self._irq_now == ESTOP or b.estop()
        if test == "leak":
            return self._irq_now == LEAKAGE or b.leakage()
        if test == "meter_dead":
            return self._meter_dead()
        if test == "over_v" or test == "under_v":       # mains RMS, with a hysteresis
            m = self.metering
            if m is None or m.last is None or self.meter_bad:
                return False
            if test == "over_v":
                return m.mv > self.max_mv - (self.hyst_mv if 4000 in self.active else 0)
            return m.mv < self.min_mv + (self.hyst_mv if 4001 in self.active else 0)
        if test == "oc_soft" or test == "oc_hard":
            return self._over_current(test == "oc_hard")
        if test == "hot" or test == "warm":              # gun temperature, with hysteresis
            t = b.gun_temp_c()
            if t is None:
                return False
            if test == "hot":
                return t >= p["t_resume_c" if 3010 in self.active else "t_stop_c"]
            return t >= p["t_derate_c"] - (p["t_hyst_c"] if 3020 in self.active else 0)
        if c is None:
            return False
        if test == "welded":                             # commanded open, contacts closed
            return not c.relay and b.relay_feedback()
        if test == "unlock":
            return self._unlock()
        if test == "cp_fault":
            # CP at 0 V (E), or at -12 V while the pile does not drive -12 V (F), once the
            # pilot has settled after the last duty change
            return self.cp_settle >= CP_SETTLE and (
                c.pilot.state == "E" or c.pilot.state == "F" and c.duty != 0)
        if test == "diode":
            return not c.pilot.diode_ok
        raise ValueError("no condition " + test)

    def _meter_dead(self):
        """Judge each new ADC burst once.  Impossible readings also pause the voltage and
        current rows, which come after this one in RULES."""
        m = self.metering
        if m is None or m.last is None or m.last == self._burst_t:
            return self.meter_bad
        self._burst_t = m.last
        v, i = getattr(m, "bv", None), getattr(m, "bi", None)
        if not v or not i:
            self.meter_bad = False
        else:
            dc = self.p["meter_dc_counts"]
            self.meter_bad = (max(v) == min(v) or abs(sum(v) // len(v) - self.voff) > dc or
                              abs(sum(i) // len(i) - self.ioff) > dc)
        return self.meter_bad

    def _over_current(self, hard):
        """Relay closed: soft, above the limit the PWM offers now + oc_soft_pct +
        oc_soft_add_da (the row holds it oc_soft_ms); hard, above oc_hard_pct of the
        highest limit offered during the last oc_soft_ms (the vehicle's time to follow a
        lowered PWM)."""
        c, m, p = self.charger, self.metering, self.p
        if c is None or m is None or not c.relay or m.last is None or self.meter_bad:
            if hard:
                self.oc_ref = 0
            return False
        da = current_da(c.duty) if 0 < c.duty < 100 else None
        lim = (c.limit_da() if da is None else da) * 100
        if not hard:
            return m.ma > lim * (100 + p["oc_soft_pct"]) // 100 + p["oc_soft_add_da"] * 100
        now = self.board.ticks_ms()
        if lim >= self.oc_ref or time.ticks_diff(now, self.oc_ref_t) > p["oc_soft_ms"]:
            self.oc_ref, self.oc_ref_t = lim, now
        return m.ma > self.oc_ref * p["oc_hard_pct"] // 100

    def _unlock(self):
        """Unlock commanded but the lock still reports locked: drive it again every
        unlock_retry_ms; the row trips after unlock_hold_ms."""
        c = self.charger
        if c.lock or not self.board.lock_feedback():
            self.unlock_t = None
            return False
        now = self.board.ticks_ms()
        if self.unlock_t is None:
            self.unlock_t = now
        elif time.ticks_diff(now, self.unlock_t) >= self.p["unlock_retry_ms"]:
            self.unlock_t = now
            if LOCK not in self.active:
                log.warn("prot", "lock still locked; unlock again")
            self.board.lock_set(False)
        return True
