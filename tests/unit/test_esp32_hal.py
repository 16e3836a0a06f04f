"""Unit tests of hal.esp32.Board on a fake machine / network / ntptime layer (MicroPython).

The fakes below are inserted into sys.modules before hal.esp32 is imported; they record
PWM duty, pin writes, ADC reads (with their fake time, when FakeADC.log is a list),
watchdog feeds, timers and IRQ handlers.  The module's ``time`` is replaced by FakeTime,
which counts from 2000-01-01 like the ESP32 and whose microsecond clock advances 20 us
per ADC read and 1 us per reading of the clock itself (so a busy wait on it ends);
asyncio sleeps take real time and no fake time.  adc_burst and leak_selftest are
coroutines, run with kit.run.
"""
import json
import math
import sys
import time

import micropython

from kit import run
import asyncio as _asyncio

_plain_sleep = _asyncio.sleep_ms

Y2K = 946684800


class FakePin:
    IN, OUT = 1, 3
    IRQ_RISING, IRQ_FALLING = 1, 2
    by = {}         # gpio -> the last Pin made for it
    locked = False  # heap locked: record no history

    def __init__(self, n, mode=-1, *, value=None):
        self.n, self.mode, self.v = n, mode, 0 if value is None else value
        self.writes, self.history, self.handler = 0, [], None
        FakePin.by[n] = self

    def value(self, x=None):
        if x is None:
            return self.v
        self.v = x
        self.writes += 1
        if not FakePin.locked:
            self.history.append(x)

    def irq(self, handler=None, trigger=3, *, hard=False):
        self.handler, self.trigger, self.hard = handler, trigger, hard


class FakePWM:
    last = None

    def __init__(self, pin, *, freq=0, duty_u16=0):
        self.pin, self.freq, self.duties = pin, freq, [duty_u16]
        FakePWM.last = self

    def duty_u16(self, u):
        self.duties.append(u)


class FakeADC:
    ATTN_11DB = 3
    src = {}        # gpio -> function returning the next read_u16 value
    uv = {}         # gpio -> read_uv value
    reads = 0
    log = None      # a list: (fake us at the read, gpio) of every read_u16

    def __init__(self, id, *, atten=None):
        self.n, self.atten = id.n, atten

    def read_u16(self):
        FakeADC.reads += 1
        if FakeADC.log is not None:
            FakeADC.log.append((FakeTime.us, self.n))
        FakeTime.us += 20
        return FakeADC.src[self.n]()

    def read_uv(self):
        FakeADC.reads += 1
        return FakeADC.uv[self.n]


class FakeWDT:
    made, feeds, timeout = 0, 0, None

    def __init__(self, *, timeout=5000):
        FakeWDT.made += 1
        FakeWDT.timeout = timeout

    def feed(self):
        FakeWDT.feeds += 1


class FakeRTC:
    set_to = None

    def datetime(self, datetimetuple=None):
        FakeRTC.set_to = datetimetuple


class FakeTimer:
    PERIODIC = 1
    last = None

    def __init__(self, tid):
        self.tid, self.live = tid, False
        FakeTimer.last = self

    def init(self, *, mode=1, period=None, callback=None):
        self.period, self.callback, self.live = period, callback, True

    def deinit(self):
        self.live = False


class Mod:
    pass


machine = Mod()
machine.Pin, machine.PWM, machine.ADC, machine.WDT = FakePin, FakePWM, FakeADC, FakeWDT
machine.RTC, machine.Timer = FakeRTC, FakeTimer
machine.PWRON_RESET, machine.WDT_RESET, machine.SOFT_RESET = 1, 3, 5
machine.cause = 3
machine.reset_cause = lambda: machine.cause
machine.unique_id = lambda: b"\x24\x0a\xc4\x12\x34\xab"


class FakeWLAN:
    one = None

    def __init__(self, iface):
        self.iface, self.on, self.up, self.connects = iface, False, False, []
        FakeWLAN.one = self

    def active(self, on=None):
        if on is not None:
            self.on = on
        return self.on

    def isconnected(self):
        return self.up

    def connect(self, ssid, pw):
        self.connects.append((ssid, pw))

    def config(self, key):
        assert key == "mac"
        return b"\x24\x0a\xc4\x12\x34\xac"


