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
import time

from pile import fees, log, pilot, store

IDLE, PLUGGED, STARTING, CHARGING, FINISHED, FAULT = 10, 11, 12, 13, 14, 16
OK, FAIL = 10, 11
# start_result codes
START_OK, START_FAULT, START_TIMEOUT, NOT_CONNECTED, BUSY, START_FAILED = 10, 11, 12, 13, 14, 15
# stop codes
AT_PILE, BY_PLATFORM, TIME_LIMIT, ENERGY_LIMIT, AMOUNT_LIMIT, OFFLINE = \
    1001, 1002, 1003, 1004, 1005, 1006
PULLED_OUT, VEHICLE_S2, VEHICLE_STOPPED = 1008, 1010, 1011
# fault_code values of a refused start (6000 model; 6001..6003 ours)
NO_FEE_MODEL, NO_TIME, JOURNAL_FULL, BAD_LIMIT = 6000, 6001, 6002, 6003
LOCK_FAILED, RCD_SELFTEST = 3011, 4006
LIMITED = (11, 12, 14, 15)  # charge_mode with a limit_data that must be > 0
FILE = "session.json"
ZERO_MODEL = {"power": [0, 0, 0, 0], "service": [0, 0, 0, 0]}
LOCK_MS, LOCK_TRIES = 1500, 3
RECENT = 8


