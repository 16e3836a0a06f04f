"""pile.session: the charge state machine, every state x every event (runs in MicroPython).

The Charger runs against the real simulated board (hal.sim.Board, no bench port, an
accelerated clock), the real Protection, Tariff and Journal, with storage in a fresh
/tmp directory; send() is a recorder.  Each row of a table: from a state, one event,
then the expected work_status, the events the charger sent (in order), and the relay
and lock as the board reports them.  After every row the board's safety recorder must
hold no violation.

Sent events are written short: "start R/F" startChaResEvt start_result/fault_code,
"stop R/W/C" stopChaResEvt stop_result/stop_fail_reson/result_code, "order C"
orderUpdateEvt reason.
"""
import json
import os
import random
import time

from hal import sim
from pile import config, log, store
from pile.orders import Journal
from pile.protection import Protection
from pile.session import Charger
from pile.tariff import Tariff
from kit import fresh_dir, rm_tree

log.echo = False
with open("boards/sim/board.json") as f:
    BOARD = json.load(f)
MODEL = {"ele_model_id": "M1", "time_num": 3, "time_seg": ["0000", "0800", "1200"],
         "seg_flag": [13, 11, 12], "charge_fee": [10000, 50000, 20000, 10000],
         "serviceFee": [20000, 20000, 20000, 10000]}
SEED_FIELDS = ("pwm_duty_radio ac_cur_a ac_vol_a chg_time con_status e_lock_status "
               "flat_elect gun_no gun_temp out_relay_status peak_elect pre_trade_no "
               "real_power sharp_elect total_cost total_elect total_power_cost "
               "total_serv_cost trade_no valley_elect work_status").split()
SPEED = 50
START_TIMEOUT_S, PAUSE_S = 8, 3


class Rig:
    def __init__(self, model=True, speed=SPEED, **over):
        self.dir = fresh_dir()
        store.root = self.dir
        self.board = sim.Board(BOARD, {"storage": self.dir, "speed": speed})
        cfg = dict(config.DEFAULTS)
        cfg.update(start_timeout_s=START_TIMEOUT_S, vehicle_pause_s=PAUSE_S,
                   offline_charge_s=3)
        cfg.update(over)
        self.cfg = cfg
        self.sent = []
        self.tariff = Tariff()
        if model:
            assert self.tariff.update(MODEL) is None
        self.journal = Journal(self.send, cfg, self.board.ticks_ms)
        self.prot = Protection(self.board, BOARD)
        self.ch = Charger(self.board, cfg, BOARD, self.tariff, self.journal, self.send,
                          self.prot)
        self.ch.meter_register = lambda: 5000000
        self.prot.charger = self.ch
        self.replies = []

    def close(self):
        self.board.close()
        rm_tree(self.dir)

    def send(self, cmd, body, qos=1, status=0, item_id=None, again=True):
        self.sent.append((cmd, body))
        return len(self.sent)

    def short(self):
        out = []
        for cmd, b in self.sent:
            if cmd == "startChaResEvt":
                out.append("start %d/%d" % (b["start_result"], b["fault_code"]))
            elif cmd == "stopChaResEvt":
                out.append("stop %d/%d/%d" % (b["stop_result"], b["stop_fail_reson"],
                                              b["result_code"]))
            elif cmd == "orderUpdateEvt":
                out.append("order %d" % b["reason"])
            else:
                out.append(cmd)
        return out

    # --- time: one control round like app.control, then ~1 ms of real time
    def tick(self):
        self.prot.check()
        if self.board.stop_button():
            self.ch.local_stop()
        self.ch.tick()

    def run(self, ms):
        t0 = self.board.ticks_ms()
        while time.ticks_diff(self.board.ticks_ms(), t0) < ms:
            self.tick()
            time.sleep_ms(1)
        self.tick()

    def until(self, pred, ms=10000, what="condition"):
        t0 = self.board.ticks_ms()
        while not pred():
            assert time.ticks_diff(self.board.ticks_ms(), t0) < ms, \
                "%s not reached; ws %d cp %s sent %s\n%s" % (
                    what, self.ch.work_status(), self.ch.pilot.state, self.short(),
                    "\n".join(log.lines()[-15:]))
            self.tick()
            time.sleep_ms(1)

    # --- the world and the platform
    def bench(self, cmd, **kw):
        kw["cmd"] = cmd
        r = self.board.bench(kw)
        assert r["ok"], r

    def start(self, trade="T1", mode=10, limit=0, gun=1):
        r = self.ch.start({"gun_no": gun, "pre_trade_no": trade, "charge_mode": mode,
                           "limit_data": limit, "start_type": 10, "start_mode": 0,
                           "insert_gun_time": 1000})
        self.replies.append(r)
        return r

    def stop(self, trade="T1", reason=10):
        r = self.ch.stop({"gun_no": 1, "pre_trade_no": trade, "stop_reason": reason})
        self.replies.append(r)
        return r

    def relay(self):
        return self.board.relay_feedback()

    def lock(self):
        return self.board.lock_feedback()

    def ws(self):
        return self.ch.work_status()

    def safe(self, what=""):
        st = self.board.state()
        assert not st["violations"], (what, st["violations"])


