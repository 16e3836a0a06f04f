"""Unit tests of hal.sim.Board, the simulated board (run inside MicroPython).

adc_burst and leak_selftest are coroutines (run with kit.run); the clock is either
accelerated real time (opts speed) or, with opts {"manual": True}, stepped by advance(ms)."""

import os
import json
import math
import random
import time
from hal import sim
from kit import fresh_dir, run

CFG = {"name": "sim", "cal": {"v_offset": 2048, "i_offset": 2048, "v_uv": 200000, "i_ua": 25000},
       "sim": {"v_uv": 203000, "i_ua": 24500, "v_offset": 2051, "i_offset": 2046, "lock_ms": 300}}


def _board(storage=None, **opts):
    opts["storage"] = storage or fresh_dir()
    opts.setdefault("speed", 20)  # the 300 ms lock then takes 15 ms of real time
    return sim.Board(CFG, opts)


def _state(b):
    r = b.bench('{"cmd":"state"}')
    assert r["ok"], r
    return r["state"]


def _charging(b, duty=53):
    """Plug, lock, PWM on: the default car (wants 32 A) goes to C; close the relay."""
    b.bench({"cmd": "plug"})
    b.cp_set(duty)
    b.lock_set(True)
    t = time.ticks_ms()
    while not b.lock_feedback():
        assert time.ticks_diff(time.ticks_ms(), t) < 2000
        time.sleep_ms(5)
    b.relay_set(True)


def _rms(a, off, scale):
    return math.sqrt(sum(((x - off) * scale) ** 2 for x in a) / len(a))


def test_cp_levels_and_diode():
    b = _board()
    assert b.cp_read() == (12000, 12000)  # A, idle
    b.cp_set(53)
    assert b.cp_read() == (12000, -12000)  # A with PWM
    b.bench({"cmd": "car", "want": False})
    b.bench({"cmd": "plug"})
    assert b.cp_read() == (9000, -12000)  # B, car does not want power
    b.bench({"cmd": "car", "want": True})
    assert b.cp_read() == (6000, -12000) and b.cp_level() == "C"
    b.bench({"cmd": "car", "vent": True})
    assert b.cp_read() == (3000, -12000) and b.cp_level() == "D"
    b.cp_set(100)
    assert b.cp_read() == (3000, 3000)  # PWM off: the car has not seen it yet ...
    time.sleep_ms(110)
    assert b.cp_read() == (9000, 9000)  # ... after ev_react_ms (100) it opens S2: B
    b.cp_set(0)
    assert b.cp_read() == (-12000, -12000) and b.cp_level() == "F"
    b.cp_set(53)
    b.bench({"cmd": "fault", "name": "diode", "on": True})
    assert b.cp_read() == (3000, -3000)
    b.bench({"cmd": "fault", "name": "cp_short", "on": True})
    assert b.cp_read() == (0, 0) and b.cp_level() == "E"
    for bad in (-1, 101, 50.0, "50", True):
        try:
            b.cp_set(bad)
            assert False, bad
        except ValueError:
            pass


def test_current_vs_pwm_and_demand():
    b = _board()
    b.bench({"cmd": "plug"})
    assert b.current_a() == 0.0
    _charging(b, 53)
    assert abs(b.current_a() - 31.8) < 1e-6  # PWM limit 53 % x 0.6
    b.bench({"cmd": "car", "demand_a": 10})
    assert b.current_a() == 10.0  # the car's own demand
    b.cp_set(20)
    assert b.current_a() == 10.0  # demand below the 12 A limit
    b.bench({"cmd": "car", "demand_a": 40})
    assert abs(b.current_a() - 12.0) < 1e-6
    b.relay_set(False)
    assert b.current_a() == 0.0
    b.relay_set(True)
    b.bench({"cmd": "car", "want": False})  # back to B: no current
    assert b.current_a() == 0.0


