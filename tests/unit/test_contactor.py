"""The contactor's life (runs in MicroPython, on kit.Pile: the real app, stepped time):
normal stops never open it under load (PWM off first, the relay opens once the vehicle
has left C, at most stop_wait_ms after), a protective trip still opens it at once, a
chattering vehicle cannot make it close faster than relay_min_open_s, and state D on a
pile without ventilation never gets energy.  The simulated board counts every opening
with current flowing (board.under_load)."""
from kit import BOARD, Pile, rm_tree

EPOCH_MS = 1700010000000        # 09:00 local


def pile(**over):
    kw = dict(epoch_ms=EPOCH_MS, vehicle_pause_s=3)
    kw.update(over)
    return Pile(**kw)


def close(p):
    p.close()
    rm_tree(p.dir)


def charging(p, trade="T1", mode=10, limit=0):
    p.bench("plug")
    p.step(100)
    p.deliver("startChargeSrv", {"gun_no": 1, "pre_trade_no": trade, "charge_mode": mode,
                                 "limit_data": limit})
    p.until(lambda: p.board.contacts and p.board.current_a() > 30, what="charging")
    p.step(1000)


def events(p, n0, kinds=("cp_duty", "relay_set", "cp_level")):
    return [(e["ev"], e["v"]) for e in p.board.events(n0) if e["ev"] in kinds]


def reasons(p):
    return [b["reason"] for c, b in p.events("orderUpdateEvt")]


def test_normal_stops_switch_the_pwm_off_first_and_open_without_load():
    for how, code in (("platform", 1009), ("button", 1001), ("bench", 1001),
                      ("energy limit", 1004), ("unplug", 1008)):
        p = pile()
        try:
            if how == "energy limit":
                charging(p, "E1", 12, 1)            # 0.1 kWh
            else:
                charging(p)
            n0 = p.board._seq
            if how == "platform":
                p.deliver("stopChargeSrv", {"gun_no": 1, "pre_trade_no": "T1",
                                            "stop_reason": 10})
            elif how == "button":
                p.bench("button")
            elif how == "bench":
                p.app._bench({"cmd": "stop"})
            elif how == "unplug":
                p.bench("unplug")
            p.until(lambda: not p.board.contacts, ms=120000, what=how)
            p.step(500)
            ev = events(p, n0)
            if how == "unplug":     # the vehicle went first: the relay follows at once
                assert ev[0] == ("cp_level", "A") and ev[1] == ("relay_set", False), ev
            else:
                i, j = ev.index(("cp_duty", 100)), ev.index(("relay_set", False))
                assert i < j and ("cp_level", "B") in ev[i:j], (how, ev)
            assert p.board.under_load == 0, (how, p.board.under_load)
            assert reasons(p) == [code], (how, reasons(p))
            assert not p.board.state()["violations"], how
        finally:
            close(p)


def test_a_vehicle_that_keeps_drawing_is_cut_after_stop_wait():
    board = dict(BOARD, sim=dict(BOARD["sim"], ev_react_ms=60000))    # never reacts
    p = pile(board=board, stop_wait_ms=3000)
    try:
        charging(p)
        t0 = p.t
        p.deliver("stopChargeSrv", {"gun_no": 1, "pre_trade_no": "T1", "stop_reason": 10})
        assert p.board.contacts and p.board.duty == 100          # PWM off, still closed
        p.until(lambda: not p.board.contacts, ms=5000, what="cut")
        assert 3000 <= p.t - t0 <= 3020, p.t - t0
        assert p.board.under_load == 1                            # the one it had to
        assert reasons(p) == [1009]
    finally:
        close(p)


def test_a_protective_trip_opens_at_once():
    p = pile()
    try:
        charging(p)
        p.bench("fault", name="estop", on=True)
        assert not p.board.relay_cmd                # the alarm: before any step
        p.step(100)
        assert reasons(p) == [3003] and p.board.under_load == 1
    finally:
        close(p)


def test_chattering_vehicle_cannot_wear_out_the_contactor():
    p = pile(relay_min_open_s=10, vehicle_pause_s=300)
    try:
        charging(p)
        n0 = p.board._seq
        for k in range(100):                        # C <-> B every 100 ms for 10 s
            p.bench("car", want=k % 2 == 1)
            p.step(100)
        p.bench("car", want=True)
        p.step(12000)
        closes = [e for e in p.board.events(max(n0, p.board._seq - 64))
                  if e["ev"] == "relay_set" and e["v"]]
        assert len(closes) <= 2, closes             # 22 s: at most every 10 s
        assert p.board.contacts and p.gun.work_status() == 13   # and it charges again
        assert not p.board.state()["violations"]
    finally:
        close(p)