# --- getting to each state --------------------------------------------------------------


def to_idle(r):
    r.run(200)
    assert r.ws() == 10


def to_plugged(r):
    r.bench("plug")
    r.until(lambda: r.ch.state == 11, what="plugged")


def to_starting(r):
    to_plugged(r)
    r.bench("car", want=False)
    r.start("T1")
    r.until(lambda: r.lock() and 0 < r.board.duty < 100, what="starting")
    r.run(200)
    assert r.ws() == 12 and not r.relay() and r.sent == [], (r.ws(), r.sent)


def to_charging(r, trade="T1", mode=10, limit=0):
    to_plugged(r)
    r.start(trade, mode, limit)
    r.until(lambda: r.ch.state == 13, what="charging")
    assert r.short() == ["start 10/0"], r.short()
    assert r.relay() and r.lock()
    del r.sent[:]


def to_finished(r):
    to_charging(r)
    r.stop("T1")
    r.until(lambda: not r.lock(), what="unlocked")
    assert r.ws() == 14, r.ws()
    del r.sent[:]


def to_fault(r):
    to_plugged(r)
    r.bench("fault", name="estop", on=True)
    r.run(200)
    assert r.ws() == 16
    del r.sent[:]


STATES = {"idle": to_idle, "plugged": to_plugged, "starting": to_starting,
          "charging": to_charging, "finished": to_finished, "fault": to_fault}


# --- the events ---------------------------------------------------------------------------

def ev_lock_fail(r):
    """The lock lets go (or never engages) and sticks there."""
    r.bench("fault", name="lock_stuck", on=True)
    r.board.locked = False
    r.run(5000)         # starting: three tries of 1.5 s to lock again


def ev_stop_twice(r):
    r.stop("T1")
    r.run(300)
    r.stop("T1")


EVENTS = {
    "plug": lambda r: r.bench("plug"),
    "unplug": lambda r: r.bench("unplug"),
    "car C": lambda r: r.bench("car", want=True),
    "car B": lambda r: r.bench("car", want=False),
    "start": lambda r: r.start("T1"),
    "start other": lambda r: r.start("T2"),
    "stop": lambda r: r.stop("T1"),
    "stop wrong trade": lambda r: r.stop("X9"),
    "stop twice": ev_stop_twice,
    "local stop": lambda r: r.ch.local_stop(),
    "button": lambda r: r.bench("button"),
    "fault trip": lambda r: r.bench("fault", name="estop", on=True),
    "lock fail": ev_lock_fail,
    "start timeout": lambda r: r.run(START_TIMEOUT_S * 1000 + 1000),
    "vehicle B too long": lambda r: (r.bench("car", want=False), r.run(PAUSE_S * 1000 + 1000)),
    "offline too long": lambda r: (r.ch.set_link(False), r.run(4000)),
}
F, T = False, True