def test_adc_burst_rms_true_scale():
    b = _board()
    _charging(b, 53)
    b.bench({"cmd": "mains", "v": 230, "pf": 0.8})
    s = CFG["sim"]
    for _ in range(5):
        v, i, per = run(b.adc_burst())
        assert len(v) == 128 and len(i) == 128 and per == 312
        assert 0 <= min(v) and max(v) <= 4095
        vr = _rms(v, s["v_offset"], s["v_uv"] / 1e6)
        ir = _rms(i, s["i_offset"], s["i_ua"] / 1e6)
        assert abs(vr - 230) < 230 * 0.01, vr
        assert abs(ir - 31.8) < 31.8 * 0.01, ir
        p = sum((v[n] - s["v_offset"]) * s["v_uv"] / 1e6 * (i[n] - s["i_offset"]) * s["i_ua"] / 1e6
                for n in range(128)) / 128
        assert abs(p - 230 * 31.8 * 0.8) < 230 * 31.8 * 0.015, p
    # the nominal calibration is off by more than the noise: calibration matters
    c = CFG["cal"]
    assert abs(_rms(v, c["v_offset"], c["v_uv"] / 1e6) - 230) > 2
    b.relay_set(False)
    v, i, per = run(b.adc_burst())
    assert abs(_rms(v, s["v_offset"], s["v_uv"] / 1e6) - 230) < 2.3  # grid side
    assert _rms(i, s["i_offset"], s["i_ua"] / 1e6) < 0.1  # only the ADC noise floor
    b.bench({"cmd": "mains", "noise": 0})
    v, i, per = run(b.adc_burst())
    assert min(i) == max(i) == s["i_offset"]  # noise 0: exact counts
    b.bench({"cmd": "mains", "noise": 0.002})
    b.bench({"cmd": "mains", "v": 400})
    v, i, per = run(b.adc_burst())
    assert max(v) == 4095 and min(v) == 0  # clipped
    b.bench({"cmd": "fault", "name": "adc_dead", "on": True})
    v2, i2, per = run(b.adc_burst())
    assert max(v2) == 0 and max(i2) == 0 and per == 312
    assert v2 is v and i2 is i  # the same two buffers every burst


def test_adc_burst_lets_the_loop_run():
    """A burst comes in slices with an await before each: other tasks run meanwhile."""
    import asyncio
    b = _board()
    ran = []

    async def other():
        while True:
            ran.append(len(ran))
            await asyncio.sleep_ms(0)

    async def main():
        t = asyncio.create_task(other())
        await asyncio.sleep_ms(0)
        n = len(ran)
        got = await b.adc_burst()
        t.cancel()
        return len(ran) - n, got

    turns, (v, i, per) = asyncio.run(main())
    assert turns >= 3, turns  # one per slice boundary (4 slices)
    assert len(v) == 128 and per == 312


def test_relay_lock_and_faults():
    b = _board(speed=100)
    b.relay_set(True)
    assert b.relay_feedback()
    b.relay_set(False)
    assert not b.relay_feedback()
    b.bench({"cmd": "fault", "name": "welded", "on": True})
    b.relay_set(True)
    b.relay_set(False)
    assert b.relay_feedback() and not b.relay_cmd  # welded shut
    b.bench({"cmd": "fault", "name": "welded", "on": False})
    assert not b.relay_feedback()
    b.lock_set(True)
    assert not b.lock_feedback()  # 300 board ms = 3 real ms at speed 100
    time.sleep_ms(10)
    assert b.lock_feedback()
    b.bench({"cmd": "fault", "name": "lock_stuck", "on": True})
    b.lock_set(False)
    time.sleep_ms(10)
    assert b.lock_feedback()  # frozen
    b.bench({"cmd": "fault", "name": "lock_stuck", "on": False})
    assert not b.lock_feedback()


def test_lock_takes_lock_ms_of_board_time():
    b = _board(speed=1)
    b.lock_set(True)
    t = b.ticks_ms()
    time.sleep_ms(200)
    assert not b.lock_feedback() or time.ticks_diff(b.ticks_ms(), t) >= 300
    time.sleep_ms(150)
    assert b.lock_feedback()


def test_accelerated_ticks_and_wrap():
    b = _board(speed=50, epoch_ms=1700000000000)
    t0 = b.ticks_ms()
    w0 = b.now_ms()
    time.sleep_ms(40)
    d = time.ticks_diff(b.ticks_ms(), t0)
    assert 1900 <= d <= 6000, d
    assert 1900 <= b.now_ms() - w0 <= 6000
    b.clock[1] = time.ticks_add(0, -101)  # board ticks just before the wrap
    t0 = b.ticks_ms()
    time.sleep_ms(20)
    t1 = b.ticks_ms()
    assert t1 < t0 and 900 <= time.ticks_diff(t1, t0) <= 5000
    assert time.ticks_diff(t1, time.ticks_add(t0, 5)) > 0
    b.bench({"cmd": "speed", "x": 1})
    assert b.speed == 1
    t0 = b.ticks_ms()
    time.sleep_ms(20)
    assert 15 <= time.ticks_diff(b.ticks_ms(), t0) <= 120
    assert b.speed == 1


