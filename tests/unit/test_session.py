"""pile.gun: the charge state machine, every state x every event (runs in MicroPython).

Each case runs the real application (kit.Pile: pile.app.App with its real Gun,
Protection, Metering, Tariff, Journal and Reports) on the simulated board with a stepped
clock: Pile.step(ms) runs the app's own control / measure / report rounds.  Starts and
stops arrive as platform services through the app's real downlink path (Pile.deliver:
decode, handler, startChargeSrvReply / stopChargeSrvReply with result 10 / 11), and
what the pile publishes is read back from Pile.sent.  Storage is a fresh /tmp directory
and the wall clock is fixed at 09:00 local time (the fee model's peak band).

Each row of a table: from a state, one event, then the expected work_status, the events
the pile sent (in order), and the relay and lock as the board reports them.  After every
row the board's safety recorder must hold no violation.

Sent events are written short: "start R/F" startChaResEvt start_result/fault_code,
"stop R/W/C" stopChaResEvt stop_result/stop_fail_reson/result_code, "order C"
orderUpdateEvt reason.  Telemetry (acGunRunIty), fault reports, the connect reports and
the service replies are left out of that list (the replies are checked on their own).
"""
import time

from kit import BOARD, COMPACT, Pile, rm_tree
from pile import config, fees, journal

START_TIMEOUT_S, PAUSE_S, OFFLINE_S = 8, 3, 3
EPOCH_MS = 1704070800000        # 2024-01-01 01:00 UTC: 09:00 at UTC+8, the peak band
PEAK = 1
SEED_FIELDS = ("pwm_duty_radio ac_cur_a ac_vol_a chg_time con_status e_lock_status "
               "flat_elect gun_no gun_temp out_relay_status peak_elect pre_trade_no "
               "real_power sharp_elect total_cost total_elect total_power_cost "
               "total_serv_cost trade_no valley_elect work_status").split()
JOURNALED = ("startChaResEvt", "stopChaResEvt", "orderUpdateEvt")
UNLISTED = ("acGunRunIty", "totalFaultEvt", "firmwareEvt", "verInfoEvt")


def rig(**over):
    """The pile with the old rig's short timeouts (and any other overrides); the
    contactor's minimum open time (anti-chatter) is off unless a test says otherwise."""
    kw = dict(start_timeout_s=START_TIMEOUT_S, vehicle_pause_s=PAUSE_S,
              offline_charge_s=OFFLINE_S, epoch_ms=EPOCH_MS, relay_min_open_s=0)
    kw.update(over)
    return Pile(**kw)


def close(p):
    p.close()
    rm_tree(p.dir)


_sid = [5000]


def _service(p, cmd, body):
    """Deliver a service; return its reply (result, reason or None)."""
    _sid[0] += 1
    sid = _sid[0]
    p.deliver(cmd, body, sid)
    got = [b for c, b, s in p.sent if c == cmd + "Reply" and s == sid]
    assert len(got) == 1, (cmd, sid, got)
    b = got[0]
    if b["result"] == 10:
        assert "reason" not in b, b
    return b["result"], b.get("reason")


def start(p, trade="T1", mode=10, limit=0, gun=1):
    return _service(p, "startChargeSrv", {
        "gun_no": gun, "pre_trade_no": trade, "charge_mode": mode, "limit_data": limit,
        "start_type": 10, "start_mode": 0, "insert_gun_time": 1000})


def stop(p, trade="T1", reason=10):
    return _service(p, "stopChargeSrv", {"gun_no": 1, "pre_trade_no": trade,
                                         "stop_reason": reason})


def short(p):
    out = []
    for cmd, b, _ in p.sent:
        if cmd == "startChaResEvt":
            out.append("start %d/%d" % (b["start_result"], b["fault_code"]))
        elif cmd == "stopChaResEvt":
            out.append("stop %d/%d/%d" % (b["stop_result"], b["stop_fail_reson"],
                                          b["result_code"]))
        elif cmd == "orderUpdateEvt":
            out.append("order %d" % b["reason"])
        elif cmd not in UNLISTED and not cmd.endswith("Reply"):
            out.append(cmd)
    return out


def clear(p):
    """The platform acknowledges every journaled event so far; forget what was sent."""
    for cmd, _, sid in list(p.sent):
        if cmd in JOURNALED:
            p.ack(sid)
    del p.sent[:]


def ws(p):
    return p.gun.work_status()


