"""Charge sessions end to end: the firmware process, a real mosquitto, the platform simulator.

Every start outcome and every stop path, each checked on the wire (startChaResEvt,
stopChaResEvt, orderUpdateEvt, the service replies) and on the hardware through the bench
port (relay open, lock released).  After every scenario the simulated board's safety
recorder must hold no violation (relay closed without the lock / outside C-D / without
PWM, relay opened more than 100 ms after the vehicle left C/D).

Time is compressed with the board's speed (board ms per real ms), so a 1-minute time
limit takes one real second at speed 60.
"""
import time

import pytest

from conftest import DEV, give_model, online

SPEED = 60


@pytest.fixture
def pile_on(make_pile, platform):
    """pile_on(model=True, **config) -> a pile online (with the fee model); its board is
    checked for safety violations when the test ends."""
    piles = []

    def make(model=True, speed=SPEED, **cfg):
        p = make_pile(speed=speed, **cfg)
        online(platform)
        if model:
            give_model(platform)
        piles.append(p)
        return p

    yield make
    for p in piles:
        if p.alive():
            st = p.state()
            assert st["violations"] == [], st["violations"]
            assert st["violation_count"] == 0
            for lat in st["latencies"]:
                if lat["what"] == "left_cd":
                    assert lat["us"] < 100000, lat


# --- helpers ---------------------------------------------------------------------------

def start(platform, trade, timeout=15, **kw):
    """Send startChargeSrv; return (startChaResEvt body, service reply body)."""
    mark = platform.mark()
    sid = platform.start_charge(DEV, trade, **kw)
    res = platform.wait_for(DEV, "startChaResEvt", since=mark, timeout=timeout,
                            pred=lambda m: m["body"]["pre_trade_no"] == trade)
    rep = platform.wait_for(DEV, "startChargeSrv_reply", since=mark,
                            pred=lambda m: m["head"]["session_id"] == sid)
    return res["msg"]["body"], rep["msg"]["body"]


def stop(platform, trade, reason=10):
    """Send stopChargeSrv; return (stopChaResEvt body, service reply body)."""
    mark = platform.mark()
    sid = platform.stop_charge(DEV, trade, stop_reason=reason)
    res = platform.wait_for(DEV, "stopChaResEvt", since=mark,
                            pred=lambda m: m["body"]["pre_trade_no"] == trade)
    rep = platform.wait_for(DEV, "stopChargeSrv_reply", since=mark,
                            pred=lambda m: m["head"]["session_id"] == sid)
    return res["msg"]["body"], rep["msg"]["body"]


def order(platform, trade, since=0, timeout=15):
    rec = platform.wait_for(DEV, "orderUpdateEvt", since=since, timeout=timeout,
                            pred=lambda m: m["body"]["pre_trade_no"] == trade)
    return rec["msg"]["body"]


def plug(pile, **car):
    if car:
        pile.bench(dict(cmd="car", **car))
    pile.bench({"cmd": "plug"})
    pile.wait_state(lambda s: s["cp_level"] in "BC")
    time.sleep(0.1)                     # the pilot's debounce


def charge(platform, pile, trade="T1", **kw):
    """Plug in and start; wait until the relay is closed."""
    plug(pile)
    res, rep = start(platform, trade, **kw)
    assert (res["start_result"], res["fault_code"], rep["result"]) == (10, 0, 10), (res, rep)
    pile.wait_state(lambda s: s["relay_closed"] and s["locked"])


def released(pile, timeout=5):
    """The relay is open and the lock released (the end of every session)."""
    return pile.wait_state(lambda s: not s["relay_cmd"] and not s["relay_closed"] and
                           not s["lock_cmd"] and not s["locked"], timeout=timeout)


def relay_closes(pile):
    evs = pile.bench({"cmd": "events", "since": 0})["events"]
    return len([e for e in evs if e["ev"] == "relay_set" and e["v"] is True])


def count(platform, cmd, pred=None):
    recs = platform.messages(DEV, cmd)
    return len([r for r in recs if r["msg"] and (pred is None or pred(r["msg"]))])


# --- start outcomes ----------------------------------------------------------------------