# state, event, work_status, sent, relay, lock
TABLE = (
    ("idle", "plug", 11, [], F, F),
    ("idle", "unplug", 10, [], F, F),
    ("idle", "car C", 10, [], F, F),
    ("idle", "car B", 10, [], F, F),
    ("idle", "start", 10, ["start 13/0"], F, F),
    ("idle", "stop", 10, ["stop 11/10/0"], F, F),
    ("idle", "stop wrong trade", 10, ["stop 11/10/0"], F, F),
    ("idle", "local stop", 10, [], F, F),
    ("idle", "button", 10, [], F, F),
    ("idle", "fault trip", 16, [], F, F),
    ("idle", "lock fail", 10, [], F, F),
    ("idle", "start timeout", 10, [], F, F),
    ("idle", "offline too long", 10, [], F, F),

    ("plugged", "plug", 11, [], F, F),
    ("plugged", "unplug", 10, [], F, F),
    ("plugged", "car C", 11, [], F, F),         # no PWM: the vehicle stays in B
    ("plugged", "car B", 11, [], F, F),
    ("plugged", "start", 13, ["start 10/0"], T, T),
    ("plugged", "stop", 11, ["stop 11/10/0"], F, F),
    ("plugged", "stop wrong trade", 11, ["stop 11/10/0"], F, F),
    ("plugged", "local stop", 11, [], F, F),
    ("plugged", "button", 11, [], F, F),
    ("plugged", "fault trip", 16, [], F, F),
    ("plugged", "lock fail", 11, [], F, F),
    ("plugged", "start timeout", 11, [], F, F),
    ("plugged", "vehicle B too long", 11, [], F, F),

    ("starting", "plug", 12, [], F, T),
    ("starting", "unplug", 10, ["start 13/0"], F, F),
    ("starting", "car C", 13, ["start 10/0"], T, T),
    ("starting", "car B", 12, [], F, T),
    ("starting", "start", 12, [], F, T),        # same trade: the result comes when known
    ("starting", "start other", 12, ["start 14/0"], F, T),
    ("starting", "stop", 11, ["start 15/0", "stop 10/0/1009"], F, F),
    ("starting", "stop wrong trade", 12, ["stop 11/10/0"], F, T),
    ("starting", "stop twice", 11, ["start 15/0", "stop 10/0/1009", "stop 11/11/1009"], F, F),
    ("starting", "local stop", 11, ["start 15/0"], F, F),
    ("starting", "button", 11, ["start 15/0"], F, F),
    ("starting", "fault trip", 16, ["start 11/3003"], F, F),
    ("starting", "lock fail", 16, ["start 11/3011"], F, F),
    ("starting", "start timeout", 11, ["start 12/0"], F, F),
    ("starting", "vehicle B too long", 12, [], F, T),     # B is where it waits anyway
    ("starting", "offline too long", 12, [], F, T),

    ("charging", "plug", 13, [], T, T),
    ("charging", "unplug", 10, ["order 1008"], F, F),
    ("charging", "car C", 13, [], T, T),
    ("charging", "car B", 13, [], F, T),        # a pause: relay open, still locked
    ("charging", "start", 13, ["start 10/0"], T, T),
    ("charging", "start other", 13, ["start 14/0"], T, T),
    ("charging", "stop", 14, ["stop 10/0/1009", "order 1009"], F, F),
    ("charging", "stop wrong trade", 13, ["stop 11/10/0"], T, T),
    ("charging", "stop twice", 14, ["stop 10/0/1009", "order 1009", "stop 11/11/1009"], F, F),
    ("charging", "local stop", 14, ["order 1001"], F, F),
    ("charging", "button", 14, ["order 1001"], F, F),
    ("charging", "fault trip", 16, ["order 3003"], F, F),
    ("charging", "lock fail", 16, ["order 3011"], F, F),
    ("charging", "start timeout", 13, [], T, T),
    ("charging", "vehicle B too long", 14, ["order 1010"], F, F),
    ("charging", "offline too long", 14, ["order 1006"], F, F),

    ("finished", "plug", 14, [], F, F),
    ("finished", "unplug", 10, [], F, F),
    ("finished", "car C", 14, [], F, F),
    ("finished", "car B", 14, [], F, F),
    ("finished", "start", 14, ["start 10/0"], F, F),    # the old trade: answered again
    ("finished", "start other", 13, ["start 10/0"], T, T),
    ("finished", "stop", 14, ["stop 11/11/1009"], F, F),
    ("finished", "stop wrong trade", 14, ["stop 11/10/0"], F, F),
    ("finished", "local stop", 14, [], F, F),
    ("finished", "button", 14, [], F, F),
    ("finished", "fault trip", 16, [], F, F),
    ("finished", "lock fail", 14, [], F, F),
    ("finished", "start timeout", 14, [], F, F),

    ("fault", "plug", 16, [], F, F),
    ("fault", "unplug", 16, [], F, F),
    ("fault", "car C", 16, [], F, F),
    ("fault", "car B", 16, [], F, F),
    ("fault", "start", 16, ["start 11/3003"], F, F),
    ("fault", "stop", 16, ["stop 11/10/0"], F, F),
    ("fault", "stop wrong trade", 16, ["stop 11/10/0"], F, F),
    ("fault", "local stop", 16, [], F, F),
    ("fault", "button", 16, [], F, F),
    ("fault", "fault trip", 16, [], F, F),
    ("fault", "lock fail", 16, [], F, F),
    ("fault", "start timeout", 16, [], F, F),
)


