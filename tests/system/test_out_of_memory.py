"""Out of memory, on the firmware process against a real mosquitto: the simulated board's
bench "starve" locks the heap, so every allocation of every task raises MemoryError, as
on a fragmented ESP32 heap where no block is large enough.

Whatever is running when memory runs out (announcements, a start, telemetry, a stop and
its order, a reconnect), no task dies and the watchdog never fires; the commands are
answered once, the order reaches the platform and leaves the journal.  A control step
that cannot run for fail_safe_ms opens the relay by itself, so a fault that comes while
memory is short still ends the charge (pile.gun.fail_safe, 6006).
"""
import time

from conftest import DEV, give_model, online

DEATHS = ("Task exception", "Traceback", "watchdog", "WDT")


def starved_output(pile):
    out = pile.output()
    for word in DEATHS:
        assert word not in out, "%r in the console:\n%s" % (word, out[-4000:])
    return out


def cmds(platform, since=0):
    return [r["cmd"] for r in platform.messages()[since:] if r["dev"] == DEV]


def test_no_task_dies_while_memory_runs_out_again_and_again(make_pile, platform, broker):
    # fail_safe_ms longer than a window: this test is about the tasks, not the fail-safe
    pile = make_pile(speed=10, fail_safe_ms=5000, status_min_ms=200)
    online(platform)
    give_model(platform)
    pile.bench({"cmd": "plug"})
    pile.wait_state(lambda s: s["cp_level"] == "B")
    mark = platform.mark()
    started = stopped = False
    for k in range(40):             # out of memory 300 board ms in every ~1000
        pile.bench({"cmd": "starve", "ms": 300})
        time.sleep(0.1)
        if k == 3:
            platform.start_charge(DEV, "S1")
        if k == 12:
            started = pile.state()["relay_closed"]
        if k == 20:
            platform.stop_charge(DEV, "S1")
        if k == 28:
            broker.restart()        # a reconnect, its announcements, while starved
    assert started, "the charge never started"
    st = pile.wait_status(lambda s: s["orders_pending"] == 0 and s["session"] is None
                          and s["link"], timeout=30)
    starved_output(pile)
    assert pile.alive()
    assert st["failed"] > 0, "no round ran out of memory: the test proves nothing"
    got = cmds(platform, mark)
    assert got.count("startChargeSrv_reply") == 1
    assert got.count("stopChargeSrv_reply") == 1
    orders = [r["msg"]["body"] for r in platform.messages()[mark:]
              if r["dev"] == DEV and r["cmd"] == "orderUpdateEvt"]
    assert orders and all(o == orders[0] for o in orders)      # resent, never changed
    assert orders[0]["pre_trade_no"] == "S1" and orders[0]["reason"] != 6006
    assert orders[0]["total_elect"] > 0
    state = pile.state()
    assert not state["relay_closed"] and state["violation_count"] == 0
    # and afterwards everything works as before
    mark = platform.mark()
    platform.start_charge(DEV, "S2")
    platform.wait_for(DEV, "startChaResEvt", since=mark, timeout=15)
    pile.wait_state(lambda s: s["relay_closed"], timeout=10)


def test_a_fault_while_out_of_memory_opens_the_relay(make_pile, platform):
    pile = make_pile(speed=1)
    online(platform)
    give_model(platform)
    pile.bench({"cmd": "plug"})
    pile.wait_state(lambda s: s["cp_level"] == "B")
    mark = platform.mark()
    platform.start_charge(DEV, "F1")
    platform.wait_for(DEV, "startChaResEvt", since=mark, timeout=15)
    pile.wait_state(lambda s: s["relay_closed"], timeout=10)
    time.sleep(1)
    # the CP line shorts as memory runs out: no step can see it for 1.5 s
    since = pile.bench({"cmd": "events", "since": 0})["next"]
    pile.bench({"cmd": "starve", "ms": 1500,
                "with": {"cmd": "fault", "name": "cp_short", "on": True}})
    time.sleep(0.5)                 # still starved: the bench answers after the window
    st = pile.wait_state(lambda s: not s["relay_closed"], timeout=5)
    evs = pile.bench({"cmd": "events", "since": since})["events"]
    t_fault = [e["t_us"] for e in evs if e["ev"] == "bench"
               and e["v"].get("name") == "cp_short"]
    t_open = [e["t_us"] for e in evs if e["ev"] == "relay_set" and e["v"] is False]
    assert t_fault and t_open, evs
    assert 0 < t_open[0] - t_fault[0] < 300000, evs     # fail_safe_ms 100 + a round
    assert st["cp_duty"] in (0, 100)                     # PWM off
    order = platform.wait_for(DEV, "orderUpdateEvt", since=mark, timeout=15)["msg"]["body"]
    assert order["pre_trade_no"] == "F1" and order["reason"] == 6006
    pile.wait_status(lambda s: s["orders_pending"] == 0, timeout=15)
    starved_output(pile)
    assert "no control step for 100 ms" in pile.output()
    pile.bench({"cmd": "fault", "name": "cp_short", "on": False})
    assert pile.alive()


def test_out_of_memory_without_a_session_changes_nothing(make_pile, platform):
    pile = make_pile(speed=10)
    online(platform)
    give_model(platform)
    for _ in range(5):
        pile.bench({"cmd": "starve", "ms": 2000})
        time.sleep(0.3)
    st = pile.wait_status(lambda s: s["link"], timeout=20)
    starved_output(pile)
    assert st["session"] is None and st["faults"] == [] and st["fee_model"] == "M1"
    pile.bench({"cmd": "plug"})
    pile.wait_state(lambda s: s["cp_level"] == "B")
    time.sleep(0.2)
    mark = platform.mark()
    platform.start_charge(DEV, "N1")
    assert platform.wait_for(DEV, "startChaResEvt", since=mark,
                             timeout=15)["msg"]["body"]["start_result"] == 10