def relay(p):
    return p.board.relay_feedback()


def lock(p):
    return p.board.lock_feedback()


def safe(p, what=""):
    v = p.board.state()["violations"]
    assert not v, (what, v)


def telemetry(p):
    """The acGunRunIty body the pile publishes now (its reports' own status())."""
    n = len(p.sent)
    p.app.reports.status()
    got = [b for c, b, _ in p.sent[n:] if c == "acGunRunIty"]
    assert len(got) == 1, p.sent[n:]
    return got[0]


# --- getting to each state --------------------------------------------------------------

def to_idle(p):
    p.step(200)
    assert ws(p) == 10


def to_plugged(p):
    p.bench("plug")
    p.until(lambda: p.gun.state == 11, what="plugged")


def to_starting(p):
    to_plugged(p)
    p.bench("car", want=False)
    assert start(p, "T1") == (10, None)
    p.until(lambda: lock(p) and 0 < p.board.duty < 100, what="starting")
    p.step(200)
    assert ws(p) == 12 and not relay(p) and short(p) == [], (ws(p), short(p))
    clear(p)


def to_charging(p, trade="T1", mode=10, limit=0):
    to_plugged(p)
    assert start(p, trade, mode, limit) == (10, None)
    p.until(lambda: p.gun.state == 13, what="charging")
    assert short(p) == ["start 10/0"], short(p)
    assert relay(p) and lock(p)
    clear(p)


def to_finished(p):
    to_charging(p)
    assert stop(p, "T1") == (10, None)
    p.until(lambda: not lock(p), what="unlocked")
    assert ws(p) == 14, ws(p)
    clear(p)


def to_fault(p):
    to_plugged(p)
    p.bench("fault", name="estop", on=True)
    p.step(200)
    assert ws(p) == 16
    clear(p)


STATES = {"idle": to_idle, "plugged": to_plugged, "starting": to_starting,
          "charging": to_charging, "finished": to_finished, "fault": to_fault}


# --- the events ---------------------------------------------------------------------------

def ev_lock_fail(p):
    """The lock lets go (or never engages) and sticks there."""
    p.bench("fault", name="lock_stuck", on=True)
    p.board.locked = False
    p.step(5000)        # starting: three tries of 1.5 s to lock again


def ev_stop_twice(p):
    stop(p, "T1")
    p.step(300)
    stop(p, "T1")


def ev_offline(p):
    """The link is down longer than offline_charge_s; what was journaled meanwhile goes
    out when it is back (a reconnect)."""
    p.link.connected = False
    p.step(OFFLINE_S * 1000 + 1000)
    p.link.connected = True
    p.app.on_connect()