def _rows(state):
    failures = []
    for row in TABLE:
        if row[0] != state:
            continue
        _, event, ws, sent, relay, lock = row
        r = Rig()
        try:
            STATES[state](r)
            EVENTS[event](r)
            r.run(600)
            got = (r.ws(), r.short(), r.relay(), r.lock())
            if got != (ws, sent, relay, lock):
                failures.append("%s + %s: got %s, want %s" % (state, event, got,
                                                             (ws, sent, relay, lock)))
            r.safe(state + " + " + event)
        finally:
            r.close()
    assert not failures, "\n".join(failures)


def test_idle():
    _rows("idle")


def test_plugged():
    _rows("plugged")


def test_starting():
    _rows("starting")


def test_charging():
    _rows("charging")


def test_finished():
    _rows("finished")


def test_fault():
    _rows("fault")


def test_table_covers_every_state_and_event():
    for state in STATES:
        seen = [row[1] for row in TABLE if row[0] == state]
        assert len(seen) >= 12, (state, len(seen))
        for ev in ("plug", "unplug", "car C", "car B", "start", "stop", "stop wrong trade",
                   "local stop", "fault trip", "lock fail", "start timeout"):
            assert ev in seen, (state, ev)


# --- start refused: every cause -----------------------------------------------------------

def _no_time(r):
    r.board._trusted = False


def _journal_full(r):
    r.journal.orders = [{"pre_trade_no": "O%d" % k} for k in range(32)]