def test_min_open_time_holds_between_sessions_too():
    p = pile(relay_min_open_s=10)
    try:
        charging(p)
        p.deliver("stopChargeSrv", {"gun_no": 1, "pre_trade_no": "T1", "stop_reason": 10})
        p.until(lambda: not p.board.contacts, what="stopped")
        t0 = p.t
        p.step(500)
        p.deliver("startChargeSrv", {"gun_no": 1, "pre_trade_no": "T2", "charge_mode": 10})
        p.until(lambda: p.board.contacts, ms=15000, what="closed again")
        assert 10000 <= p.t - t0 <= 10100, p.t - t0
    finally:
        close(p)


def test_state_d_without_ventilation_gets_no_energy():
    assert "ventilation" not in BOARD               # the default: none
    # a start whose vehicle asks for ventilation is refused with 3014
    p = pile()
    try:
        p.bench("car", vent=True)
        p.bench("plug")
        p.step(100)
        p.deliver("startChargeSrv", {"gun_no": 1, "pre_trade_no": "V1", "charge_mode": 10})
        p.step(2000)
        res = [b for c, b in p.events("startChaResEvt")]
        assert [(b["start_result"], b["fault_code"]) for b in res] == [(11, 3014)], res
        assert not [e for e in p.board.events(0) if e["ev"] == "relay_set" and e["v"]]
        faults = [b["warnValue"][0] for c, b in p.events("totalFaultEvt")]
        assert faults == [3014, 0], faults          # reported, then cleared (PWM off: B)
    finally:
        close(p)
    # D during a charge: the relay opens, a pause that ends with 3014
    p = pile()
    try:
        charging(p)
        p.bench("car", vent=True)
        p.step(200)
        assert not p.board.contacts and p.gun.work_status() == 13
        p.step(3500)                                # vehicle_pause_s 3
        assert reasons(p) == [3014], reasons(p)
        assert not p.board.state()["violations"]
    finally:
        close(p)
    # ... unless it comes back to C in time: charging goes on
    p = pile(relay_min_open_s=0)
    try:
        charging(p)
        p.bench("car", vent=True)
        p.step(1000)
        p.bench("car", vent=False)
        p.step(500)
        assert p.board.contacts and reasons(p) == []
    finally:
        close(p)


def test_current_beyond_what_the_channel_reads_trips_over_current_at_once():
    """A current that drives the current channel to its ADC rails (80 A on the sim's
    front end) is more than it can read: the hard over-current row trips on that very
    burst (not a meter failure a second later)."""
    p = pile()
    try:
        charging(p)
        while p.t % 50:
            p.step(10)
        p.bench("car", demand_a=80, greedy=True)
        p.step(50)
        assert p.app.metering.over and reasons(p) == [4002], reasons(p)
        assert p.prot.codes() == [4002]
    finally:
        close(p)


def test_the_fail_safe_opens_the_relay_with_no_memory_and_the_next_step_ends_it():
    import micropython
    p = pile()
    try:
        charging(p)
        g = p.app.gun
        micropython.heap_lock()         # nothing can be allocated: as on a spent heap
        try:
            g.fail_safe()
        finally:
            micropython.heap_unlock()
        assert not p.board.relay_cmd and not p.board.contacts and p.board.duty == 100
        p.step(100)
        assert reasons(p) == [6006] and g.s is None
        p.step(30000)                   # (the order is resent: no acks here)
        assert not p.board.contacts and set(reasons(p)) == {6006}
    finally:
        close(p)


def test_failed_control_rounds_trip_the_fail_safe_after_fail_safe_ms():
    p = pile(fail_safe_ms=100)
    try:
        charging(p)
        app = p.app
        p.tolerant = True
        step = app.gun.step
        app.gun.step = lambda: 1 // 0           # every step fails from now on
        t0 = p.t
        p.until(lambda: not p.board.relay_cmd, ms=1000, what="fail-safe")
        assert 100 <= p.t - t0 <= 130, p.t - t0
        assert app.failed > 0
        app.gun.step = step
        p.step(100)
        assert reasons(p) == [6006]
    finally:
        close(p)