class Charger:
    def __init__(self, board, cfg, board_cfg, tariff, journal, send, faults):
        self.board = board
        self.cfg = cfg
        self.rated_da = min(board_cfg["ratings"]["ot_cur"], board_cfg["ratings"]["cable_a"] * 10)
        self.nominal_v = board_cfg["ratings"]["nominal_v"]
        self.tariff = tariff
        self.journal = journal
        self.send = send                # send(cmd, body, qos=1) -> session_id
        self.faults = faults            # .code() blocking fault or 0; .derate_da() or None
        self.pilot = pilot.Pilot()
        self.state = IDLE
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
            log.info("gun", "CP duty %d%%" % duty)

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
            log.info("gun", "CP %s -> %s" % (was, cp))
        if self.relay and not self._interlock():
            self._set_relay(False)          # e.g. the vehicle left C/D: open in this tick
        now = self.board.ticks_ms()
        if self.state in (STARTING, CHARGING):
            self._run_session(cp, now)
        elif self.state == FINISHED and cp == "A":
            self._to(IDLE)
        if cp == "A" and was != "A":
            self.faults.unplugged()
        elif self.state in (IDLE, PLUGGED):
            self._to(PLUGGED if cp in "BCD" else IDLE)
        if self._unlock_pending and not self.board.relay_feedback():
            self._unlock_pending = False
            self._set_lock(False)
        if self.state in (STARTING, CHARGING):
            self._set_duty(pilot.duty_for(self.limit_da()) or 100)    # follows derating
        else:
            self._set_duty(self.faults.idle_duty())

    def _to(self, state):
        if state != self.state:
            log.info("gun", "work_status %d -> %d" % (self.state, state))
            self.state = state

    def work_status(self):
        return FAULT if self.faults.code() else self.state

    def _run_session(self, cp, now):
        s = self.s
        if cp == "A":
            return self._abort(NOT_CONNECTED, 0) if self.state == STARTING \
                else self.end(PULLED_OUT)
        if self.state == STARTING:
            return self._starting(cp, now)
        if not self.board.lock_feedback():
            return self.faults.trip(LOCK_FAILED)
        if cp in "CD" and not self.relay:
            self._set_relay(True)
            if self.relay:
                s["paused"] = None
        elif cp not in "CD" and s["paused"] is None:
            s["paused"] = now
        self._check_stops(now)

    def _starting(self, cp, now):
        s = self.s
        if not self.board.lock_feedback():
            if time.ticks_diff(now, s["lock_t"]) > LOCK_MS:
                s["lock_tries"] += 1
                if s["lock_tries"] >= LOCK_TRIES:
                    self.faults.trip(LOCK_FAILED)   # ends the start through on_fault
                    return None
                log.warn("gun", "lock not confirmed; retry %d" % s["lock_tries"])
                self._set_lock(False)
                self._set_lock(True)
                s["lock_t"] = now
            return None
        if cp in "CD":
            self._set_relay(True)
            if self.relay:
                return self._begin(now)
        if time.ticks_diff(now, s["t0"]) > self.cfg["start_timeout_s"] * 1000:
            self._abort(START_TIMEOUT, 0)
        return None

    def _check_stops(self, now):
        s = self.s
        s["chg_ms"] += time.ticks_diff(now, s["tick"])
        s["tick"] = now
        code = self._limit_reached()
        if not code and s["paused"] is not None and \
                time.ticks_diff(now, s["paused"]) > self.cfg["vehicle_pause_s"] * 1000:
            code = VEHICLE_S2
        if not code and not self.link_up and self.offline_since is not None and \
                time.ticks_diff(now, self.offline_since) > self.cfg["offline_charge_s"] * 1000:
            code = OFFLINE
        if code:
            self.end(code)
        elif time.ticks_diff(now, s["saved"]) > 30000:
            self.checkpoint()

    def _limit_reached(self):
        s = self.s
        mode, limit = s["mode"], s["limit"]
        if mode == 11 and self.bill()["total_cost"] >= limit * 100:
            return AMOUNT_LIMIT
        if mode == 12 and self.bill()["total_elect"] >= limit * 100:    # as reported
            return ENERGY_LIMIT
        if mode == 14 and s["chg_ms"] >= limit * 60000:
            return TIME_LIMIT
        return 0

    def set_link(self, up):
        if up != self.link_up:
            self.link_up = up
            self.offline_since = None if up else self.board.ticks_ms()

    # --- platform services ----------------------------------------------------------------
    def start(self, body):
        """startChargeSrv: return (reply result, reason); sends startChaResEvt."""
        trade = body["pre_trade_no"]
        if self.s and self.s["trade"] == trade:
            if self.state == CHARGING:      # a STARTING one answers when it knows
                self._start_result(trade, START_OK, 0)
            return OK, None
        for rec in self.recent:
            if rec[0] == trade:
                self._start_result(trade, rec[1], rec[2])
                return OK, None
        result, fault = self._refusal(body)
        if result:
            self._remember(trade, result, fault, 0)
            self._start_result(trade, result, fault)
            return FAIL, "start refused: %d/%d" % (result, fault)
        now = self.board.ticks_ms()
        self.s = {"trade": trade, "mode": body["charge_mode"],
                  "limit": body.get("limit_data", 0), "model": self.tariff.model,
                  "e": [0, 0, 0, 0], "t0": now, "tick": now, "saved": now, "chg_ms": 0,
                  "lock_t": now, "lock_tries": 0, "paused": None}
        self._to(STARTING)
        self._unlock_pending = False        # the last session's unlock must not undo this
        self._set_lock(True)
        self._set_duty(pilot.duty_for(self.limit_da()) or 100)
        log.info("gun", "session %s starting (mode %d)" % (trade, self.s["mode"]))
        return OK, None

    def _refusal(self, body):
        if body["gun_no"] != 1:
            return START_FAILED, 0
        if self.s:
            return BUSY, 0
        if self.faults.code():
            return START_FAULT, self.faults.code()
        if self.pilot.state not in "BCD":
            return NOT_CONNECTED, 0
        if not self.tariff.model:
            return START_FAILED, NO_FEE_MODEL
        mode, limit = body["charge_mode"], body.get("limit_data", 0)
        if mode in LIMITED and limit <= 0 or \
                mode == 15 and pilot.duty_for(limit * 1000 // self.nominal_v) is None:
            return START_FAILED, BAD_LIMIT
        if not self.board.time_trusted():
            return START_FAILED, NO_TIME
        if self.journal.full():
            return START_FAILED, JOURNAL_FULL
        if not self.board.leak_selftest():
            self.faults.trip(RCD_SELFTEST)
            return START_FAULT, RCD_SELFTEST
        return 0, 0

    def _start_result(self, trade, result, fault):
        self.send("startChaResEvt", {"gun_no": 1, "pre_trade_no": trade,
                                     "start_result": result, "fault_code": fault})

    def _remember(self, trade, result, fault, stop):
        self.recent = [r for r in self.recent if r[0] != trade][-(RECENT - 1):]
        self.recent.append((trade, result, fault, stop))

    def _begin(self, now):
        s = self.s
        s["start_ms"] = self.board.now_ms()
        s["sum_start"] = self.register()
        s["tick"] = now
        self._to(CHARGING)
        self._start_result(s["trade"], START_OK, 0)
        self.checkpoint()
        log.info("gun", "session %s charging" % s["trade"])

    def _abort(self, result, fault, stop=0):
        """A start that never reached charging: no energy, no order."""
        trade = self.s["trade"]
        self._release()
        self.s = None
        self._remember(trade, result, fault, stop)
        self._start_result(trade, result, fault)
        log.warn("gun", "start of %s failed: %d/%d" % (trade, result, fault))
        self._to(PLUGGED if self.pilot.state in "BCD" else IDLE)

    def stop(self, body):
        """stopChargeSrv: answer with stopChaResEvt; return (reply result, reason)."""
        trade = body["pre_trade_no"]
        if self.s and self.s["trade"] == trade:
            reason = body["stop_reason"]
            code = self.cfg["stop_codes"].get(str(reason), BY_PLATFORM)
            if self.state == STARTING:
                self._abort(START_FAILED, 0, code)
                self._stop_result(trade, OK, 0, code)
            else:
                self.end(code, by_platform=True)
            return OK, None
        for rec in self.recent:
            if rec[0] == trade:
                self._stop_result(trade, FAIL, 11, rec[3])
                return FAIL, "already stopped"
        self._stop_result(trade, FAIL, 10, 0)
        return FAIL, "unknown pre_trade_no"

    def _stop_result(self, trade, result, why, code):
        self.send("stopChaResEvt", {"gun_no": 1, "pre_trade_no": trade, "stop_result": result,
                                    "stop_fail_reson": why, "result_code": code})

    def on_fault(self, code):
        """Protection tripped (the relay is already open): end what is running."""
        if self.state == STARTING:
            self._abort(START_FAULT, code, code)
        elif self.state == CHARGING:
            self.end(code)
        self._set_duty(self.faults.idle_duty())

    def local_stop(self):
        """The stop button, the bench or the REPL: stop code 1001."""
        if self.state == STARTING:
            self._abort(START_FAILED, 0, AT_PILE)
        elif self.state == CHARGING:
            self.end(AT_PILE)

    # --- the end of a session -------------------------------------------------------------
    def _release(self):
        """Relay open now, CP back to idle; the lock follows once the contacts are open."""
        self._set_relay(False)
        self._set_duty(self.faults.idle_duty())
        self._unlock_pending = True

    def end(self, code, by_platform=False):
        """Close the running session with stop code `code`: relay open, order journaled."""
        s = self.s
        self._release()
        s["end_ms"] = self.board.now_ms()
        if by_platform:
            self._stop_result(s["trade"], OK, 0, code)
        order = self.order(s, code)
        self.journal.add(order)
        store.remove(FILE)
        self.s = None
        self._remember(s["trade"], START_OK, 0, code)
        log.info("gun", "session %s ended: %d, %d Wh" % (s["trade"], code, order["total_elect"]))
        self._to(FINISHED if self.pilot.state in "BCD" else IDLE)

    def order(self, s, code):
        body = {"gun_no": 1, "pre_trade_no": s["trade"],
                "charge_start_time": str(s["start_ms"] // 1000),
                "charge_endTime": str(s["end_ms"] // 1000),
                "ele_model_id": s["model"]["id"], "time_div_type": 10,
                "sum_start": str(s["sum_start"] // 1000),
                "sum_end": str((s["sum_start"] + sum(s["e"])) // 1000),
                "start_soc": 0, "end_soc": 0, "reason": code}
        bill = fees.bill(s["e"], s["model"])
        del bill["total_cost"]
        body.update(bill)
        return body

    def bill(self):
        return fees.bill(self.s["e"], self.s["model"])

    # --- energy and persistence -----------------------------------------------------------
    def register(self):
        return self.meter_register()

    meter_register = None   # set by the app: the cumulative register in mWh

    def add_energy(self, mwh):
        """Energy measured while the relay was closed, in the band in force now."""
        if self.s is None or self.state != CHARGING or mwh <= 0:
            return
        minute = fees.local_minute(self.board.now_ms(), self.cfg["tz_min"])
        self.s["e"][fees.band_at(self.s["model"], minute)] += mwh
        self.s["last_ms"] = self.board.now_ms()
        if sum(self.s["e"]) - self.s.get("saved_e", 0) >= 20000:
            self.checkpoint()

    def checkpoint(self):
        s = self.s
        s["saved"] = self.board.ticks_ms()
        s["saved_e"] = sum(s["e"])
        s["last_ms"] = self.board.now_ms()
        store.save(FILE, {k: s[k] for k in ("trade", "mode", "limit", "model", "e", "chg_ms",
                                            "start_ms", "sum_start", "last_ms")})

    def recover(self):
        """At boot: a checkpoint left by a power cut or reset becomes an order (stop code
        power_loss_reason, the last checkpoint's end time) unless the journal already has
        that session; the checkpoint goes only once the order is journaled.  The journal's
        latest sessions are remembered, so a repeated start or stop is only answered."""
        order = None
        s = store.load(FILE)
        if s is not None:
            try:
                if not self.journal.has(s["trade"]):
                    s["end_ms"] = s["last_ms"]
                    order = self.order(s, self.cfg["power_loss_reason"])
                    self.journal.add(order)
                    log.warn("gun", "session %s closed after restart (%d Wh)"
                             % (s["trade"], order["total_elect"]))
            except Exception as e:
                log.error("gun", "session checkpoint unusable (%r): %s" % (e, repr(s)[:200]))
            store.remove(FILE)
        for d in self.journal.done + [[o["pre_trade_no"], o["reason"]]
                                      for o in self.journal.orders]:
            self._remember(d[0], START_OK, 0, d[1])
        return order

    # --- telemetry ------------------------------------------------------------------------
    def telemetry(self):
        s = self.s
        body = {"gun_no": 1, "pre_trade_no": s["trade"] if s else "", "trade_no": " ",
                "work_status": self.work_status(),
                "con_status": 10 if self.pilot.state in "BCD" else 11,
                "e_lock_status": 11 if self.board.lock_feedback() else 10,
                "out_relay_status": 11 if self.board.relay_feedback() else 10,
                "pwm_duty_radio": self.duty if 0 < self.duty < 100 else 0,
                "ac_vol_a": self.v_mv // 100, "ac_cur_a": self.i_ma // 100,
                "real_power": self.p_mw // 100000,
                "gun_temp": self._temp(),
                "chg_time": s["chg_ms"] // 60000 if s else 0}
        bill = fees.bill(s["e"] if s else [0, 0, 0, 0], s["model"] if s else ZERO_MODEL)
        for key in ("total_elect", "sharp_elect", "peak_elect", "flat_elect", "valley_elect",
                    "total_cost", "total_power_cost", "total_serv_cost"):
            body[key] = bill[key]
        return body

    def _temp(self):
        t = self.board.gun_temp_c()
        return 500 if t is None else int(t * 10) + 500