def test_manual_clock_moves_only_by_advance():
    b = _board(manual=True, speed=1000, epoch_ms=1700000000000, ticks0=-250)
    t0, w0 = b.ticks_ms(), b.now_ms()
    assert w0 == 1700000000000
    time.sleep_ms(30)  # real time passes, board time does not (whatever the speed)
    assert b.ticks_ms() == t0 and b.now_ms() == w0
    b.advance(10)
    assert time.ticks_diff(b.ticks_ms(), t0) == 10 and b.now_ms() == w0 + 10
    b.advance(490)  # across the ticks wrap (ticks0 250 ms before it)
    t1 = b.ticks_ms()
    assert t1 < t0 and time.ticks_diff(t1, t0) == 500 and b.now_ms() == w0 + 500
    # the lock answers after lock_ms of board time, not of real time
    b.lock_set(True)
    time.sleep_ms(20)
    b.advance(299)
    assert not b.lock_feedback()
    b.advance(1)
    assert b.lock_feedback()
    # setting the wall clock keeps the stepping: the clock moves on from there
    t2 = b.ticks_ms()
    assert time.ticks_diff(t2, t1) == 300
    b.set_time_ms(1800000000000)
    b.advance(1234)
    assert b.now_ms() == 1800000001234 and b.ticks_ms() == time.ticks_add(t2, 1234)


def test_clock_trust_and_identity():
    b = _board(epoch_ms=1700000000000, trusted=False, cpu_id="C1", mac="0A0B0C0D0E0F")
    assert not b.time_trusted()
    assert 1700000000000 <= b.now_ms() < 1700000010000
    b.set_time_ms(1800000000000)
    assert b.time_trusted() and 1800000000000 <= b.now_ms() < 1800000010000
    b.bench({"cmd": "clock", "epoch_ms": 1600000000000})
    assert b.now_ms() < 1600000010000 and b.time_trusted()
    assert b.cpu_id() == "C1" and b.mac() == "0A0B0C0D0E0F"
    assert _board().time_trusted() and _board().reset_cause() == "power"


def test_protective_inputs_and_alarm():
    b = _board()
    got = []

    def cb(name):
        got.append(name)
        b.relay_set(False)
    b.on_alarm(cb)
    assert not b.estop() and not b.leakage() and run(b.leak_selftest())
    _charging(b)
    b.bench({"cmd": "fault", "name": "estop", "on": True})
    assert got == ["estop"] and b.estop() and not b.relay_cmd
    lat = _state(b)["latencies"]
    assert lat[-1]["what"] == "fault:estop" and 0 <= lat[-1]["us"] < 100000
    b.bench({"cmd": "fault", "name": "leakage", "on": True})
    assert got == ["estop", "leakage"] and b.leakage()
    b.bench({"cmd": "fault", "name": "rcd_dead", "on": True})
    assert not run(b.leak_selftest())
    assert not b.stop_button()
    b.bench({"cmd": "button"})
    assert b.stop_button() and not b.stop_button()  # latched until read once
    assert b.net_up()
    b.bench({"cmd": "net", "up": False})
    assert not b.net_up()
    b.net_poll()
    assert b.gun_temp() == 250  # int tenths of a degree
    b.bench({"cmd": "temp", "c": 81.5})
    assert b.gun_temp() == 815 and type(b.gun_temp()) is int
    for c, want in ((-20.5, -205), (2.3, 23), (85, 850), (250, 2500)):
        b.bench({"cmd": "temp", "c": c})
        assert b.gun_temp() == want, (c, b.gun_temp())