def test_start_not_plugged_in(platform, pile_on):
    pile = pile_on()
    res, rep = start(platform, "N1")
    assert (res["start_result"], res["fault_code"]) == (13, 0)
    assert (rep["result"], rep["pre_trade_no"], rep["gun_no"]) == (11, "N1", 1)
    st = released(pile)
    assert st["cp_duty"] == 100
    assert pile.status()["work_status"] == 10


def test_start_faulted(platform, pile_on):
    pile = pile_on()
    plug(pile)
    mark = platform.mark()
    pile.bench({"cmd": "fault", "name": "estop", "on": True})
    platform.wait_for(DEV, "totalFaultEvt", since=mark,
                      pred=lambda m: 3003 in m["body"]["fault_value"])
    res, rep = start(platform, "F1")
    assert (res["start_result"], res["fault_code"], rep["result"]) == (11, 3003, 11)
    st = released(pile)
    assert st["cp_duty"] == 0                       # unavailable: -12 V
    # released: the pile can charge again (a new trade)
    pile.bench({"cmd": "fault", "name": "estop", "on": False})
    pile.wait_state(lambda s: s["cp_duty"] == 100)
    time.sleep(0.1)
    res, _ = start(platform, "F2")
    assert res["start_result"] == 10


def test_start_without_fee_model(platform, pile_on):
    pile = pile_on(model=False)
    plug(pile)
    res, rep = start(platform, "M1")
    assert (res["start_result"], res["fault_code"], rep["result"]) == (15, 6000, 11)
    released(pile)


def test_start_twice_same_trade_one_session(platform, pile_on):
    pile = pile_on()
    charge(platform, pile, "D1")
    res, rep = start(platform, "D1")                # the platform repeats itself
    assert (res["start_result"], rep["result"]) == (10, 10)
    time.sleep(0.3)
    assert relay_closes(pile) == 1
    assert pile.status()["session"] == "D1"
    mark = platform.mark()
    res, _ = stop(platform, "D1")
    assert res["stop_result"] == 10
    order(platform, "D1", since=mark)
    released(pile)
    time.sleep(0.5)
    assert count(platform, "orderUpdateEvt", lambda m: m["body"]["pre_trade_no"] == "D1") == 1
    assert count(platform, "startChaResEvt", lambda m: m["body"]["pre_trade_no"] == "D1") == 2


def test_start_other_trade_while_charging(platform, pile_on):
    pile = pile_on()
    charge(platform, pile, "B1")
    res, rep = start(platform, "B2")
    assert (res["start_result"], res["fault_code"], rep["result"]) == (14, 0, 11)
    st = pile.state()
    assert st["relay_closed"] and st["locked"]
    assert pile.status()["session"] == "B1"
    stop(platform, "B1")
    released(pile)


# --- stop paths ----------------------------------------------------------------------------

def test_platform_stop(platform, pile_on):
    pile = pile_on()
    charge(platform, pile, "S1")
    time.sleep(0.5)
    mark = platform.mark()
    res, rep = stop(platform, "S1", reason=13)      # 13 platform found an anomaly
    assert (res["stop_result"], res["stop_fail_reson"], res["result_code"]) == (10, 0, 1002)
    assert (rep["result"], rep["pre_trade_no"]) == (10, "S1")
    o = order(platform, "S1", since=mark)
    assert o["reason"] == 1002 and o["total_elect"] > 0
    released(pile)
    assert pile.status()["work_status"] == 14        # finished, not unplugged
    pile.bench({"cmd": "unplug"})
    pile.wait_state(lambda s: s["cp_level"] == "A")
    time.sleep(0.1)
    assert pile.status()["work_status"] == 10


def test_stop_wrong_trade(platform, pile_on):
    pile = pile_on()
    charge(platform, pile, "W1")
    res, rep = stop(platform, "W0")
    assert (res["stop_result"], res["stop_fail_reson"], rep["result"]) == (11, 10, 11)
    time.sleep(0.2)
    st = pile.state()
    assert st["relay_closed"] and st["locked"]
    res, _ = stop(platform, "W1")
    assert res["stop_result"] == 10
    released(pile)