REFUSALS = (
    # what, prepare the plugged rig, start kwargs, start_result/fault_code, work_status
    ("not connected", lambda r: (r.bench("unplug"), r.run(300)), {}, "start 13/0", 10),
    ("faulted", lambda r: (r.bench("fault", name="estop", on=True), r.run(300)), {},
     "start 11/3003", 16),
    ("no fee model", lambda r: setattr(r.tariff, "model", None), {}, "start 15/6000", 11),
    ("wrong gun", None, {"gun": 2}, "start 15/0", 11),
    ("amount limit 0", None, {"mode": 11, "limit": 0}, "start 15/6003", 11),
    ("energy limit 0", None, {"mode": 12, "limit": 0}, "start 15/6003", 11),
    ("time limit 0", None, {"mode": 14, "limit": 0}, "start 15/6003", 11),
    ("power under 6 A", None, {"mode": 15, "limit": 10}, "start 15/6003", 11),
    ("clock unknown", _no_time, {}, "start 15/6001", 11),
    ("journal full", _journal_full, {}, "start 15/6002", 11),
    ("RCD self-test fails", lambda r: r.bench("fault", name="rcd_dead", on=True), {},
     "start 11/4006", 16),
)


def test_start_refused():
    failures = []
    for what, prep, kw, want, ws in REFUSALS:
        r = Rig()
        try:
            to_plugged(r)
            if prep:
                prep(r)
            res = r.start("T1", **kw)
            r.run(400)
            got = (r.short(), r.ws(), r.relay(), r.lock(), res[0])
            if got != ([want], ws, False, False, 11):
                failures.append("%s: got %s" % (what, got))
            # a repeat is answered the same, and still starts nothing
            del r.sent[:]
            r.start("T1", **kw)
            r.run(200)
            if r.short() != [want] or r.ch.s is not None:
                failures.append("%s repeated: got %s" % (what, r.short()))
            r.safe(what)
        finally:
            r.close()
    assert not failures, "\n".join(failures)


def test_start_while_charging_busy_and_repeat():
    r = Rig()
    try:
        to_charging(r)
        assert r.start("T2")[0] == 11
        assert r.start("T1")[0] == 10
        r.run(300)
        assert r.short() == ["start 14/0", "start 10/0"], r.short()
        assert r.ch.s["trade"] == "T1" and r.ws() == 13
        r.safe()
    finally:
        r.close()


def test_lock_never_engages():
    r = Rig()
    try:
        to_plugged(r)
        r.bench("fault", name="lock_stuck", on=True)
        r.start("T1")
        r.until(lambda: r.sent, ms=8000, what="start result")
        r.run(300)
        assert r.short() == ["start 11/3011"], r.short()
        assert r.ws() == 16 and not r.relay() and not r.lock()
        # the relay never closed without the lock
        assert not [e for e in r.board.events() if e["ev"] == "relay_set" and e["v"]]
        # 3011 clears once the vehicle is unplugged: +12 V kept so the unplug is seen
        r.bench("fault", name="lock_stuck", on=False)
        assert r.board.duty == 100
        r.bench("unplug")
        r.until(lambda: r.ws() == 10, ms=3000, what="cleared on unplug")
        r.safe()
    finally:
        r.close()


# --- stops: limits and vehicle -------------------------------------------------------------

def _feed(r, mwh):
    """Energy measured while charging, as the metering task adds it."""
    def step():
        r.ch.add_energy(mwh)
        return r.ch.state != 13
    r.until(step, ms=600000, what="limit")


LIMITS = (
    # mode, limit_data, energy per round (mWh), stop code
    (11, 10, 5000, 1005),       # 0.10 yuan
    (12, 1, 10000, 1004),       # 0.1 kWh
    (14, 1, 0, 1003),           # 1 minute
)


def test_limits():
    for mode, limit, mwh, code in LIMITS:
        r = Rig(speed=200)
        try:
            to_charging(r, "L%d" % mode, mode, limit)
            t0 = r.board.ticks_ms()
            _feed(r, mwh)
            r.run(300)
            assert r.short() == ["order %d" % code], (mode, r.short())
            order = r.sent[-1][1]
            if mode == 11:
                cost = order["total_power_cost"] + order["total_serv_cost"]
                assert 1000 <= cost < 1000 + 5 * 70, (mode, cost)
            if mode == 12:
                assert 100000 // 1000 <= order["total_elect"] <= 110000 // 1000, order
            if mode == 14:
                dt = time.ticks_diff(r.board.ticks_ms(), t0)
                assert 60000 <= dt < 70000, dt
            assert r.ws() == 14 and not r.relay() and not r.lock()
            r.safe(mode)
        finally:
            r.close()