def test_world_persists_across_boards():
    d = fresh_dir()
    b = _board(d)
    b.bench({"cmd": "plug"})
    b.bench({"cmd": "car", "demand_a": 16, "vent": True})
    b.bench({"cmd": "mains", "v": 240.5, "pf": 0.9})
    b.bench({"cmd": "temp", "c": 40})
    b.bench({"cmd": "fault", "name": "diode", "on": True})
    b.relay_set(True)
    b2 = _board(d)
    s = _state(b2)
    assert s["plugged"] and s["vent"] and s["demand_a"] == 16 and s["mains_v"] == 240.5
    assert s["pf"] == 0.9 and s["temp_c"] == 40 and s["faults"] == ["diode"]
    assert not s["relay_cmd"] and not s["relay_closed"]  # the relay starts open
    assert "world.json.tmp" not in os.listdir(d)
    with open(d + "/world.json", "w") as f:
        f.write("{torn")
    assert not _state(_board(d))["plugged"]  # a bad world file gives the default world


def test_violations_recorded():
    b = _board()
    b.relay_set(True)  # unplugged, unlocked, no PWM
    s = _state(b)
    assert s["violation_count"] == 1
    w = s["violations"][0]["what"]
    assert "lock not locked" in w and "CP level A" in w and "PWM off" in w
    b.relay_set(False)
    b2 = _board()
    _charging(b2)
    assert _state(b2)["violation_count"] == 0
    b2.bench({"cmd": "unplug"})  # vehicle leaves C with the relay closed
    time.sleep_ms(130)
    assert _state(b2)["overdue_ms"] >= 100
    b2.relay_set(False)
    s = _state(b2)
    assert s["violation_count"] == 1 and "after vehicle left C/D" in s["violations"][0]["what"]
    assert s["latencies"][-1]["what"] == "left_cd" and s["latencies"][-1]["us"] >= 100000
    b3 = _board()
    _charging(b3)
    b3.cp_set(100)  # EVSE stops: PWM off; the car still draws until it reacts ...
    assert b3.cp_level() == "C" and b3.current_a() > 30
    time.sleep_ms(110)
    assert b3.cp_level() == "B" and b3.current_a() == 0   # ... then goes to B
    b3.relay_set(False)  # and the relay opens after it: no load, no violation
    s = _state(b3)
    assert s["violation_count"] == 0 and s["latencies"][-1]["us"] < 100000
    assert s["under_load"] == 0
    b4 = _board()
    _charging(b4)
    b4.relay_set(False)  # opened while the car draws current: counted
    assert _state(b4)["under_load"] == 1


def test_events_ring():
    b = _board()
    _charging(b)
    r = b.bench({"cmd": "events", "since": 0})
    evs = [(e["ev"], e["v"]) for e in r["events"]]
    for e in (("cp_duty", 53), ("cp_level", "C"), ("lock_set", True), ("locked", True),
              ("relay_set", True), ("contacts", True)):
        assert e in evs, e
    n = r["next"]
    assert b.bench({"cmd": "events", "since": n})["events"] == []
    for k in range(300):
        b.cp_set(10 + k % 50)
    r = b.bench({"cmd": "events", "since": 0})
    assert len(r["events"]) == 64 and r["events"][0]["n"] > 0  # the ring keeps the last 64


def test_bench_validation_changes_nothing():
    b = _board()
    before = _state(b)
    for bad in ("nope", "[1]", '{"cmd":5}', '{"cmd":"fly"}', '{"cmd":"car","want":1}',
                '{"cmd":"car","demand_a":-3}', '{"cmd":"car","demand_a":true}',
                '{"cmd":"car","wnat":true}', '{"cmd":"mains","pf":1.5}',
                '{"cmd":"fault","name":"melted","on":true}', '{"cmd":"fault","name":"estop"}',
                '{"cmd":"speed","x":0}', '{"cmd":"speed","x":2.5}', '{"cmd":"freeze","ms":-1}',
                '{"cmd":"clock","epoch_ms":"soon"}', '{"cmd":"net","up":"no"}', b"\xff\xfe"):
        r = b.bench(bad)
        assert r["ok"] is False and r["error"], (bad, r)
    after = _state(b)
    for k in before:
        if k not in ("now_ms", "ticks_ms"):
            assert before[k] == after[k], k


def test_bench_app_handlers():
    b = _board()
    b.bench_handlers["stop"] = lambda req: {"stopped": req.get("gun", 1)}
    b.bench_handlers["boom"] = lambda req: 1 // 0
    assert b.bench('{"cmd":"stop","gun":1,"id":7}') == {"ok": True, "stopped": 1, "id": 7}
    r = b.bench('{"cmd":"boom"}')
    assert not r["ok"] and "boom failed" in r["error"]
    assert b.bench('{"cmd":"stat"}')["error"] == "unknown cmd: stat"