EVENTS = {
    "plug": lambda p: p.bench("plug"),
    "unplug": lambda p: p.bench("unplug"),
    "car C": lambda p: p.bench("car", want=True),
    "car B": lambda p: p.bench("car", want=False),
    "start": lambda p: start(p, "T1"),
    "start other": lambda p: start(p, "T2"),
    "stop": lambda p: stop(p, "T1"),
    "stop wrong trade": lambda p: stop(p, "X9"),
    "stop twice": ev_stop_twice,
    "local stop": lambda p: p.bench("stop"),        # the app's own bench command
    "button": lambda p: p.bench("button"),
    "fault trip": lambda p: p.bench("fault", name="estop", on=True),
    "lock fail": ev_lock_fail,
    "start timeout": lambda p: p.step(START_TIMEOUT_S * 1000 + 1000),
    "vehicle B too long": lambda p: (p.bench("car", want=False), p.step(PAUSE_S * 1000 + 1000)),
    "offline too long": ev_offline,
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
        _, event, want_ws, sent, want_relay, want_lock = row
        p = rig()
        try:
            STATES[state](p)
            EVENTS[event](p)
            p.step(600)
            got = (ws(p), short(p), relay(p), lock(p))
            if got != (want_ws, sent, want_relay, want_lock):
                failures.append("%s + %s: got %s, want %s" % (
                    state, event, got, (want_ws, sent, want_relay, want_lock)))
            safe(p, state + " + " + event)
        finally:
            close(p)
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
    for row in TABLE:
        assert row[0] in STATES and row[1] in EVENTS, row


# --- start refused: every cause -----------------------------------------------------------

def _journal_full(p):
    """22 real ORDER records waiting for their acknowledgement: no room for a session's
    three more."""
    m = COMPACT
    for k in range(22):
        r = [journal.ORDER, "O%d" % k, EPOCH_MS - 600000, EPOCH_MS - 60000, m["id"],
             5000000 + k * 1000, [0, 1000, 0, 0], m["power"], m["service"], 1009]
        assert journal.sound(r) is None, journal.sound(r)
        p.journal.recs.append(r)
    assert p.journal.full() and p.journal.orders() == 22


REFUSALS = (
    # what, pile kwargs, prepare the plugged pile, start kwargs, start_result/fault_code,
    # work_status
    ("not connected", {}, lambda p: (p.bench("unplug"), p.step(300)), {}, "start 13/0", 10),
    ("faulted", {}, lambda p: (p.bench("fault", name="estop", on=True), p.step(300)), {},
     "start 11/3003", 16),
    ("no fee model", {"model": False}, None, {}, "start 15/6000", 11),
    ("wrong gun", {}, None, {"gun": 2}, "start 15/0", 11),
    ("amount limit 0", {}, None, {"mode": 11, "limit": 0}, "start 15/6003", 11),
    ("energy limit 0", {}, None, {"mode": 12, "limit": 0}, "start 15/6003", 11),
    ("time limit 0", {}, None, {"mode": 14, "limit": 0}, "start 15/6003", 11),
    ("power under 6 A", {}, None, {"mode": 15, "limit": 10}, "start 15/6003", 11),
    ("journal full", {}, _journal_full, {}, "start 15/6002", 11),
    ("RCD self-test fails", {}, lambda p: p.bench("fault", name="rcd_dead", on=True), {},
     "start 11/4006", 16),
)


def test_start_refused():
    failures = []
    for what, over, prep, kw, want, want_ws in REFUSALS:
        p = rig(**over)
        try:
            assert (p.app.tariff.model is None) == (over.get("model") is False), what
            to_plugged(p)
            if prep:
                prep(p)
            res = start(p, "T1", **kw)
            p.step(400)
            got = (short(p), ws(p), relay(p), lock(p), res[0])
            if got != ([want], want_ws, False, False, 11) or not res[1]:
                failures.append("%s: got %s, reply %s" % (what, got, res))
            # a repeat gets the same start result again (its reply: 10, taken), and
            # still starts nothing
            del p.sent[:]
            res = start(p, "T1", **kw)
            p.step(200)
            if short(p) != [want] or p.gun.s is not None or res != (10, None):
                failures.append("%s repeated: got %s, reply %s" % (what, short(p), res))
            safe(p, what)
        finally:
            close(p)
    assert not failures, "\n".join(failures)


def test_start_refused_while_the_clock_is_unknown():
    # refused 15/6001; the result waits in the journal (no event goes out stamped with an
    # unknown time) and leaves once the clock is known, once; no service sets the clock
    p = rig(trusted=False)
    try:
        to_plugged(p)
        res = start(p, "T1")
        p.step(400)
        assert res[0] == 11 and ws(p) == 11 and not relay(p) and not lock(p), res
        assert short(p) == [], short(p)
        assert [r[:4] for r in p.journal.recs] == [["S", "T1", 15, 6001]], p.journal.recs
        assert start(p, "T1") == (10, None)           # a repeat: answered, starts nothing
        p.step(200)
        assert short(p) == [] and p.gun.s is None and len(p.journal.recs) == 1
        assert not p.board.time_trusted()
        p.board.set_time_ms(1700000000000)           # e.g. an acknowledgement's time
        p.step(200)
        assert short(p) == ["start 15/6001"], short(p)
        safe(p)
    finally:
        close(p)


def test_start_while_charging_busy_and_repeat():
    p = rig()
    try:
        to_charging(p)
        assert start(p, "T2")[0] == 11
        assert start(p, "T1") == (10, None)
        p.step(300)
        assert short(p) == ["start 14/0", "start 10/0"], short(p)
        assert p.gun.s.trade == "T1" and ws(p) == 13
        safe(p)
    finally:
        close(p)


def test_lock_never_engages():
    p = rig()
    try:
        to_plugged(p)
        n0 = p.board._seq
        p.bench("fault", name="lock_stuck", on=True)
        start(p, "T1")
        p.until(lambda: short(p), ms=8000, what="start result")
        p.step(300)
        assert short(p) == ["start 11/3011"], short(p)
        assert ws(p) == 16 and not relay(p) and not lock(p)
        # the relay never closed without the lock (every event since is still in the ring)
        evs = p.board.events(n0)
        assert evs and evs[0]["n"] == n0, (n0, p.board._seq)
        assert [e for e in evs if e["ev"] == "lock_set" and e["v"]]
        assert not [e for e in evs if e["ev"] == "relay_set" and e["v"]]
        # 3011 clears once the vehicle is unplugged: +12 V kept so the unplug is seen
        p.bench("fault", name="lock_stuck", on=False)
        assert p.board.duty == 100
        p.bench("unplug")
        p.until(lambda: ws(p) == 10, ms=3000, what="cleared on unplug")
        safe(p)
    finally:
        close(p)


# --- stops: limits and vehicle -------------------------------------------------------------

LIMITS = (
    # mode, limit_data, stop code
    (11, 10, 1005),         # 0.10 yuan
    (12, 1, 1004),          # 0.1 kWh
    (14, 1, 1003),          # 1 minute
)


def test_limits():
    """Energy as the board measures it (about 7.3 kW), billed at the peak band."""
    for mode, limit, code in LIMITS:
        p = rig()
        try:
            to_charging(p, "L%d" % mode, mode, limit)
            t0 = p.board.ticks_ms()
            p.until(lambda: p.gun.state != 13, ms=120000, what="limit %d" % mode)
            dt = time.ticks_diff(p.board.ticks_ms(), t0)
            p.step(300)
            assert short(p) == ["order %d" % code], (mode, short(p))
            order = p.events("orderUpdateEvt")[-1][1]
            assert order["pre_trade_no"] == "L%d" % mode
            assert order["total_elect"] == order["peak_elect"] > 0, order
            wh = order["peak_elect"]       # billed at the peak prices: 50 + 20 per Wh
            assert wh * 50 <= order["total_power_cost"] < (wh + 1) * 50, order
            assert wh * 20 <= order["total_serv_cost"] < (wh + 1) * 20, order
            cost = order["total_power_cost"] + order["total_serv_cost"]
            if mode == 11:      # 1000 (0.0001 yuan) reached, by less than one burst and
                # the vehicle's reaction to the PWM going off (ev_react_ms) more
                assert 1000 <= cost < 1000 + 30, (mode, cost)
            if mode == 12:      # 100 Wh reached
                assert 100 <= order["total_elect"] <= 101, order
            if mode == 14:      # one minute of charging, to the step and the vehicle's
                assert 60000 <= dt <= 60000 + 100 + 50, dt      # reaction (ev_react_ms)
                assert int(order["charge_endTime"]) - int(order["charge_start_time"]) == 60, \
                    order
            assert ws(p) == 14 and not relay(p) and not lock(p)
            safe(p, mode)
        finally:
            close(p)


def test_unlimited_modes_run_on():
    # 10 unlimited and 13 SOC (unknown on AC: no limit) keep charging, whatever their
    # limit_data would mean in another mode (50: 0.50 yuan, 5 kWh, 50 min, 5 kW)
    for mode in (10, 13):
        p = rig()
        try:
            to_charging(p, "U", mode, 50)
            p.step(5000)
            s = p.gun.s
            assert s is not None and sum(s.e) > 5000, s and s.e      # measured energy
            for _ in range(20):                                       # and 6 kWh more
                s.add(300000, p.board.now_ms(), 480)
                p.step(10)
            p.step(2000)
            assert ws(p) == 13 and relay(p) and short(p) == [], (mode, short(p))
            assert p.gun.limit_da() == 320 and p.board.duty == 53, p.gun.limit_da()
            safe(p, mode)
        finally:
            close(p)


def test_vehicle_pause_resumes():
    p = rig()
    try:
        to_charging(p)
        p.bench("car", want=False)
        p.step(PAUSE_S * 1000 // 2)
        assert ws(p) == 13 and not relay(p) and lock(p)
        assert 0 < p.board.duty < 100           # PWM stays on: the vehicle may come back
        p.bench("car", want=True)
        p.step(500)
        assert ws(p) == 13 and relay(p) and short(p) == []
        # the pause timer starts again at the next pause
        p.bench("car", want=False)
        p.step(PAUSE_S * 1000 // 2)
        p.bench("car", want=True)
        p.step(PAUSE_S * 1000 // 2 + 500)
        assert ws(p) == 13 and relay(p) and short(p) == []
        lat = [us for what, us in p.board.latencies if what == "left_cd"]
        assert len(lat) == 2 and max(lat) < 100000, lat
        safe(p)
    finally:
        close(p)


def test_relay_opens_fast_then_unlocks():
    p = rig()
    try:
        to_charging(p)
        n0 = p.board._seq
        p.bench("unplug")
        p.step(600)
        lat = [us for what, us in p.board.latencies if what == "left_cd"]
        assert lat and lat[-1] < 100000, lat
        evs = [(e["ev"], e["v"]) for e in p.board.events(n0)
               if e["ev"] in ("relay_set", "contacts", "lock_set")]
        assert evs[:3] == [("relay_set", False), ("contacts", False), ("lock_set", False)], evs
        assert short(p) == ["order 1008"], short(p)
        safe(p)
    finally:
        close(p)


def test_stop_code_by_stop_reason():
    for reason, code in ((10, 1009), (11, 1012), (12, 1013), (13, 1002), (14, 1002),
                         (99, 1002)):
        p = rig()
        try:
            to_charging(p)
            assert stop(p, "T1", reason) == (10, None)
            p.step(300)
            assert short(p) == ["stop 10/0/%d" % code, "order %d" % code], short(p)
        finally:
            close(p)


def test_service_replies():
    p = rig()
    try:
        to_plugged(p)
        assert start(p, "T1") == (10, None)
        p.until(lambda: p.gun.state == 13)
        assert start(p, "T1") == (10, None)
        r = start(p, "T2")
        assert r[0] == 11 and r[1], r
        r = stop(p, "X")
        assert r[0] == 11 and r[1], r
        assert stop(p, "T1") == (10, None)
        r = stop(p, "T1")
        assert r[0] == 11 and r[1], r
        # every reply names the request it answers
        for cmd, b, _ in p.sent:
            if cmd.endswith("SrvReply"):
                assert b["gun_no"] == 1 and b["pre_trade_no"] in ("T1", "T2", "X"), b
    finally:
        close(p)


# --- the control pilot output ----------------------------------------------------------------

def test_duty_from_limit():
    p = rig()
    try:
        p.step(200)
        assert p.board.duty == 100              # idle: +12 V
        to_charging(p)
        assert p.board.duty == 53 and p.gun.limit_da() == 320
        p.bench("temp", c=75)                   # connector warm: derated to 16 A
        p.until(lambda: p.board.duty == 26, ms=5000, what="derating")
        assert p.gun.limit_da() == 160 and relay(p)
        p.bench("temp", c=25)
        p.until(lambda: p.board.duty == 53, ms=15000, what="derating over")
        stop(p, "T1")
        p.step(300)
        assert p.board.duty == 100
        p.bench("fault", name="estop", on=True)
        p.step(300)
        assert p.board.duty == 0                # unavailable: -12 V (F)
        assert p.gun.pilot.state == "B"         # not read while the pile drives -12 V
        p.bench("fault", name="estop", on=False)
        p.until(lambda: ws(p) == 14, ms=5000, what="estop cleared")
        assert p.board.duty == 100
        safe(p)
    finally:
        close(p)
    for limit, da, duty in ((35, 159, 26), (70, 318, 53), (100, 320, 53), (14, 63, 10)):
        p = rig()
        try:
            to_charging(p, "P", 15, limit)
            assert (p.gun.limit_da(), p.board.duty) == (da, duty), (limit, p.gun.limit_da())
            safe(p, limit)
        finally:
            close(p)


def test_leakage_clears_only_after_unplug():
    p = rig()
    try:
        to_charging(p)
        p.bench("fault", name="leakage", on=True)
        p.step(300)
        assert short(p) == ["order 4004"] and ws(p) == 16 and not relay(p), short(p)
        p.bench("fault", name="leakage", on=False)
        p.step(2000)
        assert ws(p) == 16
        assert p.board.duty == 100              # +12 V so that the unplug can be seen
        p.bench("unplug")
        p.until(lambda: ws(p) == 10, ms=3000, what="cleared")
        safe(p)
    finally:
        close(p)


def test_start_timeout_default():
    assert config.DEFAULTS["start_timeout_s"] == 120


# --- telemetry -----------------------------------------------------------------------------

def _types(t):
    for k in SEED_FIELDS:
        assert type(t[k]) is (str if k in ("pre_trade_no", "trade_no") else int), (k, t[k])


def test_telemetry_fields():
    p = rig()
    try:
        p.step(200)
        sent = p.events("acGunRunIty")
        assert sent, p.sent                     # the first report, unasked
        for t in (sent[-1][1], telemetry(p)):
            assert sorted(t) == sorted(SEED_FIELDS), sorted(set(t) ^ set(SEED_FIELDS))
            assert (t["work_status"], t["con_status"], t["e_lock_status"],
                    t["out_relay_status"], t["pwm_duty_radio"]) == (10, 11, 10, 10, 0), t
            assert t["trade_no"] == " " and t["gun_temp"] == 750 and t["gun_no"] == 1, t
            assert (t["ac_cur_a"], t["real_power"], t["total_elect"], t["total_cost"],
                    t["chg_time"]) == (0, 0, 0, 0, 0), t
            _types(t)
        to_charging(p)
        p.step(61000)                           # a minute of charging and a second
        m, s = p.app.metering, p.gun.s
        t = telemetry(p)
        assert sorted(t) == sorted(SEED_FIELDS), sorted(set(t) ^ set(SEED_FIELDS))
        assert (t["work_status"], t["con_status"], t["e_lock_status"],
                t["out_relay_status"], t["pwm_duty_radio"]) == (13, 10, 11, 11, 53), t
        # what the meter reads now (the simulated mains: about 227 V, 32 A, 7.3 kW)
        assert (t["ac_vol_a"], t["ac_cur_a"], t["real_power"]) == (
            m.mv // 100, m.ma // 100, m.mw // 100000), (t, m.mv, m.ma, m.mw)
        assert 2200 <= t["ac_vol_a"] <= 2330 and 310 <= t["ac_cur_a"] <= 330 and \
            70 <= t["real_power"] <= 76, t
        assert t["pre_trade_no"] == "T1" and t["trade_no"] == " " and t["chg_time"] == 1, t
        # the session's energy, all of it in the peak band, and its money
        assert t["total_elect"] == fees.wh(s.e) == t["peak_elect"], (t, s.e)
        assert 120 <= t["total_elect"] <= 130, t   # 61 s at about 7.3 kW
        assert t["sharp_elect"] == t["flat_elect"] == t["valley_elect"] == 0, t
        assert t["total_power_cost"] == fees.money(s.e, COMPACT["power"]) > 0, t
        assert t["total_serv_cost"] == fees.money(s.e, COMPACT["service"]) > 0, t
        assert t["total_cost"] == t["total_power_cost"] + t["total_serv_cost"], t
        _types(t)
        # the periodic reports while charging carry the same fields
        for _, b in p.events("acGunRunIty"):
            assert sorted(b) == sorted(SEED_FIELDS), b
        safe(p)
    finally:
        close(p)


def test_new_start_right_after_stop_has_its_lock():
    # a start that comes while the last session still ends is busy; once it has ended a
    # new one starts with its own lock, which holds through a pause
    p = rig()
    try:
        to_charging(p)
        assert stop(p, "T1") == (10, None)
        assert start(p, "T2")[0] == 11                 # the stop is under way: busy
        p.until(lambda: not relay(p), ms=3000, what="stopped")
        for cmd, _, sid in list(p.sent):               # acknowledged (the journal sends
            if cmd in JOURNALED:                       # 3 at a time)
                p.ack(sid)
        assert start(p, "T3") == (10, None)            # (T2 stays refused: a new trade)
        p.step(1000)
        assert short(p) == ["stop 10/0/1009", "start 14/0", "order 1009", "start 10/0"], \
            short(p)
        assert ws(p) == 13 and relay(p) and lock(p) and p.gun.lock
        assert p.gun.s.trade == "T3"
        n0 = p.board._seq
        p.bench("car", want=False)          # a pause: relay open, the lock must hold
        p.step(1000)
        assert ws(p) == 13 and not relay(p) and lock(p)
        assert not [e for e in p.board.events(n0) if e["ev"] == "lock_set"]
        safe(p)
    finally:
        close(p)


def test_vehicle_in_d_charges_where_the_pile_has_ventilation():
    board = dict(BOARD, ventilation=1)
    p = rig(board=board)
    try:
        p.bench("car", vent=True)
        to_charging(p)
        assert p.gun.pilot.state == "D" and relay(p)
        p.bench("car", vent=False)             # D -> C: no interruption
        p.step(500)
        assert p.gun.pilot.state == "C" and relay(p) and ws(p) == 13
        assert short(p) == []
        safe(p)
    finally:
        close(p)