def test_unlimited_modes_run_on():
    # 10 unlimited and 13 SOC (unknown on AC: no limit) keep charging
    for mode in (10, 13):
        r = Rig()
        try:
            to_charging(r, "U", mode, 50)
            for _ in range(20):
                r.ch.add_energy(100000)
                r.tick()
            r.run(2000)
            assert r.ws() == 13 and r.relay() and r.sent == [], (mode, r.short())
        finally:
            r.close()


def test_vehicle_pause_resumes():
    r = Rig()
    try:
        to_charging(r)
        r.bench("car", want=False)
        r.run(PAUSE_S * 1000 // 2)
        assert r.ws() == 13 and not r.relay() and r.lock()
        assert 0 < r.board.duty < 100          # PWM stays on: the vehicle may come back
        r.bench("car", want=True)
        r.run(500)
        assert r.ws() == 13 and r.relay() and r.sent == []
        # the pause timer starts again at the next pause
        r.bench("car", want=False)
        r.run(PAUSE_S * 1000 // 2)
        r.bench("car", want=True)
        r.run(PAUSE_S * 1000 // 2 + 500)
        assert r.ws() == 13 and r.relay() and r.sent == []
        lat = [us for what, us in r.board.latencies if what == "left_cd"]
        assert len(lat) == 2 and max(lat) < 100000, lat
        r.safe()
    finally:
        r.close()


def test_relay_opens_fast_then_unlocks():
    r = Rig()
    try:
        to_charging(r)
        n0 = r.board._seq
        r.bench("unplug")
        r.run(600)
        lat = [us for what, us in r.board.latencies if what == "left_cd"]
        assert lat and lat[-1] < 100000, lat
        evs = [(e["ev"], e["v"]) for e in r.board.events(n0)
               if e["ev"] in ("relay_set", "contacts", "lock_set")]
        assert evs[:3] == [("relay_set", False), ("contacts", False), ("lock_set", False)], evs
        assert r.short() == ["order 1008"]
        r.safe()
    finally:
        r.close()


def test_stop_code_by_stop_reason():
    for reason, code in ((10, 1009), (11, 1012), (12, 1013), (13, 1002), (14, 1002),
                         (99, 1002)):
        r = Rig()
        try:
            to_charging(r)
            assert r.stop("T1", reason) == (10, None)
            r.run(300)
            assert r.short() == ["stop 10/0/%d" % code, "order %d" % code], r.short()
        finally:
            r.close()


def test_service_replies():
    r = Rig()
    try:
        to_plugged(r)
        assert r.start("T1") == (10, None)
        r.until(lambda: r.ch.state == 13)
        assert r.start("T1") == (10, None)
        assert r.start("T2")[0] == 11
        assert r.stop("X")[0] == 11
        assert r.stop("T1") == (10, None)
        assert r.stop("T1")[0] == 11
    finally:
        r.close()


# --- the control pilot output ----------------------------------------------------------------

def test_duty_from_limit():
    r = Rig()
    try:
        r.run(200)
        assert r.board.duty == 100              # idle: +12 V
        to_charging(r)
        assert r.board.duty == 53 and r.ch.limit_da() == 320
        r.bench("temp", c=75)                   # connector warm: derated to 16 A
        r.until(lambda: r.board.duty == 26, ms=5000, what="derating")
        assert r.ch.limit_da() == 160 and r.relay()
        r.bench("temp", c=25)
        r.until(lambda: r.board.duty == 53, ms=15000, what="derating over")
        r.stop("T1")
        r.run(300)
        assert r.board.duty == 100
        r.bench("fault", name="estop", on=True)
        r.run(300)
        assert r.board.duty == 0                # unavailable: -12 V (F)
        assert r.ch.pilot.state == "B"          # not read while the pile drives -12 V
        r.bench("fault", name="estop", on=False)
        r.until(lambda: r.ws() == 14, ms=5000, what="estop cleared")
        assert r.board.duty == 100
        r.safe()
    finally:
        r.close()
    for limit, da, duty in ((35, 159, 26), (70, 318, 53), (100, 320, 53), (14, 63, 10)):
        r = Rig()
        try:
            to_charging(r, "P", 15, limit)
            assert (r.ch.limit_da(), r.board.duty) == (da, duty), (limit, r.ch.limit_da())
        finally:
            r.close()


def test_leakage_clears_only_after_unplug():
    r = Rig()
    try:
        to_charging(r)
        r.bench("fault", name="leakage", on=True)
        r.run(300)
        assert r.short() == ["order 4004"] and r.ws() == 16 and not r.relay()
        r.bench("fault", name="leakage", on=False)
        r.run(2000)
        assert r.ws() == 16
        assert r.board.duty == 100              # +12 V so that the unplug can be seen
        r.bench("unplug")
        r.until(lambda: r.ws() == 10, ms=3000, what="cleared")
        r.safe()
    finally:
        r.close()


def test_start_timeout_default():
    assert config.DEFAULTS["start_timeout_s"] == 120


# --- telemetry -----------------------------------------------------------------------------

def test_telemetry_fields():
    r = Rig()
    try:
        t = r.ch.telemetry()
        assert sorted(t) == sorted(SEED_FIELDS), sorted(set(t) ^ set(SEED_FIELDS))
        assert (t["work_status"], t["con_status"], t["e_lock_status"],
                t["out_relay_status"], t["pwm_duty_radio"]) == (10, 11, 10, 10, 0), t
        assert t["trade_no"] == " " and t["gun_temp"] == 750
        to_charging(r)
        r.ch.v_mv, r.ch.i_ma, r.ch.p_mw = 230100, 32000, 7363200
        r.ch.add_energy(123456)
        t = r.ch.telemetry()
        assert (t["work_status"], t["con_status"], t["e_lock_status"],
                t["out_relay_status"], t["pwm_duty_radio"]) == (13, 10, 11, 11, 53), t
        assert (t["ac_vol_a"], t["ac_cur_a"], t["real_power"]) == (2301, 320, 73), t
        assert t["pre_trade_no"] == "T1" and t["total_elect"] == 123
        assert t["total_cost"] == t["total_power_cost"] + t["total_serv_cost"] > 0
        for k in SEED_FIELDS:
            assert type(t[k]) is (str if k in ("pre_trade_no", "trade_no") else int), k
    finally:
        r.close()


def test_new_start_right_after_stop_keeps_the_lock():
    # the old session's pending unlock must not release the new session's lock
    r = Rig()
    try:
        to_charging(r)
        n0 = r.board._seq
        r.stop("T1")
        r.start("T2")
        r.run(1000)
        assert r.short() == ["stop 10/0/1009", "order 1009", "start 10/0"], r.short()
        assert r.ws() == 13 and r.relay() and r.lock() and r.ch.lock
        r.bench("car", want=False)          # a pause: relay open, the lock must hold
        r.run(1000)
        assert r.ws() == 13 and not r.relay() and r.lock()
        assert not [e for e in r.board.events(n0) if e["ev"] == "lock_set"]
        r.safe()
    finally:
        r.close()


def test_vehicle_in_d_charges():
    r = Rig()
    try:
        r.bench("car", vent=True)
        to_charging(r)
        assert r.ch.pilot.state == "D" and r.relay()
        r.bench("car", vent=False)             # D -> C: no interruption
        r.run(500)
        assert r.ch.pilot.state == "C" and r.relay() and r.ws() == 13
        r.safe()
    finally:
        r.close()