network = Mod()
network.STA_IF, network.WLAN = 0, FakeWLAN
ntptime = Mod()
ntptime.host = None
ntptime.calls = 0
NTP_2000 = 1767225600 - Y2K   # 2026-01-01 00:00:00 UTC in seconds since 2000


def _ntp_time():
    ntptime.calls += 1
    return NTP_2000


ntptime.time = _ntp_time
sys.modules["machine"] = machine
sys.modules["network"] = network
sys.modules["ntptime"] = ntptime


class FakeTime:
    """time as the ESP32 has it: epoch 2000; ticks_us advanced by ADC reads."""
    us = 0
    ns = (1700000000 - Y2K) * 1000000000     # 2023-11-14: the RTC was never set
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
    sleep_ms = time.sleep_ms

    @staticmethod
    def ticks_us():
        FakeTime.us += 1
        return FakeTime.us - 1

    @staticmethod
    def time_ns():
        return FakeTime.ns

    @staticmethod
    def gmtime(s=None):
        return time.gmtime((FakeTime.ns // 1000000000 if s is None else s) + Y2K)


from hal import esp32  # noqa: E402  (after the fakes)

esp32.time = FakeTime

with open("boards/devkitc/board.json") as _f:
    CFG = json.load(_f)
P = CFG["pins"]
CFG_OPTS = {"cfg": {"wifi_ssid": "site", "wifi_password": "pw1", "ntp_host": "ntp.example"}}


def _cp_wave(hi_count, lo_count, duty=53):
    """read_u16 values of a 1 kHz PWM: high for duty % of 20 reads (one period), else low."""
    k = [0]

    def read():
        k[0] += 1
        return (hi_count if k[0] % 20 < duty * 20 // 100 else lo_count) << 4
    return read


def _sine(offset, amp, per_period):
    k = [0]

    def read():
        k[0] += 1
        return int(offset + amp * math.sin(2 * math.pi * k[0] / per_period)) << 4
    return read


def _sleep(ms):
    """asyncio.sleep_ms as the board has it: the fake clock moves on by the time slept."""
    import asyncio
    FakeTime.us += ms * 1000
    return _plain_sleep(0)


def burst(b, coro=None):
    """One adc_burst (or a coroutine that takes one), its awaits passing fake time as
    real sleeps pass real time."""
    import asyncio
    asyncio.sleep_ms = _sleep
    try:
        return run(coro or b.adc_burst())
    finally:
        asyncio.sleep_ms = _plain_sleep


def _board(**over):
    cfg = json.loads(json.dumps(CFG))
    for k, v in over.items():
        cfg[k].update(v)
    FakeADC.src[P["cp_adc"]] = _cp_wave(2978, 248)
    FakeADC.src[P["v_adc"]] = _sine(2048, 1600, 500)
    FakeADC.src[P["i_adc"]] = _sine(2048, 400, 500)
    FakeADC.uv[P["ntc_adc"]] = 1650000
    esp32._WDT = esp32._HOLD = None
    FakeWDT.made = FakeWDT.feeds = 0
    return esp32.Board(cfg, CFG_OPTS)


def _pin(name):
    return FakePin.by[P[name]]


def test_boot_state_is_safe():
    b = _board()
    assert _pin("relay").mode == FakePin.OUT and _pin("relay").v == 0   # active high: off
    assert _pin("lock").v == 0 and _pin("rcd_test").v == 0
    assert FakePWM.last.freq == 1000 and FakePWM.last.duties == [65535]  # steady +12 V
    assert b.speed == 1 and b.storage == "" and b.bench_handlers == {}
    assert _pin("estop").handler and _pin("estop").hard and _pin("leak").hard
    assert _pin("estop").trigger == FakePin.IRQ_FALLING      # estop is active low
    assert _pin("leak").trigger == FakePin.IRQ_RISING
    assert not _pin("button").hard


def test_cp_pwm_duty_and_plateaus():
    b = _board()
    b.cp_set(53)
    assert FakePWM.last.duties[-1] == 53 * 65535 // 100
    hi, lo = b.cp_read()
    # counts -> mV: (2978 - 1613) * 8790 uV = 11998 mV; (248 - 1613) * 8.79 = -11998 mV
    assert hi == (2978 - 1613) * 8790 // 1000 and lo == (248 - 1613) * 8790 // 1000, (hi, lo)
    assert FakeADC.reads >= CFG["cp"]["reads"]
    b.cp_set(0)
    assert FakePWM.last.duties[-1] == 0
    b.cp_set(100)
    assert FakePWM.last.duties[-1] == 65535
    hi, lo = b.cp_read()          # no PWM: one level, the mean of what was seen
    assert hi == lo
    for bad in (-1, 101, 5.0, True):
        try:
            b.cp_set(bad)
            raise AssertionError("cp_set accepted %r" % bad)
        except ValueError:
            pass


def test_inverted_pwm():
    b = _board(active={"cp_pwm": 0})
    assert FakePWM.last.duties == [0]
    b.cp_set(25)
    assert FakePWM.last.duties[-1] == 65535 - 25 * 65535 // 100


def test_relay_lock_and_feedback():
    b = _board()
    b.relay_set(True)
    assert _pin("relay").v == 1 and b.relay_feedback()    # devkitc: no feedback contact
    b.relay_set(False)
    assert _pin("relay").history == [1, 0] and not b.relay_feedback()
    b.lock_set(True)
    assert _pin("lock").v == 1 and b.lock_feedback()
    b.lock_set(False)
    assert not b.lock_feedback()
    # with feedback inputs fitted the board reports what they read
    b = _board(pins={"relay_fb": 13, "lock_fb": 14}, active={"lock_fb": 0})
    FakePin.by[13].v, FakePin.by[14].v = 1, 1
    assert b.relay_feedback() and not b.lock_feedback()
    FakePin.by[14].v = 0
    assert b.lock_feedback()


def _slices(gpio):
    """The fake times of the reads of `gpio` in FakeADC.log, cut where they pause."""
    out = []
    last = None
    for t, n in FakeADC.log:
        if n != gpio:
            continue
        if last is None or t - last > 1000:
            out.append([])
        out[-1].append(t)
        last = t
    return out


def test_adc_burst_slices_tile_the_mains_cycle():
    """A burst is 4 slices of a quarter cycle (5 ms at 50 Hz: the longest the loop is
    blocked), each starting one cycle and one quarter after the one before, so that their
    phases tile one whole cycle; the buffers are sized so a slice fills its quarter."""
    b = _board()
    FakeADC.log = []
    try:
        v, i, p = burst(b)            # first burst: sizes the buffers
        assert len(v) == len(i) == 16 and p == 40, (len(v), p)   # 2 reads x 20 us a pair
        assert [len(s) for s in _slices(P["v_adc"])] == [4] * 4
        FakeADC.log = []
        v, i, p = burst(b)
        assert p == 40 and len(v) == len(i) == 500, (len(v), p)
        assert type(v) is type(i) is type(esp32.array("h"))
        assert 400 <= min(v) and max(v) <= 3700 and min(i) >= 1600
        for gpio in (P["v_adc"], P["i_adc"]):
            sl = _slices(gpio)
            assert [len(s) for s in sl] == [125] * 4, [len(s) for s in sl]
            starts = [s[0] for s in sl]
            assert [starts[k + 1] - starts[k] for k in range(3)] == [25000] * 3, starts
            assert sorted((t - starts[0]) % 20000 for t in starts) == [0, 5000, 10000, 15000]
            for s in sl:    # each slice fills its quarter, and reads no longer than that
                assert 5000 - 40 <= s[-1] + 40 - s[0] <= 5000, s[-1] - s[0]
        FakeADC.log = []
        v2, i2, _ = burst(b)
        assert v2 is v and i2 is i                # converged: the buffers are reused
    finally:
        FakeADC.log = None
    b = _board(hw={"max_pairs": 100})
    burst(b)
    assert len(burst(b)[0]) == 100  # never above the board's cap


def test_adc_burst_late_slice_keeps_its_phase():
    """When the loop comes back after a slice's start (another task ran long during the
    await), the slice starts whole cycles later, at the same phase: the phases still tile
    the cycle."""
    import asyncio
    b = _board()
    burst(b)                        # size the buffers (125 pairs a slice)
    n = [0]

    def late(ms):                             # the first wait comes back 30 ms late
        n[0] += 1
        if n[0] == 1:
            FakeTime.us += 30000
        return _sleep(ms)
    FakeADC.log = []
    try:
        asyncio.sleep_ms = late
        run(b.adc_burst())
        sl = _slices(P["i_adc"])
    finally:
        FakeADC.log = None
        asyncio.sleep_ms = _plain_sleep
    starts = [s[0] for s in sl]
    assert n[0] >= 3 and [len(s) for s in sl] == [125] * 4, (n, [len(s) for s in sl])
    assert sorted((t - starts[0]) % 20000 for t in starts) == [0, 5000, 10000, 15000], starts
    assert starts[1] - starts[0] in (45000, 65000), starts     # whole cycles later
    assert starts[2] - starts[1] == starts[3] - starts[2] == 25000, starts


def test_adc_burst_two_cycles():
    """hw cycles 2: 8 slices whose phases tile two whole cycles (each quarter twice)."""
    b = _board(hw={"cycles": 2})
    burst(b)
    FakeADC.log = []
    try:
        v, i, p = burst(b)
        sl = _slices(P["v_adc"])
    finally:
        FakeADC.log = None
    # the cap (max_pairs 600) leaves 75 pairs of the 125 a quarter could hold
    assert len(v) == 600 and [len(s) for s in sl] == [75] * 8, (len(v), [len(s) for s in sl])
    starts = [s[0] for s in sl]
    assert [starts[k + 1] - starts[k] for k in range(7)] == [25000] * 7, starts
    assert sorted((t - starts[0]) % 20000 for t in starts) == \
        [0, 0, 5000, 5000, 10000, 10000, 15000, 15000]


def test_gun_temperature_ntc():
    b = _board()
    assert b.gun_temp() == 250                # mid-scale: NTC == r_fixed == r25 -> 25.0 C
    FakeADC.uv[P["ntc_adc"]] = 2500000        # NTC on top: higher voltage = lower R = hotter
    assert b.gun_temp() == 250                # cached for a second
    b._temp_t -= 1000
    t = b.gun_temp()
    x = 1 - 2.5 / 3.3
    r = 10000 * x / (1 - x)
    want = 1 / (1 / 298.15 + math.log(r / 10000) / 3950) - 273.15
    assert type(t) is int and t == int(want * 10) == 530, (t, want)     # tenths of a degree
    FakeADC.uv[P["ntc_adc"]] = 0              # open sensor: fail safe, trips over-temperature
    b._temp_t -= 1000
    assert b.gun_temp() == 2500               # 250.0 C
    for uv in (3300000, 3250000, 40000):      # shorted, and near either rail
        FakeADC.uv[P["ntc_adc"]] = uv
        b._temp_t -= 1000
        assert b.gun_temp() == 2500, uv
    b = _board(pins={"ntc_adc": -1})
    assert b.gun_temp() is None


def _temp(b, *uvs):
    """gun_temp() for NTC reads of these uV (the last one repeated), a second later."""
    seq = list(uvs)
    a = b._a["ntc_adc"]
    a.read_uv = lambda: seq.pop(0) if len(seq) > 1 else seq[0]
    b._temp_t -= 1000
    return b.gun_temp()


def test_ntc_at_the_adc_limits_is_a_broken_sensor():
    """The ESP32's ADC at 11 dB reads nothing below about 150 mV (an open NTC with the
    NTC on top reads the chip's calibrated floor, ~120 mV, not 0: -34 C by the Beta
    equation) and saturates near 3.1 V (a short).  Any read outside the board file's
    adc min_mv..max_mv is a broken sensor: 2500 (250.0 C), which trips over-temperature."""
    b = _board()
    assert b._uv_lo == 150000 and b._uv_hi == 3100000
    assert _temp(b, 120000) == 2500           # open: the floor, not -34 C
    assert _temp(b, 150000) == 2500           # at the limit: not a reading
    t = _temp(b, 151000)                      # just inside: a (cold) temperature
    x = 1 - 0.151 / 3.3
    want = 1 / (1 / 298.15 + math.log(10000 * x / (1 - x) / 10000) / 3950) - 273.15
    assert t == int(want * 10) == -306, (t, want)
    assert _temp(b, 3100000) == 2500          # saturated: a short
    assert 1020 <= _temp(b, 3099000) <= 1030  # just inside: 102 C, which trips anyway
    assert _temp(b, 1650000, 1650000, 1650000, 120000) == 2500    # one read of four
    assert _temp(b, 1650000) == 250
    # the limits are the board's: an ADC that reads down to 100 mV takes 120 mV for -34 C
    b = _board(adc={"min_mv": 100})
    assert -345 <= _temp(b, 120000) <= -335
    # ... and never above the divider's reference, whatever max_mv says
    b = _board(ntc={"vref_mv": 3000})
    assert b._uv_hi == 3000000 and _temp(b, 3000000) == 2500 and _temp(b, 2999000) != 2500
    # a board file without the section: the ESP32's defaults
    cfg = json.loads(json.dumps(CFG))
    del cfg["adc"]
    b = esp32.Board(cfg, CFG_OPTS)
    assert (b._uv_lo, b._uv_hi) == (150000, 3100000) and _temp(b, 120000) == 2500


def _clamped(read):
    """A read_u16 source clipped as the ADC clips: codes 0..4095."""
    return lambda: max(0, min(4095, read() >> 4)) << 4


def test_cp_and_mains_at_the_adc_rails_are_no_readings():
    """A CP sense input at either rail reads as a plateau beyond +-13.5 V, which the pilot
    takes for an error; a mains burst with samples at the rails is no measurement."""
    from pile import pilot, store
    from pile.metering import Metering
    import kit
    b = _board()
    for code, mv in ((0, -14179), (4095, 21816)):
        FakeADC.src[P["cp_adc"]] = lambda: code << 4
        hi, lo = b.cp_read()
        assert hi == lo == mv and pilot.level(hi) == "E", (code, hi, lo)
    b.cp_set(53)
    FakeADC.src[P["cp_adc"]] = _cp_wave(2978, 0)        # the low plateau at the floor
    hi, lo = b.cp_read()
    p = pilot.Pilot()
    p.update(hi, lo, True)
    assert hi == 11998 and lo == -14179 and p.raw == "E", (hi, lo)

    assert store.init(kit.fresh_dir()) is None
    cfg = kit.cfg()
    m = Metering(b, json.loads(json.dumps(CFG)), cfg, 300)
    burst(b)                                            # size the buffers
    burst(b, m.sample(True))
    assert m.valid and not m.bad and 220000 < m.mv < 240000, m.mv
    # 260 V peak-to-peak beyond the front end: the voltage clips at codes 0 and 4095
    FakeADC.src[P["v_adc"]] = _clamped(_sine(2048, 2300, 500))
    before = m.register()
    assert burst(b, m.sample(True)) == 0
    assert min(b._v) == 0 and max(b._v) == 4095     # (the buffers are reused by now)
    assert m.bad and not m.valid and m.mv == m.ma == m.mw == 0 and m.register() == before
    # the current at one rail only (a broken channel pulled up): bad as well
    FakeADC.src[P["v_adc"]] = _sine(2048, 1600, 500)
    FakeADC.src[P["i_adc"]] = _clamped(_sine(3600, 600, 500))
    burst(b, m.sample(True))
    assert m.bad and max(b._i) == 4095 and min(b._i) > 2900
    FakeADC.src[P["i_adc"]] = _sine(2048, 400, 500)
    burst(b, m.sample(True))
    assert m.valid and not m.bad


def _levels(history):
    """The levels a pin went through (repeated writes of one level count once)."""
    out = []
    for x in history:
        if not out or out[-1] != x:
            out.append(x)
    return out


def test_inputs_button_and_selftest():
    b = _board()
    _pin("estop").v = 1                      # active low: released
    assert not b.estop()
    _pin("estop").v = 0
    assert b.estop()
    _pin("leak").v = 1
    assert b.leakage()
    _pin("leak").v = 0
    assert not b.stop_button()
    _pin("button").handler(_pin("button"))
    assert b.stop_button() and not b.stop_button()      # latched once per press

    # the test winding makes the detector answer: leak follows rcd_test, and its edge
    # raises the IRQ, which must not count as a leakage alarm during the test
    got = []
    b.on_alarm(got.append)
    leak, rcd = _pin("leak"), _pin("rcd_test")
    plain = FakePin.value

    def wired(self, x=None):
        if self is leak and x is None:
            return rcd.v
        plain(self, x)
        if self is rcd and x == 1:
            leak.handler(leak)
    FakePin.value = wired
    try:
        b.relay_set(True)
        assert run(b.leak_selftest())
        assert _levels(rcd.history) == [1, 0] and _pin("relay").v == 1   # on, then off
    finally:
        FakePin.value = plain
    time.sleep_ms(1)
    assert got == [], got
    leak.handler(leak)                        # outside a test: a leakage alarm
    time.sleep_ms(1)
    assert got == ["leakage"] and _pin("relay").v == 0, got
    n = len(rcd.history)
    assert not run(b.leak_selftest())         # no answer: the detector is dead
    assert _levels(rcd.history[n:]) == [1, 0] and rcd.v == 0   # the winding is off again
    assert run(_board(pins={"rcd_test": -1}).leak_selftest())


def test_selftest_cancelled_leaves_the_winding_off():
    """The RCD test awaits; cancelled half way (the pile shuts down), the test winding
    is switched off again and a later leakage edge counts as an alarm."""
    import asyncio
    b = _board()
    rcd, leak = _pin("rcd_test"), _pin("leak")
    got = []
    b.on_alarm(got.append)

    async def main():
        t = asyncio.create_task(b.leak_selftest())
        await asyncio.sleep_ms(10)
        assert rcd.v == 1                     # the test runs (the detector never answers)
        t.cancel()
        await asyncio.sleep_ms(5)
    asyncio.run(main())
    assert rcd.v == 0 and _levels(rcd.history) == [1, 0]
    b.relay_set(True)
    leak.v = 1
    leak.handler(leak)
    time.sleep_ms(1)
    assert got == ["leakage"] and _pin("relay").v == 0, got


def test_alarm_irq_opens_the_relay_without_allocating():
    b = _board()
    got = []
    b.on_alarm(lambda name: got.append((name, _pin("relay").v)))
    b.relay_set(True)
    assert _pin("relay").v == 1
    estop = _pin("estop")
    queue = [None, None]

    class Sched:                             # the board runs scheduled work after the ISR;
        @staticmethod                        # here it waits until the heap is unlocked
        def schedule(fn, arg):
            queue[0], queue[1] = fn, arg
    esp32.micropython = Sched
    FakePin.locked = True
    micropython.heap_lock()                  # a hard IRQ may not allocate
    try:
        estop.handler(estop)
        err = None
    except MemoryError as e:
        err = e
    micropython.heap_unlock()
    FakePin.locked = False
    esp32.micropython = micropython
    assert err is None, "the IRQ handler allocated"
    assert _pin("relay").v == 0 and not b.relay_feedback()   # open at once, in the IRQ
    assert got == [] and queue[1] is estop
    queue[0](queue[1])
    assert got == [("estop", 0)], got        # the callback ran later, relay already open
    b.relay_set(True)
    leak = _pin("leak")
    leak.handler(leak)
    time.sleep_ms(1)
    assert got[-1] == ("leakage", 0) and _pin("relay").v == 0


def test_watchdog_and_console_hold():
    b = _board()
    b.wdt_start(8000)
    assert FakeWDT.made == 1 and FakeWDT.timeout == 8000 and FakeWDT.feeds == 1
    b.wdt_feed()
    b.wdt_feed()
    assert FakeWDT.feeds == 3
    b.close()                                 # Ctrl-C: a Timer keeps feeding it
    t = FakeTimer.last
    assert t.live and t.period == 1000 and esp32._HOLD is t
    t.callback(t)
    assert FakeWDT.feeds == 4
    b.wdt_start(8000)                         # the application runs again
    assert not t.live and esp32._HOLD is None and FakeWDT.made == 1
    machine.cause = 3
    assert b.reset_cause() == "watchdog"
    machine.cause = 5
    assert b.reset_cause() == "soft"
    machine.cause = 1
    assert b.reset_cause() == "power"
    b2 = _board()
    b2.close()                                # never armed: nothing to hold
    assert esp32._HOLD is None


def test_epoch_and_clock():
    b = _board()
    assert not b.time_trusted()               # RTC says 2023: never set since power-up
    assert b.now_ms() == 1700000000000        # 2000-based time_ns + 946684800 s
    b.set_time_ms(1767225600123)              # 2026-01-01 00:00:00.123 UTC, a Thursday
    assert FakeRTC.set_to == (2026, 1, 1, 3, 0, 0, 0, 123000), FakeRTC.set_to
    assert b.time_trusted()
    FakeTime.ns = (1767225600 - Y2K) * 1000000000
    assert _board().time_trusted()           # a soft reset keeps a clock set this year
    FakeTime.ns = (1700000000 - Y2K) * 1000000000
    t0 = b.ticks_ms()
    assert time.ticks_diff(b.ticks_ms(), t0) >= 0


def test_network_identity_and_ntp():
    import asyncio
    b = _board()
    w = FakeWLAN.one
    assert w.on and w.iface == network.STA_IF
    assert not b.net_up()
    b.net_poll()
    assert w.connects == [("site", "pw1")]
    b.net_poll()                              # at most one attempt per 15 s
    assert len(w.connects) == 1
    b._net_t = time.ticks_add(b._net_t, -16000)
    b.net_poll()
    assert len(w.connects) == 2
    w.up = True
    assert b.net_up()
    b._net_t = time.ticks_add(b._net_t, -16000)
    b.net_poll()
    assert len(w.connects) == 2               # connected: nothing to do
    assert b.cpu_id() == "240AC41234AB" and b.mac() == "240AC41234AC"

    tasks = b.tasks()
    assert len(tasks) == 1

    async def go():
        t = asyncio.create_task(tasks[0])
        for _ in range(100):
            await asyncio.sleep_ms(20)
            if b.time_trusted():
                break
        t.cancel()
    asyncio.run(go())
    assert ntptime.host == "ntp.example" and ntptime.calls == 1
    assert b.time_trusted() and FakeRTC.set_to[:3] == (2026, 1, 1), FakeRTC.set_to
    b.relay_set(True)
    b.cp_set(53)
    b.shutdown()
    assert _pin("relay").v == 0 and FakePWM.last.duties[-1] == 65535


def test_board_without_wifi_never_connects():
    b = esp32.Board(json.loads(json.dumps(CFG)), {})
    b.net_poll()
    assert FakeWLAN.one.connects == []


def test_the_application_runs_on_it():
    """App (and its protection, metering, charger) built on the ESP32 board runs its tasks."""
    import asyncio
    import os
    from pile import config
    from pile.app import App
    b = _board()
    pwm = FakePWM.last
    # a pilot without a vehicle: +12 V steady, -12 V low plateau while PWM runs
    FakeADC.src[P["cp_adc"]] = lambda: (2978 if pwm.duties[-1] == 65535 or
                                        pwm.duties[-1] and FakeADC.reads % 2 else 248) << 4
    FakeADC.src[P["i_adc"]] = lambda: 2048 << 4      # no current: the relay is open
    _pin("estop").v = 1                              # active low: released
    d = "/tmp/esp32test%d" % (time.ticks_ms() & 0xFFFFFF)
    try:
        os.mkdir(d)
    except OSError:
        pass
    b.storage = d
    cfg = dict(config.DEFAULTS, secret_key="k", provision_url="http://127.0.0.1:9/x",
               cpu_id="", backoff_min_ms=5000)
    app = App(cfg, json.loads(json.dumps(CFG)), b)
    assert cfg["cpu_id"] == "240AC41234AB"        # the board's id when the config has none

    async def run():
        try:
            await asyncio.wait_for_ms(app.main(), 600)
        except asyncio.TimeoutError:
            pass
    fake_us = FakeTime.ticks_us
    FakeTime.ticks_us = time.ticks_us          # the app's sleeps pass time: real µs here
    try:
        asyncio.run(run())
    finally:
        FakeTime.ticks_us = fake_us
    st = app.status()
    assert st["cp"] == "A" and st["relay"] is False and st["faults"] == [], st
    assert 200000 < st["v_mv"] < 240000 and st["temp_c"] == 25.0, st
    assert st["i_ma"] == 0 and st["work_status"] == 10, st
    assert FakeWDT.made == 1 and FakeWDT.feeds >= 2
    assert FakeWLAN.one.connects == [("site", "pw1")]          # net_poll from the app
    assert _pin("relay").v == 0 and FakePWM.last.duties[-1] == 65535   # shut down safely
    for n in os.listdir(d):
        os.remove(d + "/" + n)
    os.rmdir(d)
