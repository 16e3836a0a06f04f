"""ESP32 board: the HAL contract of hal/__init__.py on machine, network and ntptime.

Pins and calibration come from the board file (boards/<name>/board.json, checked by
pile.boardfile before this module loads):
  pins    GPIO of cp_pwm, cp_adc, v_adc, i_adc, relay (required) and relay_fb, lock,
          lock_fb, ntc_adc, estop, leak, rcd_test, button (-1 = not fitted).  ADC pins
          must be on ADC1 (GPIO 32..39): ADC2 does not work while Wi-Fi runs.  Inputs get
          no internal pulls (GPIO 34..39 have none): the board provides them.
  active  the level (0/1) at which a pin is asserted, default 1; cp_pwm 0 inverts the PWM.
  cp      CP sense divider: offset (12-bit counts at CP 0 V), uv (CP microvolts per
          count), reads (ADC reads per cp_read; they must span more than one 1 kHz period,
          so the max is the high plateau and the min the low one).
  ntc     gun temperature, Beta equation: beta, r25 (ohm at 25 C), r_fixed, vref_mv, top
          (1: NTC from vref to the ADC node and r_fixed to ground, so an open sensor reads
          0 V).  Read at most once a second, four reads of read_uv.  A read the ADC cannot
          really make (at or below adc.min_mv, at or above adc.max_mv or vref_mv) is a
          broken sensor, open or short, and reports 250 C (2500), which trips
          over-temperature (fail safe).  With the reference divider (10 k, Beta 3950, 3.3 V)
          and the ESP32's 150..3100 mV that leaves about -30..+102 C readable: colder than
          that a sound sensor reads broken too (the pile will not charge; an open sensor
          reads -34..-37 C from the ADC's floor and must not pass for cold).
  adc     what the ADC can really read at the 11 dB attenuation set here (pile.boardfile
          has the defaults: 150..3100 mV, codes 0..4095).  The CP divider must keep the
          plausible CP range inside the codes (pile.boardfile checks it), so a CP read at a
          rail comes out as an implausible plateau, which pile.pilot takes for an error.
  hw      mains_hz and cycles (the burst window), max_pairs (burst buffer), rcd_ms.
  cal     mains offsets and gains (pile.meter).

adc_burst reads v and i alternately as fast as the interpreter goes (~25 us a read) in
slices of a quarter mains cycle (5 ms at 50 Hz, the longest the loop is blocked), each
slice one cycle and one quarter after the one before, so the slices' phases tile
`cycles` whole cycles (an RMS over whole cycles); it sizes its buffers so that a slice
fills its quarter and returns the same two arrays each time (reused).  A burst takes
about 4 x 25 ms per cycle of window, the loop running between slices.
Emergency stop and leakage are hard IRQs: the handler opens the relay itself, then
schedules the on_alarm callbacks.  leak_selftest drives the RCD test winding and awaits
up to 2 x rcd_ms; with no test winding or detector fitted it returns True.
Wall clock: time.time_ns() counts from 2000-01-01 on the ESP32 (the offset is taken from
time.gmtime(0), so a 1970 port also works); NTP runs in a thread the _ntp task polls,
every 6 h once it succeeded (30 s after a failure).  The clock counts as trusted once set
in this run, or when the RTC already shows a year >= 2024 (a soft or watchdog reset
keeps it).  The watchdog cannot be stopped on the ESP32: close() (the app was stopped at
the console) feeds it from a Timer so the REPL stays usable; wdt_start() ends that.
"""
import math
import time
from array import array
from binascii import hexlify

import machine
import micropython
import network
from machine import ADC, PWM, Pin

# (annotations cost nothing on the board: MicroPython compiles them away)
_WDT: machine.WDT | None = None     # one per boot: cannot be stopped or created twice
_HOLD: machine.Timer | None = None  # feeds it while the application is stopped at the REPL
_OUT = ("relay", "lock", "rcd_test")


def _feed(t: machine.Timer) -> None:
    if _WDT is not None:
        _WDT.feed()


def _ask(ntptime, box):
    try:
        box.append(ntptime.time())
    except Exception as e:
        box.append(e)


