"""Protection end to end: every row of the trip table injected through the bench port
during a charge (relay opened, totalFaultEvt in the seed's form, session ended with the
fault's code and its order written, recovery as the row says), sensors at the ADC's
rails (an open NTC trips over-temperature, a CP sense at the rail the CP fault, clipped
mains the meter failure), a trip with the broker
blackholed, the watchdog (hang a task -> killed -> restart -> safe, one order) and the
offline charging window.  The board clock runs SPEED times faster than real time, so
board-time holds (2 s over-voltage, 5 s soft over-current ...) take a tenth of that.
"""
import re
import time

import pytest

from conftest import DEV, charging, give_model, online
from netem import Proxy

SPEED = 10


def up(make_pile, platform, **kw):
    kw.setdefault("speed", SPEED)
    pile = make_pile(**kw)
    online(platform)
    give_model(platform)
    return pile


def charge(platform, pile, trade):
    body = charging(platform, pile, trade)
    assert body["start_result"] == 10 and body["fault_code"] == 0, body
    pile.wait_state(lambda s: s["relay_closed"])
    return body


def assert_seed_form(msg):
    """totalFaultEvt as in the seed: head.status 1, item_id, 30 + 10 slots of codes."""
    assert msg["head"]["cmd"] == "totalFaultEvt" and msg["head"]["status"] == 1, msg
    assert re.fullmatch(r"[0-9A-F]{32}", msg["item_id"]), msg["item_id"]
    body = msg["body"]
    assert set(body) == {"gun_no", "fault_su", "warn_sum", "fault_value", "warnValue"}, body
    assert len(body["fault_value"]) == 30 and len(body["warnValue"]) == 10, body
    faults = [c for c in body["fault_value"] if c]
    warns = [c for c in body["warnValue"] if c]
    assert body["fault_value"][:len(faults)] == faults, body      # codes first, then 0s
    assert body["fault_su"] == len(faults) and body["warn_sum"] == len(warns), body
    assert body["gun_no"] == 1


def fault_evt(platform, since, pred, timeout=10):
    rec = platform.wait_for(DEV, "totalFaultEvt", since=since, timeout=timeout,
                            pred=lambda m: pred(m["body"]))
    assert_seed_form(rec["msg"])
    return rec["msg"]["body"]


def order_of(platform, trade, since, timeout=10):
    rec = platform.wait_for(DEV, "orderUpdateEvt", since=since, timeout=timeout,
                            pred=lambda m: m["body"]["pre_trade_no"] == trade)
    return rec["msg"]["body"]


def tripped(platform, pile, code, trade, mark):
    """After an injection during `trade`: relay open, code reported, work_status 16,
    the session ended with the code as its reason and its order arrived."""
    st = pile.wait_state(lambda s: not s["relay_cmd"] and not s["relay_closed"], timeout=5)
    assert st["violation_count"] == 0, st["violations"]
    pile.wait_status(lambda s: s["session"] is None)
    fault_evt(platform, mark, lambda b: code in b["fault_value"])
    order = order_of(platform, trade, mark)
    assert order["reason"] == code, order
    assert int(order["sum_end"]) >= int(order["sum_start"])
    platform.wait_for(DEV, "acGunRunIty", since=mark, pred=lambda m: m["body"]["work_status"] == 16)
    s = pile.status()
    assert s["work_status"] == 16 and code in s["faults"] and s["session"] is None, s
    return order


def cleared(platform, mark, timeout=10):
    return fault_evt(platform, mark, lambda b: b["fault_su"] == 0 and b["warn_sum"] == 0,
                     timeout=timeout)


def restart_ok(platform, pile, trade):
    """A new start is accepted once the fault cleared."""
    charge(platform, pile, trade)


def still_faulted(pile, code, wait=0.6):
    """The condition is gone, but the row waits for the unplug."""
    time.sleep(wait)
    s = pile.status()
    assert code in s["faults"] and s["work_status"] == 16, s


def bench(pile, **req):
    r = pile.bench(req)
    assert r["ok"], r
    return r


