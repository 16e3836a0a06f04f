"""One gun's charge, from start request to billing record: the only place that may
close the relay.

Charger.tick() runs every ~10 ms: it reads the pilot through the HAL and moves the
state machine (work_status codes of PROTOCOL.md section 4):

    IDLE 10 --plug--> PLUGGED 11 --start--> STARTING 12 --lock ok, vehicle C/D--> CHARGING 13
    CHARGING --stop / limit / unplug / fault / offline--> FINISHED 14 --unplug--> IDLE
    any state with a blocking fault reports FAULT 16

CP output: +12 V (duty 100) with no session, PWM at duty_for(limit_da()) while a session
runs (recomputed every tick: rated current, cable, the platform's power limit in
charge_mode 15, protective derating), -12 V (state F, duty 0) while a fault makes the
pile unavailable (protection.idle_duty(): a fault that waits for the unplug keeps
+12 V so the unplug can be seen).  While the pile itself drives -12 V the CP shows
nothing of the vehicle, so the pilot keeps its last state instead of reading F.

The relay closes only while the lock is confirmed, the vehicle is in C or D (debounced
and in this very read), PWM runs and no fault blocks (_interlock); it opens in the
tick any of that stops holding (the vehicle leaving C/D: two reads, ~20 ms).  The lock
is released once the contacts report open.

Stop codes (result_code / order reason): platform stopChargeSrv -> cfg "stop_codes"
by stop_reason (1002 for an unknown reason), at the pile (bench stop, stop button,
REPL) 1001, time / energy / amount limit 1003 / 1004 / 1005, offline too long 1006,
gun pulled out (CP A while charging) 1008, fault: the fault's code.
Vehicle stops: the only way a vehicle on a basic AC pilot asks to stop is opening S2
(C -> B).  A pause in B is normal (pre-conditioning, full battery, timers); the
session goes on and the relay closes again when the vehicle returns to C.  Once the
vehicle has stayed in B for vehicle_pause_s the session ends with 1010 ("vehicle
opened S2").  1011 ("vehicle stopped") is not produced: without ISO 15118 the pile
cannot tell a vehicle that decided to stop from one that opened S2, and a vehicle that
stays in C drawing no current may still resume, so that session stays open.

Repeats: a startChargeSrv / stopChargeSrv for the running session or for one of the
last RECENT trades is answered again (the recorded start_result, or stop_result 11 /
stop_fail_reson 11 with the recorded stop code), never acted on twice.  An unknown
pre_trade_no in stopChargeSrv gets stop_result 11 / stop_fail_reson 10.

A running session checkpoints itself (energy per band, meter start, times) so that a
restart closes it with a correct order (recover()).
"""
from time import ticks_diff

from micropython import const

from pile import fees, log, pilot, store

# work_status (PROTOCOL.md section 4); pile.app keeps its own copy of STARTING/CHARGING
_IDLE = const(10)
_PLUGGED = const(11)
_STARTING = const(12)
_CHARGING = const(13)
_FINISHED = const(14)
_FAULT = const(16)
_OK = const(10)      # service reply result
_FAIL = const(11)
# start_result codes
_START_OK = const(10)
_START_FAULT = const(11)
_START_TIMEOUT = const(12)
_NOT_CONNECTED = const(13)
_BUSY = const(14)
_START_FAILED = const(15)
# stop codes
_AT_PILE = const(1001)
_BY_PLATFORM = const(1002)
_TIME_LIMIT = const(1003)
_ENERGY_LIMIT = const(1004)
_AMOUNT_LIMIT = const(1005)
_OFFLINE = const(1006)
_PULLED_OUT = const(1008)
_VEHICLE_S2 = const(1010)
# fault_code values of a refused start (6000 model; 6001..6003 ours)
_NO_FEE_MODEL = const(6000)
_NO_TIME = const(6001)
_JOURNAL_FULL = const(6002)
_BAD_LIMIT = const(6003)
_LOCK_FAILED = const(3011)
_RCD_SELFTEST = const(4006)
_FILE = const("session.json")
_LOCK_MS = const(1500)
_LOCK_TRIES = const(3)
_RECENT = const(8)


