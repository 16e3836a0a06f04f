"""One gun: the control step, the charge state machine and the only place that decides
the outputs (CP duty, relay, lock).

step() runs every 10 ms and right after every ADC burst (esp32-evse's evse_process is
the model): read the pilot and the latest measurement -> protection judges them ->
the state machine moves -> _apply() writes CP duty, relay and lock, each only when the
wanted output differs from what it wrote last.  The lock's retries and the unplug are
seen here and nowhere else.  work_status codes (PROTOCOL.md section 4):

    IDLE 10 --plug--> PLUGGED 11 --start--> STARTING 12 --lock ok, vehicle C/D--> CHARGING 13
    CHARGING --stop / limit / unplug / fault / offline--> FINISHED 14 --unplug--> IDLE
    any state with a blocking fault reports FAULT 16

CP output: +12 V (duty 100) with no session, PWM at duty_for(limit_da()) while a session
runs (the least of the rating, the cable, the platform's power limit in charge_mode 15
and protective derating), -12 V (state F, duty 0) while a fault makes the pile
unavailable (Protection.idle_duty).  While the pile itself drives -12 V the CP shows
nothing of the vehicle, so the pilot keeps its last state.

The relay closes only while the lock is confirmed, the vehicle is in C or D (debounced
and in this very read), PWM runs and no fault blocks (_may_close); it opens in the step
any of that stops holding (the vehicle leaving C/D: two reads, ~20 ms).  A protective
trip opens it even before (pile.protection), and the step then ends the session with the
fault's code (one step after the trip at most, the relay already open).  The lock is
released once the contacts report open.  Locking: three tries of LOCK_MS; a lock that
lets go while charging, or never engages, is fault 3011; an unlock that does not follow
is driven again every LOCK_MS (protection trips 3011 after unlock_hold_ms).

Stop codes (docs/faults.md): the platform's stop by cfg "stop_codes", the pile's own 1001,
the limits 1003-1005, offline 1006, pulled out 1008, paused in B 1010, a fault its code.

Repeats: a start or stop for the running session or one of the last RECENT trades is
answered again (the recorded start_result, or stop_result 11 / reason 11 with the
recorded stop code), never acted on twice; an unknown trade in a stop gets 11 / 10.
Every start and stop result and every order goes through the journal (pile.journal).
"""
from time import ticks_diff

from micropython import const

from pile import fees, journal, log, pilot, session, store
from pile import protection as pr

IDLE, PLUGGED, STARTING, CHARGING, FINISHED, FAULTED = 10, 11, 12, 13, 14, 16
_OK = const(10)             # service reply and start_result / stop_result
_FAIL = const(11)
_START_FAULT = const(11)    # start_result codes
_START_TIMEOUT = const(12)
_NOT_CONNECTED = const(13)
_BUSY = const(14)
_START_FAILED = const(15)
AT_PILE = const(1001)       # stop codes
_BY_PLATFORM = const(1002)
_OFFLINE = const(1006)
_PULLED_OUT = const(1008)
_VEHICLE_S2 = const(1010)
NO_FEE_MODEL = const(6000)  # fault_code of a refused start (6000 model; 6001.. ours)
NO_TIME = const(6001)
JOURNAL_FULL = const(6002)
BAD_LIMIT = const(6003)
TOO_OLD = const(6004)
NO_STORAGE = const(6005)
NO_CONTROL = const(6006)    # the control step could not run (out of memory): fail_safe()
LOCK_MS = const(1500)
_LOCK_TRIES = const(3)
_RECENT = const(8)
_CP_SETTLE = const(3)       # CP reads after a duty change before a CP fault counts