def test_stop_twice(platform, pile_on):
    pile = pile_on()
    charge(platform, pile, "X1")
    res, _ = stop(platform, "X1")
    assert (res["stop_result"], res["result_code"]) == (10, 1009)
    released(pile)
    res, rep = stop(platform, "X1")
    assert (res["stop_result"], res["stop_fail_reson"], res["result_code"]) == (11, 11, 1009)
    assert rep["result"] == 11
    time.sleep(0.3)
    assert count(platform, "orderUpdateEvt", lambda m: m["body"]["pre_trade_no"] == "X1") == 1


def test_vehicle_never_asks_for_power(platform, pile_on):
    pile = pile_on(start_timeout_s=5)
    plug(pile, want=False)
    t0 = time.time()
    res, rep = start(platform, "V1")
    assert (res["start_result"], res["fault_code"], rep["result"]) == (12, 0, 10)
    assert time.time() - t0 < 5 * 3 / SPEED + 1.5
    st = released(pile)
    assert st["cp_duty"] == 100
    assert relay_closes(pile) == 0
    assert count(platform, "orderUpdateEvt") == 0


def test_gun_pulled_while_charging(platform, pile_on):
    pile = pile_on()
    charge(platform, pile, "G1")
    time.sleep(0.3)
    mark = platform.mark()
    pile.bench({"cmd": "unplug"})
    o = order(platform, "G1", since=mark)
    assert o["reason"] == 1008
    st = released(pile)
    assert [x for x in st["latencies"] if x["what"] == "left_cd"]
    assert pile.status()["work_status"] == 10


def test_vehicle_pause_continues(platform, pile_on):
    pile = pile_on(vehicle_pause_s=120)            # 2 s of real time at speed 60
    charge(platform, pile, "P1")
    mark = platform.mark()
    pile.bench({"cmd": "car", "want": False})
    st = pile.wait_state(lambda s: not s["relay_closed"])
    assert st["locked"] and 0 < st["cp_duty"] < 100
    time.sleep(0.5)
    pile.bench({"cmd": "car", "want": True})
    pile.wait_state(lambda s: s["relay_closed"] and s["cp_level"] == "C")
    time.sleep(0.3)
    assert pile.status()["work_status"] == 13
    assert count(platform, "orderUpdateEvt") == 0
    assert platform.messages(DEV, "stopChaResEvt") == []
    lat = [x["us"] for x in pile.state()["latencies"] if x["what"] == "left_cd"]
    assert len(lat) == 1 and lat[0] < 100000, lat
    res, _ = stop(platform, "P1")
    assert res["stop_result"] == 10
    assert order(platform, "P1", since=mark)["reason"] == 1009
    released(pile)


def test_vehicle_stays_in_b_too_long(platform, pile_on):
    pile = pile_on(vehicle_pause_s=30)
    charge(platform, pile, "Q1")
    mark = platform.mark()
    pile.bench({"cmd": "car", "want": False})
    o = order(platform, "Q1", since=mark, timeout=10)
    assert o["reason"] == 1010
    released(pile)
    assert pile.status()["work_status"] == 14


@pytest.mark.parametrize("mode,limit,code", [(14, 1, 1003), (12, 1, 1004), (11, 10, 1005)],
                         ids=["time", "energy", "amount"])
def test_limit_reached(platform, pile_on, mode, limit, code):
    pile = pile_on()
    mark = platform.mark()
    charge(platform, pile, "L1", charge_mode=mode, limit_data=limit)
    o = order(platform, "L1", since=mark, timeout=20)
    assert o["reason"] == code
    released(pile)
    if mode == 14:      # one minute of charging (board time)
        secs = int(o["charge_endTime"]) - int(o["charge_start_time"])
        assert 60 <= secs <= 65, secs
    if mode == 12:      # 0.1 kWh
        assert 100 <= o["total_elect"] <= 110, o["total_elect"]
        assert 100 <= int(o["sum_end"]) - int(o["sum_start"]) <= 113
    if mode == 11:      # 0.10 yuan = 1000 x 0.0001 yuan, overshot by at most one 50 ms
        # measuring round: 3 s of board time at speed 60, 7.4 kW, 7 yuan/kWh -> 432
        cost = o["total_power_cost"] + o["total_serv_cost"]
        assert 1000 <= cost <= 1450, cost