# name: (code, inject, remove, clears by unplug)
ROWS = {
    "estop": (3003, dict(cmd="fault", name="estop", on=True),
              dict(cmd="fault", name="estop", on=False), False),
    "leakage": (4004, dict(cmd="fault", name="leakage", on=True),
                dict(cmd="fault", name="leakage", on=False), True),
    "over_voltage": (4000, dict(cmd="mains", v=270), dict(cmd="mains", v=230), False),
    "under_voltage": (4001, dict(cmd="mains", v=170), dict(cmd="mains", v=230), False),
    "over_current_hard": (4002, dict(cmd="car", greedy=True, demand_a=60),
                          dict(cmd="car", greedy=False, demand_a=32), True),
    "over_current_soft": (4002, dict(cmd="car", greedy=True, demand_a=38),
                          dict(cmd="car", greedy=False, demand_a=32), True),
    "over_temperature": (3010, dict(cmd="temp", c=90), dict(cmd="temp", c=40), False),
    "cp_fault": (3012, dict(cmd="fault", name="cp_short", on=True),
                 dict(cmd="fault", name="cp_short", on=False), False),
    "diode": (3013, dict(cmd="fault", name="diode", on=True),
              dict(cmd="fault", name="diode", on=False), True),
    "meter": (3006, dict(cmd="fault", name="adc_dead", on=True),
              dict(cmd="fault", name="adc_dead", on=False), False),
    # sensors at the ADC's rails: each is the fault it must be, never a valid reading
    "ntc_at_rail": (3010, dict(cmd="fault", name="ntc_open", on=True),
                    dict(cmd="fault", name="ntc_open", on=False), False),
    "cp_at_rail": (3012, dict(cmd="fault", name="cp_rail", on=True),
                   dict(cmd="fault", name="cp_rail", on=False), False),
    "mains_clipped": (3006, dict(cmd="mains", v=400), dict(cmd="mains", v=230), False),
}


@pytest.mark.parametrize("row", sorted(ROWS))
def test_row_trips_ends_session_and_recovers(make_pile, platform, row):
    code, inject, remove, by_unplug = ROWS[row]
    pile = up(make_pile, platform)
    charge(platform, pile, "T1")
    time.sleep(0.2)
    mark = platform.mark()
    bench(pile, **inject)
    tripped(platform, pile, code, "T1", mark)
    # a start while the fault is active is refused with its code
    m2 = platform.mark()
    platform.start_charge(DEV, "T2")
    res = platform.wait_for(DEV, "startChaResEvt", since=m2)["msg"]["body"]
    assert res["start_result"] == 11 and res["fault_code"] == code, res
    mark = platform.mark()
    bench(pile, **remove)
    if by_unplug:
        still_faulted(pile, code)
        bench(pile, cmd="unplug")
    cleared(platform, mark)
    assert pile.status()["work_status"] in (10, 11, 14)
    restart_ok(platform, pile, "T3")


def test_over_temperature_derates_first(make_pile, platform):
    pile = up(make_pile, platform)
    charge(platform, pile, "T1")
    assert pile.state()["cp_duty"] == 53
    mark = platform.mark()
    bench(pile, cmd="temp", c=75)
    body = fault_evt(platform, mark, lambda b: 3020 in b["warnValue"])
    assert body["fault_su"] == 0 and body["warn_sum"] == 1, body
    st = pile.wait_state(lambda s: s["cp_duty"] == 26)          # 16 A offered
    assert st["relay_closed"] and pile.status()["work_status"] == 13
    st = pile.wait_state(lambda s: abs(s["current_a"] - 15.6) < 0.1)
    mark = platform.mark()
    bench(pile, cmd="temp", c=88)
    tripped(platform, pile, 3010, "T1", mark)
    mark = platform.mark()
    bench(pile, cmd="temp", c=65)                               # above t_resume_c: held
    time.sleep(0.5)
    assert 3010 in pile.status()["faults"]
    bench(pile, cmd="temp", c=30)
    cleared(platform, mark)
    restart_ok(platform, pile, "T2")
    assert pile.state()["cp_duty"] == 53