class Gun:
    def __init__(self, board, cfg, board_cfg, prot, metering, journal_, tariff,
                 storage_error=None):
        r = board_cfg["ratings"]
        self.board, self.cfg, self.prot = board, cfg, prot
        self.metering, self.journal, self.tariff = metering, journal_, tariff
        self.rated_da = min(r["ot_cur"], r["cable_a"] * 10)
        self.nominal_v = r["nominal_v"]
        self.pilot = pilot.Pilot()
        self.state = IDLE
        self.s = None                   # the running session.Session
        self.recent = []                # (pre_trade_no, start_result, fault_code, stop_code)
        self.duty, self.relay, self.lock = 100, False, False    # what _apply wrote last
        self.lock_t = 0                 # ticks the lock was last driven
        self.lock_tries = 0
        self.lock_bad = self.rcd_bad = False    # one-step inputs of protection
        self.settle = 0                 # CP reads since the duty last changed
        self.link_up, self.offline_since = True, None
        self.last = None                # the finished session, while still plugged (14)
        self.opened_t = board.ticks_ms() - cfg["relay_min_open_s"] * 1000
        self.vent = board_cfg.get("ventilation", 0)     # the pile may supply in state D
        self.storage_error = storage_error  # flash not writable: no charging (6005)
        self.blind = False                  # fail_safe() opened the relay of a session
        self.inp = [None] * pr.INPUTS   # protection's inputs, refilled every step
        board.cp_set(100)
        board.relay_set(False)
        board.lock_set(False)

    # --- the control step -----------------------------------------------------------------
    def step(self):
        b, now = self.board, self.board.ticks_ms()
        if self.blind:                      # fail_safe() acted: the session ends (6006);
            self.end(NO_CONTROL, NO_CONTROL)  # should this fail too, the next step again
            self.blind = False
            log.error("gun", "no control step for %d ms: relay opened, session ended"
                      % self.cfg["fail_safe_ms"])
        was = self.pilot.state
        if self.duty:                       # at duty 0 the pile itself drives -12 V
            hi, lo = b.cp_read()
            self.pilot.update(hi, lo, 0 < self.duty < 100)
            self.settle = min(self.settle + 1, _CP_SETTLE)
        cp = self.pilot.state
        if cp != was:
            log.info("gun", "CP %s->%s" % (was, cp))
        locked = b.lock_feedback()
        s = self.s
        if self.state == CHARGING and not locked:
            self.lock_bad = True            # the lock let go while charging
        code = self.prot.judge(self._inputs(cp, locked, now), now)
        self.lock_bad = self.rcd_bad = False
        if code:
            self.end(code, code)
        elif s and s.stop:                  # a normal stop, PWM off: the relay opens once
            if not (self.relay and self._may_close(False)) or \
                    ticks_diff(now, s.stop[1]) >= self.cfg["stop_wait_ms"]:
                self._finish(s, s.stop[0])  # the vehicle has left C (or took too long)
        elif s and cp == "A":
            self.end(_PULLED_OUT) if self.state == CHARGING else \
                self.end(0, failed=_NOT_CONNECTED)
        elif self.state == STARTING:
            if cp == "D" and not self.vent:
                self.end(0, pr.VENT, failed=_START_FAULT)   # no ventilation: no energy
            elif locked and self._may_close():
                self._begin(now)
            elif ticks_diff(now, s.t0) > self.cfg["start_timeout_s"] * 1000:
                self.end(0, failed=_START_TIMEOUT)
        elif self.state == CHARGING:
            self._charging(cp, now)
        elif self.state != FINISHED or cp == "A":
            self._to(PLUGGED if cp in "BCD" else IDLE)
        self._apply(now)

    def fail_safe(self):
        """No step has run for fail_safe_ms (each one failed: out of memory, DESIGN.md
        "Memory"): the relay opens and the PWM goes off now, and the next step that runs
        ends the session with 6006 as a fault.  Allocates nothing (small ints, attributes
        that exist, HAL calls that do not allocate), so it works when nothing else does.
        Opening under load is what a fault trip does too: without a step no rule guards
        the charge (the estop and leakage IRQ aside, pile.protection)."""
        if self.relay:
            self.board.relay_set(False)
            self.relay = False
            self.opened_t = self.board.ticks_ms()
        if 0 < self.duty < 100:
            self.board.cp_set(100)
            self.duty = 100
            self.settle = 0
        if self.s is not None:
            self.blind = True

    def _inputs(self, cp, locked, now):
        """Protection's inputs (pile.protection IN_*) from the board and this step."""
        b, m, inp = self.board, self.metering, self.inp
        duty = self.duty
        inp[pr.IN_ESTOP], inp[pr.IN_LEAK] = b.estop(), b.leakage()
        inp[pr.IN_RCD], inp[pr.IN_LOCK] = self.rcd_bad, self.lock_bad
        inp[pr.IN_METER] = m.bad
        inp[pr.IN_MV] = m.mv if m.valid else None
        inp[pr.IN_MA] = (1 << 30 if m.over else m.ma) if m.valid and self.relay else None
        da = pilot.current_da(duty) if 0 < duty < 100 else None
        inp[pr.IN_OFFER] = (self.limit_da() if da is None else da) * 100
        inp[pr.IN_TEMP] = b.gun_temp()
        inp[pr.IN_WELDED] = not self.relay and b.relay_feedback()
        inp[pr.IN_UNLOCK] = not self.lock and locked
        inp[pr.IN_CP] = self.settle >= _CP_SETTLE and (cp == "E" or cp == "F" and duty != 0)
        inp[pr.IN_DIODE] = not self.pilot.diode_ok
        inp[pr.IN_ABSENT] = cp == "A" and duty != 0 and self.settle >= _CP_SETTLE
        inp[pr.IN_VENT] = cp == "D" and not self.vent
        return inp

    def _may_close(self, pwm=True):
        """May the relay be (or stay) closed?  The lock confirmed, the vehicle in C (or D
        with ventilation) in the debounced state and in this read, no fault, and PWM on
        (pwm False: while a normal stop waits for the vehicle, PWM is off)."""
        p = self.pilot
        return (self.board.lock_feedback() and p.state in "CD" and p.raw in "CD" and
                (self.vent or p.state != "D") and (not pwm or 0 < self.duty < 100) and
                not self.prot.code())

    def _apply(self, now, stepping=True):
        """The one writer of the outputs: CP duty, relay, lock, written only on change
        (and the lock driven again while it does not follow)."""
        b, s = self.board, self.s
        closed = False
        if self.state == CHARGING and not s.ending:
            if s.stop:                      # stopping: the relay only holds (see end())
                closed = self.relay and self._may_close(False)
            elif s.paused is None and self._may_close():
                # anti-chatter: closed again only relay_min_open_s after it opened
                closed = self.relay or ticks_diff(now, self.opened_t) >= \
                    self.cfg["relay_min_open_s"] * 1000
        if closed != self.relay:
            b.relay_set(closed)
            self.relay = closed
            if not closed:
                self.opened_t = now
            log.info("gun", "relay %s" % ("closed" if closed else "open"))
        duty = self.prot.idle_duty() if s is None else 100 if s.stop else \
            pilot.duty_for(self.limit_da()) or 100
        if duty != self.duty:
            b.cp_set(duty)
            self.duty, self.settle = duty, 0
            log.info("gun", "duty %d%%" % duty)
        # the lock: held while a session runs and while the contacts are live; released
        # only in a step (a session that ends outside one keeps it until the next, so a
        # start right after a stop never lets go of it)
        lock = s is not None or self.lock and (b.relay_feedback() or not stepping)
        if lock != self.lock:
            self._drive_lock(lock)
            self.lock_tries = 0
        elif ticks_diff(now, self.lock_t) < LOCK_MS or b.lock_feedback() == lock:
            pass
        elif not lock:                      # an unlock the lock does not follow
            if not self.prot.code():
                log.warn("gun", "lock still locked; unlock again")
            self._drive_lock(False)
        elif self.state == STARTING:        # not engaged: three tries, then fault 3011
            self.lock_tries += 1
            self.lock_bad = self.lock_tries >= _LOCK_TRIES
            if not self.lock_bad:
                log.warn("gun", "relock %d" % self.lock_tries)
                b.lock_set(False)
                self._drive_lock(True)

    def _drive_lock(self, lock):
        self.board.lock_set(lock)
        self.lock, self.lock_t = lock, self.board.ticks_ms()
        log.info("gun", "lock %s" % ("engaged" if lock else "released"))

    def limit_da(self):
        """The current (0.1 A) the pile may offer now: the least of the rating, the
        cable, the platform's power limit (charge_mode 15) and protective derating."""
        limit = self.rated_da
        s = self.s
        if s and s.mode == 15:
            limit = min(limit, s.limit * 10 // self.nominal_v)
        derate = self.prot.derate_da()
        return min(limit, derate) if derate is not None else limit

    def _to(self, state):
        if state != self.state:
            log.info("gun", "work_status %d->%d" % (self.state, state))
            self.state = state
            if state != FINISHED:
                self.last = None

    def work_status(self):
        return FAULTED if self.prot.code() else self.state

    # --- a running session ----------------------------------------------------------------
    def _begin(self, now):
        """The vehicle asks for power with the lock confirmed: charging begins.  The
        start result is journaled before the state moves (should memory run out in
        between, the next step begins again: the journal keeps one record a trade)."""
        s, wall = self.s, self.board.now_ms()
        m = s.model
        band = fees.band_at(m, fees.local_minute(wall, self.cfg["tz_min"]))
        self.journal.add([journal.START, s.trade, _OK, 0],
                         [s.trade, wall, self.metering.register(), m["id"], m["power"],
                          m["service"], band])
        s.begin(now, wall, self.metering.register())
        self._to(CHARGING)
        s.save(self.board.now_ms())
        log.info("gun", "%s charging" % s.trade)

    def _charging(self, cp, now):
        """One step of charging: pauses in B, and every stop condition but the energy
        limits (measured(): they move with the energy)."""
        s, cfg = self.s, self.cfg
        if cp == "C" or cp == "D" and self.vent:
            s.paused = None
        elif s.paused is None:
            s.paused = now                  # B, or D on a pile without ventilation
        s.advance(ticks_diff(now, s.tick))
        s.tick = now
        code = s.limit_code()
        if code:
            self.end(code)
        elif s.paused is not None and \
                ticks_diff(now, s.paused) > cfg["vehicle_pause_s"] * 1000:
            self.end(pr.VENT if cp == "D" else _VEHICLE_S2)
        elif not self.link_up and self.offline_since is not None and \
                ticks_diff(now, self.offline_since) > cfg["offline_charge_s"] * 1000:
            self.end(_OFFLINE)
        elif s.chg_ms - s.saved_ms >= session.CHECK_MS:
            s.save(self.board.now_ms())

    async def measure(self):
        """One ADC burst: its energy into the running session, then a step, so that a
        fresh reading is judged at once and not a tick later."""
        mwh = await self.metering.sample(self.relay)
        s = self.s
        if mwh > 0 and s is not None and self.state == CHARGING:
            if s.add(mwh, self.board.now_ms(), self.cfg["tz_min"]):
                s.save(self.board.now_ms())
        self.step()

    def set_link(self, up):
        if up != self.link_up:
            self.link_up = up
            self.offline_since = None if up else self.board.ticks_ms()

    # --- platform services ----------------------------------------------------------------
    async def start(self, gun, trade, mode, limit, late=False):
        """startChargeSrv: return (reply result, reason); the journal sends its result.
        late: the request is older than start_max_age_s (refused 15/6004)."""
        s = self.s
        if s and s.trade == trade:
            if self.state == CHARGING:     # a STARTING one answers when it knows
                self._result(journal.START, trade, _OK, 0)
            return _OK, None
        for rec in self.recent:
            if rec[0] == trade:
                self._result(journal.START, trade, rec[1], rec[2])
                return _OK, None
        result, fault = _START_FAILED, 0        # why a start is refused, in this order
        if gun != 1:
            pass
        elif late:
            fault = TOO_OLD
        elif s:
            result = _BUSY
        elif self.prot.code():
            result, fault = _START_FAULT, self.prot.code()
        elif self.pilot.state not in "BCD":
            result = _NOT_CONNECTED
        elif self.storage_error:                # what cannot be journaled is not billed
            fault = NO_STORAGE
        elif not self.tariff.model:
            fault = NO_FEE_MODEL
        elif mode in (11, 12, 14, 15) and limit <= 0 or \
                mode == 15 and pilot.duty_for(limit * 10 // self.nominal_v) is None:
            fault = BAD_LIMIT                   # a limit that must be > 0 and fit the PWM
        elif not self.board.time_trusted():
            fault = NO_TIME
        elif self.journal.full():
            fault = JOURNAL_FULL
        elif not await self.board.leak_selftest():
            self.rcd_bad = True                 # protection trips 4006 at the next step
            result, fault = _START_FAULT, pr.RCD
        elif self.s:                            # all may have changed during the test
            result = _BUSY
        elif self.prot.code():
            result, fault = _START_FAULT, self.prot.code()
        else:
            result = 0 if self.pilot.state in "BCD" else _NOT_CONNECTED
        if result:
            self._remember(trade, result, fault, 0)
            self._result(journal.START, trade, result, fault)
            return _FAIL, "start refused: %d/%d" % (result, fault)
        now = self.board.ticks_ms()
        self.s = session.Session(trade, mode, limit, self.tariff.model, now)
        self._to(STARTING)
        self.lock_tries = 0
        self._apply(now, False)                 # lock and PWM now
        log.info("gun", "%s starting, mode %d" % (trade, mode))
        return _OK, None

    def stop(self, gun, trade, reason):
        """stopChargeSrv: the journal sends stopChaResEvt; return (reply result, reason)."""
        s = self.s
        if s and s.trade == trade and not s.stop:
            self.end(self.cfg["stop_codes"].get(str(reason), _BY_PLATFORM), 0, True)
            return _OK, None
        rec = (trade, 0, 0, s.stop[0]) if s and s.trade == trade else None  # stopping
        for r in self.recent:
            if r[0] == trade:
                rec = r
        self._result(journal.STOP, trade, _FAIL, 11 if rec else 10, rec[3] if rec else 0)
        return _FAIL, "already stopped" if rec else "unknown pre_trade_no"

    def _result(self, kind, trade, *codes):
        self.journal.add([kind, trade] + list(codes))

    def _remember(self, trade, result, fault, stop):
        recent = self.recent
        for r in recent:
            if r[0] == trade:
                recent.remove(r)
                break
        del recent[:-(_RECENT - 1)]
        recent.append((trade, result, fault, stop))

    # --- the end of a session -------------------------------------------------------------
    def end(self, code=AT_PILE, fault=0, by_platform=False, failed=0):
        """End what is running with stop code `code` (by default 1001, the pile's own
        stop).  A normal stop of a charging session with the relay closed switches the
        PWM off first (the vehicle sees B and stops drawing current) and keeps the relay
        closed until the vehicle has left C, at most stop_wait_ms (IEC 61851-1's EVSE-
        initiated stop): no contactor opens under load; step() then finishes it.  A fault
        (and everything else) ends it at once.  A charging session journals its order; a
        start that never reached charging delivered nothing and makes no order: it fails
        with start_result `failed`, else 11 with `fault` for a fault, else 15.
        `by_platform`: the platform's stopChargeSrv, answered with stopChaResEvt now."""
        s = self.s
        if s is None:
            return
        if s.stop is None and not fault and self.state == CHARGING and self.relay:
            s.stop = (code, self.board.ticks_ms())
            log.info("gun", "%s stopping %d: PWM off" % (s.trade, code))
            if by_platform:
                self._result(journal.STOP, s.trade, _OK, 0, code)
            self._apply(s.stop[1], False)
            return
        self._finish(s, (s.stop[0] if s.stop and not fault else code), fault, failed,
                     by_platform)

    def _finish(self, s, code, fault=0, failed=0, by_platform=False):
        """The end of session s: the relay opens first, then the records are made and
        journaled, then the state moves.  Out of memory anywhere on the way, the session
        stays (ending: the relay never closes again) and the next step ends it again:
        the journal keeps one record of each kind a trade, so nothing is lost or doubled."""
        charging, now = self.state == CHARGING, self.board.ticks_ms()
        s.ending = True
        if self.relay:
            self.board.relay_set(False)
            self.relay, self.opened_t = False, now
        if charging:
            result, fault = _OK, 0
        else:
            result = failed or (_START_FAULT if fault else _START_FAILED)
            self._result(journal.START, s.trade, result, fault)
        if by_platform:
            self._result(journal.STOP, s.trade, _OK, 0, code)
        if charging:
            self.journal.add(s.record(code, self.board.now_ms()))
        self._remember(s.trade, result, fault, code)
        self.s = None
        self.last = s if charging else None
        self._to((FINISHED if charging else PLUGGED) if self.pilot.state in "BCD" else IDLE)
        self._apply(now, False)
        if charging:
            store.remove(session.FILE)
            log.info("gun", "session %s ended %d, %d Wh" % (s.trade, code, sum(s.e) // 1000))
        else:
            log.warn("gun", "%s failed %d/%d" % (s.trade, result, fault))

    def local_stop(self):
        """The stop button, the bench or the REPL: stop code 1001."""
        self.end(AT_PILE)

    def recover(self):
        """At boot: a session a power cut or reset left is billed (session.recover), and
        the journal's latest sessions are remembered, so that a repeated start or stop is
        only answered.  Returns the order record made, or None."""
        rec = session.recover(self.cfg["power_loss_reason"], self.journal, self.metering)
        for d in self.journal.done:
            self._remember(d[0], _OK, 0, d[1])
        for r in self.journal.recs:
            if r[0] in (journal.ORDER, journal.WIRE):
                self._remember(r[1], _OK, 0, journal.stop_code(r))
        return rec