class Charger:
    def __init__(self, board, cfg, board_cfg, tariff, journal, send, faults):
        r = board_cfg["ratings"]
        self.board = board
        self.cfg = cfg
        self.rated_da = min(r["ot_cur"], r["cable_a"] * 10)
        self.nominal_v = r["nominal_v"]
        self.tariff = tariff
        self.journal = journal
        self.send = send                # send(cmd, body, qos=1) -> session_id
        self.faults = faults            # .code() blocking fault or 0; .derate_da() or None
        self.meter_register = None      # set by the app: the cumulative register in mWh
        self.pilot = pilot.Pilot()
        self.state = _IDLE
        self.s = None                   # the running session (a dict, checkpointed)
        self.recent = []                # (pre_trade_no, start_result, fault_code, stop_code)
        self.duty = 100
        self.relay = False
        self.lock = False
        self.link_up = True
        self.offline_since = None
        self.v_mv = self.i_ma = self.p_mw = 0
        self._unlock_pending = False
        board.cp_set(100)
        board.relay_set(False)

    # --- hardware, through the HAL only ---------------------------------------------------
    def _interlock(self):
        """May the relay be (or stay) closed?"""
        return (self.board.lock_feedback() and self.pilot.state in "CD" and
                0 < self.duty < 100 and not self.faults.code())

    def _set_relay(self, closed):
        if closed and not (self._interlock() and self.pilot.raw in "CD"):
            return
        if closed != self.relay:
            self.board.relay_set(closed)
            self.relay = closed
            log.info("gun", "relay %s" % ("closed" if closed else "open"))

    def _set_duty(self, duty):
        if duty != self.duty:
            self.duty = duty
            self.board.cp_set(duty)
            log.info("gun", "duty %d%%" % duty)

    def _set_lock(self, locked):
        if locked != self.lock:
            self.lock = locked
            self.board.lock_set(locked)
            log.info("gun", "lock %s" % ("engaged" if locked else "released"))

    def limit_da(self):
        """The current (0.1 A) the pile may offer now: the least of the rating, the
        cable, the platform's power limit (charge_mode 15, limit_data in 0.1 kW) and
        protective derating."""
        limit = self.rated_da
        if self.s and self.s["mode"] == 15:
            limit = min(limit, self.s["limit"] * 1000 // self.nominal_v)
        derate = self.faults.derate_da()
        return min(limit, derate) if derate is not None else limit

    # --- the control tick -----------------------------------------------------------------
    def tick(self):
        was = self.pilot.state
        if self.duty:                       # at duty 0 the pile itself drives -12 V
            hi, lo = self.board.cp_read()
            self.pilot.update(hi, lo, self.duty < 100)
        cp = self.pilot.state
        if cp != was:
            log.info("gun", "CP %s->%s" % (was, cp))
        if self.relay and not self._interlock():
            self._set_relay(False)          # e.g. the vehicle left C/D: open in this tick
        now = self.board.ticks_ms()
        if self.state == _STARTING or self.state == _CHARGING:
            self._run_session(cp, now)
        elif self.state == _FINISHED and cp == "A":
            self._to(_IDLE)
        if cp == "A" and was != "A":
            self.faults.unplugged()
        elif self.state == _IDLE or self.state == _PLUGGED:
            self._to(_PLUGGED if cp in "BCD" else _IDLE)
        if self._unlock_pending and not self.board.relay_feedback():
            self._unlock_pending = False
            self._set_lock(False)
        if self.state == _STARTING or self.state == _CHARGING:
            self._set_duty(pilot.duty_for(self.limit_da()) or 100)    # follows derating
        else:
            self._set_duty(self.faults.idle_duty())

    def _to(self, state):
        if state != self.state:
            log.info("gun", "work_status %d->%d" % (self.state, state))
            self.state = state

    def work_status(self):
        return _FAULT if self.faults.code() else self.state

    def _run_session(self, cp, now):
        """One tick of a running session: the start (lock, then the vehicle in C/D
        closes the relay and charging begins), pauses in B, and every stop condition."""
        s, cfg = self.s, self.cfg
        starting = self.state == _STARTING
        if cp == "A":
            if starting:
                self.end(0, failed=_NOT_CONNECTED)
            else:
                self.end(_PULLED_OUT)
            return
        if not self.board.lock_feedback():
            if not starting:
                self.faults.trip(_LOCK_FAILED)
            elif ticks_diff(now, s["lock_t"]) > _LOCK_MS:
                s["lock_tries"] += 1
                if s["lock_tries"] >= _LOCK_TRIES:
                    self.faults.trip(_LOCK_FAILED)   # ends the start through on_fault
                    return
                log.warn("gun", "relock %d" % s["lock_tries"])
                self._set_lock(False)
                self._set_lock(True)
                s["lock_t"] = now
            return
        if starting:
            if cp in "CD":
                self._set_relay(True)
                if self.relay:                  # charging begins
                    s["start_ms"] = self.board.now_ms()
                    s["sum_start"] = self.meter_register()
                    s["tick"] = now
                    self._to(_CHARGING)
                    self._start_result(s["trade"], _START_OK, 0)
                    self.checkpoint()
                    log.info("gun", "%s charging" % s["trade"])
                    return
            if ticks_diff(now, s["t0"]) > cfg["start_timeout_s"] * 1000:
                self.end(0, failed=_START_TIMEOUT)
            return
        if cp in "CD" and not self.relay:
            self._set_relay(True)
            if self.relay:
                s["paused"] = None
        elif cp not in "CD" and s["paused"] is None:
            s["paused"] = now
        s["chg_ms"] += ticks_diff(now, s["tick"])
        s["tick"] = now
        mode, limit = s["mode"], s["limit"]
        if mode == 11 and fees.bill(s["e"], s["model"])["total_cost"] >= limit * 100:
            self.end(_AMOUNT_LIMIT)
        elif mode == 12 and fees.bill(s["e"], s["model"])["total_elect"] >= limit * 100:
            self.end(_ENERGY_LIMIT)             # as reported
        elif mode == 14 and s["chg_ms"] >= limit * 60000:
            self.end(_TIME_LIMIT)
        elif s["paused"] is not None and \
                ticks_diff(now, s["paused"]) > cfg["vehicle_pause_s"] * 1000:
            self.end(_VEHICLE_S2)
        elif not self.link_up and self.offline_since is not None and \
                ticks_diff(now, self.offline_since) > cfg["offline_charge_s"] * 1000:
            self.end(_OFFLINE)
        elif ticks_diff(now, s["saved"]) > 30000:
            self.checkpoint()

    def set_link(self, up):
        if up != self.link_up:
            self.link_up = up
            self.offline_since = None if up else self.board.ticks_ms()

    # --- platform services ----------------------------------------------------------------
    def start(self, body):
        """startChargeSrv: return (reply result, reason); sends startChaResEvt."""
        trade = body["pre_trade_no"]
        if self.s and self.s["trade"] == trade:
            if self.state == _CHARGING:     # a STARTING one answers when it knows
                self._start_result(trade, _START_OK, 0)
            return _OK, None
        for rec in self.recent:
            if rec[0] == trade:
                self._start_result(trade, rec[1], rec[2])
                return _OK, None
        mode, limit = body["charge_mode"], body.get("limit_data", 0)
        result, fault = _START_FAILED, 0        # why a start is refused, in this order
        if body["gun_no"] != 1:
            pass
        elif self.s:
            result = _BUSY
        elif self.faults.code():
            result, fault = _START_FAULT, self.faults.code()
        elif self.pilot.state not in "BCD":
            result = _NOT_CONNECTED
        elif not self.tariff.model:
            fault = _NO_FEE_MODEL
        elif mode in (11, 12, 14, 15) and limit <= 0 or \
                mode == 15 and pilot.duty_for(limit * 1000 // self.nominal_v) is None:
            fault = _BAD_LIMIT                  # a limit that must be > 0 and fit the PWM
        elif not self.board.time_trusted():
            fault = _NO_TIME
        elif self.journal.full():
            fault = _JOURNAL_FULL
        elif not self.board.leak_selftest():
            self.faults.trip(_RCD_SELFTEST)
            result, fault = _START_FAULT, _RCD_SELFTEST
        else:
            result = 0
        if result:
            self._remember(trade, result, fault, 0)
            self._start_result(trade, result, fault)
            return _FAIL, "start refused: %d/%d" % (result, fault)
        now = self.board.ticks_ms()
        self.s = {"trade": trade, "mode": mode, "limit": limit, "model": self.tariff.model,
                  "e": [0, 0, 0, 0], "t0": now, "tick": now, "saved": now, "chg_ms": 0,
                  "lock_t": now, "lock_tries": 0, "paused": None}
        self._to(_STARTING)
        self._unlock_pending = False        # the last session's unlock must not undo this
        self._set_lock(True)
        self._set_duty(pilot.duty_for(self.limit_da()) or 100)
        log.info("gun", "%s starting, mode %d" % (trade, mode))
        return _OK, None

    def _start_result(self, trade, result, fault):
        self.send("startChaResEvt", dict(gun_no=1, pre_trade_no=trade, start_result=result,
                                         fault_code=fault))

    def _remember(self, trade, result, fault, stop):
        recent = self.recent
        for r in recent:
            if r[0] == trade:
                recent.remove(r)
                break
        del recent[:-(_RECENT - 1)]
        recent.append((trade, result, fault, stop))

    def stop(self, body):
        """stopChargeSrv: answer with stopChaResEvt; return (reply result, reason)."""
        trade = body["pre_trade_no"]
        if self.s and self.s["trade"] == trade:
            self.end(self.cfg["stop_codes"].get(str(body["stop_reason"]), _BY_PLATFORM),
                     0, True)
            return _OK, None
        for rec in self.recent:
            if rec[0] == trade:
                break
        else:
            rec = None
        self.send("stopChaResEvt", dict(gun_no=1, pre_trade_no=trade, stop_result=_FAIL,
                                        stop_fail_reson=11 if rec else 10,
                                        result_code=rec[3] if rec else 0))
        return _FAIL, "already stopped" if rec else "unknown pre_trade_no"

    # --- the end of a session -------------------------------------------------------------
    def end(self, code=_AT_PILE, fault=0, by_platform=False, failed=0):
        """End what is running with stop code `code` (by default 1001, the pile's own
        stop).  The relay opens now, the CP goes back to idle and the lock follows once
        the contacts report open.  A charging session journals its order; a start that
        never reached charging delivered nothing and makes no order: it fails with
        start_result `failed`, else 11 with `fault` for a fault, else 15.
        `by_platform`: the platform's stopChargeSrv, answered with stopChaResEvt."""
        s = self.s
        if s is None:
            return
        trade, charging = s["trade"], self.state == _CHARGING
        self._set_relay(False)
        self._set_duty(self.faults.idle_duty())
        self._unlock_pending = True
        self.s = None
        if charging:
            s["end_ms"] = self.board.now_ms()
            result, fault = _START_OK, 0
        else:
            result = failed or (_START_FAULT if fault else _START_FAILED)
            self._start_result(trade, result, fault)
            log.warn("gun", "%s failed %d/%d" % (trade, result, fault))
        self._remember(trade, result, fault, code)
        if by_platform:
            self.send("stopChaResEvt", dict(gun_no=1, pre_trade_no=trade, stop_result=_OK,
                                            stop_fail_reson=0, result_code=code))
        if charging:
            order = self.order(s, code)
            self.journal.add(order)
            store.remove(_FILE)
            log.info("gun", "session %s ended %d, %d Wh" % (trade, code, order["total_elect"]))
        if self.pilot.state in "BCD":
            self._to(_FINISHED if charging else _PLUGGED)
        else:
            self._to(_IDLE)

    local_stop = end    # the stop button, the bench or the REPL: stop code 1001

    def on_fault(self, code):
        """Protection tripped (the relay is already open): end what is running."""
        self.end(code, code)
        self._set_duty(self.faults.idle_duty())

    def order(self, s, code):
        """The orderUpdateEvt body of session `s` ended with stop code `code`."""
        body = fees.bill(s["e"], s["model"])
        del body["total_cost"]
        body.update(gun_no=1, pre_trade_no=s["trade"],
                    charge_start_time=str(s["start_ms"] // 1000),
                    charge_endTime=str(s["end_ms"] // 1000),
                    ele_model_id=s["model"]["id"], time_div_type=10,
                    sum_start=str(s["sum_start"] // 1000),
                    sum_end=str((s["sum_start"] + sum(s["e"])) // 1000),
                    start_soc=0, end_soc=0, reason=code)
        return body

    # --- energy and persistence -----------------------------------------------------------
    def add_energy(self, mwh):
        """Energy measured while the relay was closed, in the band in force now."""
        s = self.s
        if s is None or self.state != _CHARGING or mwh <= 0:
            return
        minute = fees.local_minute(self.board.now_ms(), self.cfg["tz_min"])
        s["e"][fees.band_at(s["model"], minute)] += mwh
        s["last_ms"] = self.board.now_ms()
        if sum(s["e"]) - s.get("saved_e", 0) >= 20000:
            self.checkpoint()

    def checkpoint(self):
        s = self.s
        s["saved"] = self.board.ticks_ms()
        s["saved_e"] = sum(s["e"])
        s["last_ms"] = self.board.now_ms()
        store.save(_FILE, dict(trade=s["trade"], mode=s["mode"], limit=s["limit"],
                               model=s["model"], e=s["e"], chg_ms=s["chg_ms"],
                               start_ms=s["start_ms"], sum_start=s["sum_start"],
                               last_ms=s["last_ms"]))

    def recover(self):
        """At boot: a checkpoint left by a power cut or reset becomes an order (stop code
        power_loss_reason, the last checkpoint's end time) unless the journal already has
        that session; the checkpoint goes only once the order is journaled.  The journal's
        latest sessions are remembered, so a repeated start or stop is only answered."""
        order = None
        s = store.load(_FILE)
        if s is not None:
            try:
                if not self.journal.has(s["trade"]):
                    s["end_ms"] = s["last_ms"]
                    order = self.order(s, self.cfg["power_loss_reason"])
                    self.journal.add(order)
                    log.warn("gun", "session %s closed at boot %d Wh"
                             % (s["trade"], order["total_elect"]))
            except Exception as e:
                log.error("gun", "session checkpoint unusable (%r): %s" % (e, repr(s)[:200]))
            store.remove(_FILE)
        for d in self.journal.done:
            self._remember(d[0], _START_OK, 0, d[1])
        for o in self.journal.orders:
            self._remember(o["pre_trade_no"], _START_OK, 0, o["reason"])
        return order

    # --- telemetry ------------------------------------------------------------------------
    def telemetry(self):
        s, b = self.s, self.board
        t = b.gun_temp_c()
        e = s["e"] if s else [0, 0, 0, 0]
        bill = fees.bill(e, s["model"] if s else {"power": e, "service": e})   # no session: 0
        body = dict(gun_no=1, pre_trade_no=s["trade"] if s else "", trade_no=" ",
                    work_status=self.work_status(),
                    con_status=10 if self.pilot.state in "BCD" else 11,
                    e_lock_status=11 if b.lock_feedback() else 10,
                    out_relay_status=11 if b.relay_feedback() else 10,
                    pwm_duty_radio=self.duty if 0 < self.duty < 100 else 0,
                    ac_vol_a=self.v_mv // 100, ac_cur_a=self.i_ma // 100,
                    real_power=self.p_mw // 100000,
                    gun_temp=500 if t is None else int(t * 10) + 500,
                    chg_time=s["chg_ms"] // 60000 if s else 0)
        for key in bill:        # the energies and the totals, not the per-band money
            if key.endswith("elect") or key.startswith("total"):
                body[key] = bill[key]
        return body