def test_welded_contactor(make_pile, platform):
    pile = up(make_pile, platform)
    charge(platform, pile, "T1")
    bench(pile, cmd="fault", name="welded", on=True)
    time.sleep(0.2)
    assert pile.status()["faults"] == []        # closed as commanded: nothing to see yet
    mark = platform.mark()
    platform.stop_charge(DEV, "T1")
    order = order_of(platform, "T1", mark)
    assert order["reason"] == 1009, order      # the stop that found the weld
    fault_evt(platform, mark, lambda b: b["fault_value"][0] == 3008)
    st = pile.state()
    assert not st["relay_cmd"] and st["relay_closed"] and st["locked"], st   # gun stays locked
    assert pile.status()["work_status"] == 16
    m2 = platform.mark()
    platform.start_charge(DEV, "T2")
    res = platform.wait_for(DEV, "startChaResEvt", since=m2)["msg"]["body"]
    assert (res["start_result"], res["fault_code"]) == (11, 3008), res
    mark = platform.mark()
    bench(pile, cmd="fault", name="welded", on=False)
    cleared(platform, mark)
    pile.wait_state(lambda s: not s["locked"])
    restart_ok(platform, pile, "T3")


def test_lock_fails_at_start(make_pile, platform):
    pile = up(make_pile, platform)
    bench(pile, cmd="fault", name="lock_stuck", on=True)
    mark = platform.mark()
    body = charging(platform, pile, "T1")
    assert (body["start_result"], body["fault_code"]) == (11, 3011), body
    fault_evt(platform, mark, lambda b: 3011 in b["fault_value"])
    assert not platform.messages(DEV, "orderUpdateEvt")          # nothing was delivered
    assert not pile.state()["relay_cmd"]
    mark = platform.mark()
    bench(pile, cmd="fault", name="lock_stuck", on=False)
    still_faulted(pile, 3011, 0.3)
    bench(pile, cmd="unplug")
    cleared(platform, mark)
    restart_ok(platform, pile, "T2")


def test_unlock_failure_detected(make_pile, platform):
    pile = up(make_pile, platform)
    charge(platform, pile, "T1")
    bench(pile, cmd="fault", name="lock_stuck", on=True)
    mark = platform.mark()
    platform.stop_charge(DEV, "T1")
    assert order_of(platform, "T1", mark)["reason"] == 1009
    t0 = time.time()
    fault_evt(platform, mark, lambda b: 3011 in b["fault_value"])
    assert time.time() - t0 > 0.3              # after the unlock retries (4.5 board s)
    st = pile.state()
    assert st["locked"] and not st["lock_cmd"] and not st["relay_closed"], st
    mark = platform.mark()
    bench(pile, cmd="fault", name="lock_stuck", on=False)
    pile.wait_state(lambda s: not s["locked"])
    still_faulted(pile, 3011, 0.3)
    bench(pile, cmd="unplug")
    cleared(platform, mark)
    restart_ok(platform, pile, "T2")


def test_leakage_selftest_refuses_start(make_pile, platform):
    pile = up(make_pile, platform)
    bench(pile, cmd="fault", name="rcd_dead", on=True)
    mark = platform.mark()
    body = charging(platform, pile, "T1")
    assert (body["start_result"], body["fault_code"]) == (11, 4006), body
    fault_evt(platform, mark, lambda b: 4006 in b["fault_value"])
    assert not pile.state()["lock_cmd"] and not pile.state()["relay_cmd"]
    mark = platform.mark()
    bench(pile, cmd="fault", name="rcd_dead", on=False)
    still_faulted(pile, 4006, 0.3)
    bench(pile, cmd="unplug")
    cleared(platform, mark)
    restart_ok(platform, pile, "T2")


def test_faults_repeat_while_active(make_pile, platform):
    pile = up(make_pile, platform, fault_repeat_s=2)
    mark = platform.mark()
    bench(pile, cmd="fault", name="estop", on=True)
    fault_evt(platform, mark, lambda b: b["fault_value"][0] == 3003)
    time.sleep(0.7)                            # 7 board seconds: three more reports
    mark = platform.mark()
    bench(pile, cmd="fault", name="estop", on=False)
    cleared(platform, mark)
    time.sleep(0.5)                            # 5 board seconds: silent when all clear
    sums = [r["msg"]["body"]["fault_su"] for r in platform.messages(DEV, "totalFaultEvt")]
    assert sums[-1] == 0 and sums.count(0) == 1 and 4 <= sums.count(1) <= 6, sums
    items = {r["msg"]["item_id"] for r in platform.messages(DEV, "totalFaultEvt")}
    assert len(items) == len(sums)             # a fresh item_id each time