class Board:
    speed = 1
    storage = ""

    def __init__(self, board_cfg, opts):
        self.cfg = board_cfg
        act = board_cfg.get("active", {})
        self._p, self._lv = {}, {}
        for name, gpio in board_cfg["pins"].items():
            if gpio >= 0:
                lv = act.get(name, 1)
                self._lv[name] = lv
                self._p[name] = Pin(gpio, Pin.OUT, value=1 - lv) if name in _OUT \
                    else Pin(gpio, Pin.IN)
        self._cmd = {"relay": False, "lock": False}
        self._duty = 100
        self._pwm = PWM(self._p["cp_pwm"], freq=1000, duty_u16=65535 * self._lv["cp_pwm"])
        self._a = {}            # the analog inputs, by the name of their pin
        for name in ("cp_adc", "v_adc", "i_adc", "ntc_adc"):
            if name in self._p:
                self._a[name] = ADC(self._p[name], atten=ADC.ATTN_11DB)
        adc = board_cfg.get("adc") or {}
        # NTC reads (uV) strictly inside these are real; outside, the sensor is broken
        self._uv_lo = adc.get("min_mv", 150) * 1000
        self._uv_hi = min(adc.get("max_mv", 3100), board_cfg["ntc"]["vref_mv"]) * 1000 \
            if "ntc_adc" in self._a else 0
        hw = board_cfg["hw"]
        self._cycles = hw["cycles"]
        self._win = hw["cycles"] * 1000000 // hw["mains_hz"]
        self._slices = 4 * hw["cycles"]         # quarter cycles
        self._v, self._i = array("h", bytes(8 * self._slices)), array("h", bytes(8 * self._slices))
        self._temp, self._temp_t = None, time.ticks_ms()
        self._alarms, self._pressed, self._testing = [], False, False
        self._fire_ref = self._fire    # bound once: the hard IRQ must not allocate
        for name in ("estop", "leak", "button"):
            if name in self._p:
                self._p[name].irq(self._irq, Pin.IRQ_RISING if self._lv[name]
                                  else Pin.IRQ_FALLING, hard=name != "button")
        self._ep = 946684800 if time.gmtime(0)[0] == 2000 else 0  # to the Unix epoch
        self._trusted = time.gmtime()[0] >= 2024
        cfg = opts.get("cfg") or {}
        self._wifi = (cfg.get("wifi_ssid", ""), cfg.get("wifi_password", ""))
        self._ntp_host = cfg.get("ntp_host", "pool.ntp.org")
        self._wlan = network.WLAN(network.STA_IF)
        self._wlan.active(True)
        self._net_t = None
        self.bench_handlers = {}
        self.ticks_ms = time.ticks_ms

    # ---- pins
    def _get(self, name):
        p = self._p.get(name)
        return p is not None and p.value() == self._lv[name]

    def _put(self, name, on):
        self._cmd[name] = on
        p = self._p.get(name)
        if p is not None:
            p.value(self._lv[name] if on else 1 - self._lv[name])

    # ---- time
    def now_ms(self):
        return time.time_ns() // 1000000 + self._ep * 1000

    def set_time_ms(self, ms):
        t = time.gmtime(ms // 1000 - self._ep)
        machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], ms % 1000 * 1000))
        self._trusted = True

    def time_trusted(self):
        return self._trusted

    # ---- control pilot
    def cp_set(self, duty):
        if type(duty) is not int or not 0 <= duty <= 100:
            raise ValueError("cp duty must be an int 0..100")
        self._duty = duty
        u = duty * 65535 // 100
        self._pwm.duty_u16(u if self._lv["cp_pwm"] else 65535 - u)

    def cp_read(self):
        read = self._a["cp_adc"].read_u16
        hi, lo = 0, 65535
        for _ in range(self.cfg["cp"]["reads"]):
            x = read()
            if x > hi:
                hi = x
            if x < lo:
                lo = x
        c = self.cfg["cp"]
        hi = ((hi >> 4) - c["offset"]) * c["uv"] // 1000
        lo = ((lo >> 4) - c["offset"]) * c["uv"] // 1000
        if not 0 < self._duty < 100:
            hi = lo = (hi + lo) // 2
        return hi, lo

    # ---- contactor and lock
    def relay_set(self, closed):
        self._put("relay", bool(closed))

    def relay_feedback(self):
        return self._get("relay_fb") if "relay_fb" in self._p else self._cmd["relay"]

    def lock_set(self, locked):
        self._put("lock", bool(locked))

    def lock_feedback(self):
        return self._get("lock_fb") if "lock_fb" in self._p else self._cmd["lock"]

    # ---- measurement
    async def adc_burst(self):
        """Slices of a quarter mains cycle, each starting one cycle and one slice after the
        one before, so that their phases tile `cycles` whole cycles; between slices the
        loop runs (asyncio sleep, then a spin of at most 2 ms to the exact start).  A
        slice the loop comes back too late for starts whole cycles later: same phase."""
        import asyncio
        v, i = self._v, self._i
        m = len(v) // self._slices      # pairs per slice
        rv, ri = self._a["v_adc"].read_u16, self._a["i_adc"].read_u16
        us, diff, add = time.ticks_us, time.ticks_diff, time.ticks_add
        T = self._win // self._cycles   # one mains cycle, us
        L = T // 4
        k, took = 0, 0
        start = us()
        for s in range(self._slices):
            if s:
                start = add(start, T + L)
                while True:
                    while diff(us(), start) > 0:
                        start = add(start, T)       # late: the next cycle, same phase
                    wait = diff(start, us()) // 1000 - 2
                    if wait <= 0:
                        break
                    await asyncio.sleep_ms(wait)    # the loop may come back late: again
                while diff(start, us()) > 0:
                    pass
            t = us()
            for _ in range(m):
                v[k] = rv() >> 4
                i[k] = ri() >> 4
                k += 1
            took += diff(us(), t)
        p = took // k or 1
        want = min(L // p, self.cfg["hw"]["max_pairs"] // self._slices) * self._slices
        if want > len(v) + 2 * self._slices or want < len(v) - 2 * self._slices:
            self._v, self._i = array("h", bytes(2 * want)), array("h", bytes(2 * want))
        return v, i, p

    def gun_temp(self):
        a = self._a.get("ntc_adc")
        if a is None:
            return None
        now = time.ticks_ms()
        if self._temp is None or time.ticks_diff(now, self._temp_t) >= 1000:
            n = self.cfg["ntc"]
            lo, hi, s = self._uv_lo, self._uv_hi, 0
            for _ in range(4):
                u = a.read_uv()
                if not lo < u < hi:     # at a rail of what the ADC reads: open or short
                    s = 0
                    break
                s += u
            if s:
                x = s / (4000 * n["vref_mv"])   # 0 < x < 1: lo >= 0, hi <= vref
                if n["top"]:
                    x = 1 - x
                r = n["r_fixed"] * x / (1 - x)
                t = 1 / (1 / 298.15 + math.log(r / n["r25"]) / n["beta"]) - 273.15
                self._temp = int(t * 10)
            else:
                self._temp = 2500
            self._temp_t = now
        return self._temp

    # ---- protective inputs
    def estop(self):
        return self._get("estop")

    def leakage(self):
        return self._get("leak")

    async def leak_selftest(self):
        import asyncio
        if "rcd_test" not in self._p or "leak" not in self._p:
            return True
        ms = self.cfg["hw"]["rcd_ms"]
        self._testing = True
        self._put("rcd_test", True)
        t0 = time.ticks_ms()
        ok = False
        try:
            while not ok and time.ticks_diff(time.ticks_ms(), t0) < ms:
                ok = self._get("leak")
                await asyncio.sleep_ms(1)
            self._put("rcd_test", False)
            while self._get("leak") and time.ticks_diff(time.ticks_ms(), t0) < 2 * ms:
                await asyncio.sleep_ms(1)
        finally:
            self._put("rcd_test", False)
            self._testing = False
        return ok and not self._get("leak")

    def stop_button(self):
        b, self._pressed = self._pressed, False
        return b

    def on_alarm(self, callback):
        self._alarms.append(callback)

    def _irq(self, pin):
        """Pin IRQ (hard for estop and leakage): allocates nothing."""
        if pin is self._p.get("button"):
            self._pressed = True
        elif not (self._testing and pin is self._p.get("leak")):
            self._put("relay", False)
            try:
                micropython.schedule(self._fire_ref, pin)
            except RuntimeError:      # queue full: protection still sees it on its tick
                pass

    def _fire(self, pin):
        name = "estop" if pin is self._p.get("estop") else "leakage"
        for cb in self._alarms:
            try:
                cb(name)
            except Exception as e:
                print("esp32: alarm callback:", repr(e))

    # ---- watchdog
    def wdt_start(self, timeout_ms):
        global _WDT, _HOLD
        if _HOLD is not None:
            _HOLD.deinit()
            _HOLD = None
        if _WDT is None:
            _WDT = machine.WDT(timeout=max(1000, int(timeout_ms)))
        _WDT.feed()

    def wdt_feed(self):
        if _WDT is not None:        # not armed yet: nothing to feed
            _WDT.feed()

    def reset_cause(self):
        c = machine.reset_cause()
        return "watchdog" if c == machine.WDT_RESET else "soft" if c == machine.SOFT_RESET \
            else "power"

    # ---- network and identity
    def net_up(self):
        return self._wlan.isconnected()

    def net_poll(self):
        """(Re)connect the station at most every 15 s while it is down; never waits."""
        now = time.ticks_ms()
        if not self._wifi[0] or self._wlan.isconnected() or \
                self._net_t is not None and time.ticks_diff(now, self._net_t) < 15000:
            return
        self._net_t = now
        try:
            self._wlan.connect(*self._wifi)
        except OSError as e:
            print("esp32: wlan connect:", e)

    def cpu_id(self):
        return hexlify(machine.unique_id()).decode().upper()

    def mac(self):
        return hexlify(self._wlan.config("mac")).decode().upper()

    # ---- life cycle
    def tasks(self):
        return [self._ntp()]

    async def _ntp(self):
        import asyncio
        import _thread
        import ntptime
        ntptime.host = self._ntp_host
        while True:
            wait = 5
            if self._wlan.isconnected():
                box: list = []      # what ntptime.time() returned, or raised
                wait = 30
                _thread.start_new_thread(_ask, (ntptime, box))
                for _ in range(50):
                    await asyncio.sleep_ms(100)
                    if box:
                        break
                if box and type(box[0]) is int:
                    self.set_time_ms((box[0] + self._ep) * 1000)
                    wait = 21600
                else:
                    print("esp32: NTP failed:", box[0] if box else "timeout")
            await asyncio.sleep(wait)

    def shutdown(self):
        self.relay_set(False)
        self.cp_set(100)

    def close(self):
        """The application stopped at the console: keep the watchdog fed from a Timer."""
        global _HOLD
        if _WDT is not None and _HOLD is None:
            _HOLD = machine.Timer(0)
            _HOLD.init(period=1000, mode=machine.Timer.PERIODIC, callback=_feed)