def test_freeze_blocks():
    b = _board(speed=10)
    t = time.ticks_ms()
    r = b.bench({"cmd": "freeze", "ms": 500})
    assert r["ok"] and r["real_ms"] == 50
    assert 45 <= time.ticks_diff(time.ticks_ms(), t) < 400


def test_bench_port_tcp():
    import asyncio
    port = 20000 + random.getrandbits(12)   # below the ephemeral ports (32768 on): no
    # client socket of an earlier test holds it
    b = _board(bench_port=port)
    out = {}

    async def ask(r, w, line):
        w.write(line + "\n")
        await w.drain()
        return json.loads(await r.readline())

    async def main():
        srv = asyncio.create_task(b.tasks()[0])
        await asyncio.sleep_ms(20)
        r1, w1 = await asyncio.open_connection("127.0.0.1", port)
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        out["plug"] = await ask(r1, w1, '{"cmd":"plug"}')
        out["bad"] = await ask(r2, w2, "{oops")
        out["range"] = await ask(r2, w2, '{"cmd":"car","demand_a":500}')
        out["unknown"] = await ask(r1, w1, '{"cmd":"dance"}')
        out["state"] = await ask(r2, w2, '{"cmd":"state"}')
        out["ev"] = await ask(r1, w1, '{"cmd":"events","since":0}')
        w1.close()
        out["after"] = await ask(r2, w2, '{"cmd":"state","id":"x"}')
        w2.close()
        b.close()
        await asyncio.sleep_ms(10)
        srv.cancel()

    asyncio.run(main())
    assert out["plug"] == {"ok": True}
    assert out["bad"] == {"ok": False, "error": "not JSON"}
    assert not out["range"]["ok"] and "demand_a" in out["range"]["error"]
    assert out["unknown"]["error"] == "unknown cmd: dance"
    s = out["state"]["state"]
    assert s["plugged"] and s["demand_a"] == 32 and s["cp_level"] == "B"
    assert any(e["ev"] == "bench" for e in out["ev"]["events"])
    assert out["after"]["id"] == "x" and out["after"]["state"]["plugged"]


def _mp():
    import sys
    return sys.executable if sys.executable.endswith("micropython") else "micropython"


def _firmware_dir():
    d = sim.__file__.rsplit("/", 2)[0]
    return d if d.startswith("/") else os.getcwd() + "/" + d


def test_watchdog_kills_process():
    d = fresh_dir()
    script = d + "/wd.py"
    with open(script, "w") as f:
        f.write("import time\nfrom hal import sim\n"
                "b = sim.Board({}, {'storage': %r})\n"
                "b.wdt_start(300)\n"
                "for k in range(5):\n    time.sleep_ms(100)\n    b.wdt_feed()\n"
                "print('fed')\n"
                "b.bench({'cmd': 'freeze', 'ms': 3000})\n"
                "print('survived')\n" % d)
    st = os.system("MICROPYPATH=.frozen:%s %s %s > %s/out.txt 2>&1"
                   % (_firmware_dir(), _mp(), script, d))
    assert st & 0x7F == 9 or st >> 8 == 128 + 9, st  # killed by SIGKILL
    with open(d + "/out.txt") as f:
        out = f.read()
    assert "fed" in out and "WDT: reset" in out and "survived" not in out, out
    b = _board(d)
    assert b.reset_cause() == "watchdog" and not b.relay_feedback()
    assert _board(d).reset_cause() == "power"  # cleared once read at start


def test_wdt_fed_survives_and_close_disarms():
    b = _board(speed=10)
    b.wdt_start(2000)  # 200 ms real at speed 10
    for k in range(10):
        time.sleep_ms(50)
        b.wdt_feed()
    b.close()
    time.sleep_ms(300)  # disarmed: no kill


def test_shutdown_and_real_board_file():
    try:
        with open("boards/sim/board.json") as f:
            cfg = json.load(f)
        assert cfg["sim"]["v_uv"] != cfg["cal"]["v_uv"]
    except OSError:
        cfg = CFG
    b = sim.Board(cfg, {"storage": fresh_dir()})
    _charging(b)
    b.shutdown()
    time.sleep_ms(110)  # the car reacts to the PWM going off (ev_react_ms)
    assert not b.relay_cmd and b.cp_read()[0] == 9000 and b.duty == 100
    assert b.tasks() == []