@pytest.fixture
def proxy(broker, platform):
    p = Proxy("127.0.0.1", broker.port)
    platform.mqtt_addr_for_devices = "tcp://127.0.0.1:%d" % p.port
    yield p
    p.close()


def test_trip_with_broker_blackholed(make_pile, platform, proxy):
    pile = up(make_pile, platform, keepalive_s=5)
    charge(platform, pile, "T1")
    proxy.set_mode("blackhole")
    mark = platform.mark()
    t0 = time.time()
    bench(pile, cmd="fault", name="leakage", on=True)
    st = pile.wait_state(lambda s: not s["relay_closed"], timeout=2)
    assert time.time() - t0 < 0.5
    lat = [x["us"] for x in st["latencies"] if x["what"] == "fault:leakage"]
    assert lat and lat[-1] < 20000, st["latencies"]
    pile.wait_status(lambda s: s["session"] is None and s["work_status"] == 16 and
                s["orders_pending"] == 1)
    assert not platform.messages(DEV, "orderUpdateEvt")            # nothing got through
    proxy.set_mode("pass")
    assert order_of(platform, "T1", mark, timeout=15)["reason"] == 4004
    fault_evt(platform, mark, lambda b: 4004 in b["fault_value"], timeout=15)


def test_watchdog_reset_comes_back_safe(make_pile, platform):
    pile = up(make_pile, platform, wdt_ms=3000, speed=50)
    charge(platform, pile, "T1")
    time.sleep(1.5)                             # 75 s charging: the session checkpointed
    assert pile.alive()
    bench(pile, cmd="hang", task="measure")
    pile.proc.wait(10)                          # the board's watchdog kills the process
    assert pile.proc.returncode == -9, pile.proc.returncode
    assert "WDT: reset" in pile.output()
    assert not platform.messages(DEV, "orderUpdateEvt")
    mark = platform.mark()
    pile.start()
    st = pile.state()
    assert st["reset_cause"] == "watchdog", st
    assert not st["relay_cmd"] and not st["relay_closed"], st
    order = order_of(platform, "T1", mark, timeout=15)
    assert order["reason"] == 1001 and order["total_elect"] > 0, order   # power_loss_reason
    time.sleep(1.0)
    bodies = [r["msg"]["body"] for r in platform.messages(DEV, "orderUpdateEvt")]
    assert bodies == [order], bodies                  # exactly one order, sent once
    s = pile.status()
    assert s["session"] is None and s["orders_pending"] == 0 and not s["relay"], s
    pile.wait_state(lambda s: not s["relay_closed"] and s["cp_level"] == "B")
    restart_ok(platform, pile, "T2")


def test_offline_window_then_1006(make_pile, platform, proxy):
    pile = up(make_pile, platform, offline_charge_s=5, keepalive_s=5)
    charge(platform, pile, "T1")
    proxy.set_mode("down")
    t0 = time.time()
    time.sleep(0.2)                             # 2 board seconds offline: still charging
    s = pile.status()
    assert not s["link"] and s["session"] == "T1" and pile.state()["relay_closed"], s
    pile.wait_state(lambda s: not s["relay_closed"], timeout=5)
    assert time.time() - t0 >= 0.45             # offline_charge_s = 5 board s
    s = pile.status()
    assert s["session"] is None and s["orders_pending"] == 1, s
    # a fault while offline waits too
    bench(pile, cmd="fault", name="estop", on=True)
    time.sleep(0.1)
    bench(pile, cmd="fault", name="estop", on=False)
    time.sleep(0.3)
    mark = platform.mark()
    assert not platform.messages(DEV, "orderUpdateEvt")
    proxy.set_mode("pass")
    order = order_of(platform, "T1", mark, timeout=15)
    assert order["reason"] == 1006, order
    fault_evt(platform, mark, lambda b: 3003 in b["fault_value"], timeout=15)