@pytest.mark.parametrize("how", ["bench", "button"])
def test_stop_at_the_pile(platform, pile_on, how):
    pile = pile_on()
    charge(platform, pile, "H1")
    mark = platform.mark()
    if how == "bench":
        pile.bench({"cmd": "stop"})
    else:
        pile.bench({"cmd": "button"})
    o = order(platform, "H1", since=mark)
    assert o["reason"] == 1001
    released(pile)
    assert pile.status()["work_status"] == 14
    # the platform's stop after it: already stopped, with the code it stopped with
    res, _ = stop(platform, "H1")
    assert (res["stop_result"], res["stop_fail_reson"], res["result_code"]) == (11, 11, 1001)


# --- telemetry -----------------------------------------------------------------------------

SEED_FIELDS = {"pwm_duty_radio", "ac_cur_a", "ac_vol_a", "chg_time", "con_status",
               "e_lock_status", "flat_elect", "gun_no", "gun_temp", "out_relay_status",
               "peak_elect", "pre_trade_no", "real_power", "sharp_elect", "total_cost",
               "total_elect", "total_power_cost", "total_serv_cost", "trade_no",
               "valley_elect", "work_status"}


def _stamps(platform, pred, since=0):
    recs = platform.messages(DEV, "acGunRunIty")[since:]
    return [r["msg"]["head"]["timestamp"] for r in recs if pred(r["msg"]["body"])]


def _gaps(stamps):
    return [(b - a) / 1000 for a, b in zip(stamps, stamps[1:])]


def test_telemetry_cadence(platform, pile_on):
    # speed 10: the report task's 100 ms round is 1 s of board time
    pile = pile_on(speed=10, heartbeat_s=8, telemetry_fast_s=2, telemetry_fast_for_s=12,
                   telemetry_slow_s=6)
    time.sleep(2.0)                                 # idle: heartbeats
    idle = _stamps(platform, lambda b: b["work_status"] == 10)
    assert len(idle) >= 2
    assert all(8 <= g <= 9.5 for g in _gaps(idle[1:])) and _gaps(idle[1:]), _gaps(idle)
    n0 = len(platform.messages(DEV, "acGunRunIty"))
    charge(platform, pile, "C1")
    time.sleep(1.2 + 2.2)                           # 12 s fast, then 3 slow rounds of 6 s
    mark = platform.mark()
    stop(platform, "C1")
    order(platform, "C1", since=mark)
    platform.wait_for(DEV, "acGunRunIty", since=mark,
                      pred=lambda m: m["body"]["work_status"] == 14)
    charging = _stamps(platform, lambda b: b["work_status"] == 13, n0)
    gaps = _gaps(charging)
    t0 = charging[0]
    fast = [g for g, t in zip(gaps, charging[1:]) if t - t0 <= 12000]
    slow = [g for g, t in zip(gaps, charging[1:]) if t - t0 > 14000]
    assert len(fast) >= 4 and all(2 <= g <= 3.5 for g in fast), gaps
    assert len(slow) >= 2 and all(6 <= g <= 7.5 for g in slow), gaps
    recs = platform.messages(DEV, "acGunRunIty")
    for r in recs:
        assert set(r["msg"]["body"]) == SEED_FIELDS, set(r["msg"]["body"]) ^ SEED_FIELDS
    last = [r["msg"]["body"] for r in recs[n0:] if r["msg"]["body"]["work_status"] == 13][-1]
    assert (last["pre_trade_no"], last["con_status"], last["e_lock_status"],
            last["out_relay_status"], last["pwm_duty_radio"]) == ("C1", 10, 11, 11, 53), last
    assert last["ac_vol_a"] > 2000 and last["ac_cur_a"] > 300 and last["real_power"] > 60
    assert last["total_elect"] > 0 and last["total_cost"] > 0
    assert last["total_cost"] == last["total_power_cost"] + last["total_serv_cost"]
    # every change of work_status is reported as it happens, starting (12) included
    seen = [r["msg"]["body"]["work_status"] for r in recs[n0:]]
    for ws in (11, 12, 13, 14):
        assert ws in seen, seen
