"""Simulated board for the MicroPython unix port (the HAL contract of hal/__init__.py).

Owns the simulated world the firmware cannot see directly: an accelerated clock, an IEC 61851
vehicle on the control pilot, the mains seen by a 12-bit ADC (with the board's TRUE scale and
offsets from board.json "sim", deliberately unlike the nominal "cal"), contactor and lock with
their feedback, protective inputs, a thread watchdog that kills the process, the world file
that survives such a kill, a safety recorder and the bench port.

opts: storage ("."), world (storage/world.json), bench_port (0 = none), speed (1), epoch_ms
(real time), trusted (True), cpu_id, mac, ticks0 (first ticks_ms value, to test wrapping),
manual (False: board time stands still but for advance(ms), for stepped unit tests).
ticks_ms() counts board milliseconds (speed x real), wrapping with this port's ticks period
so time.ticks_diff works; now_ms() is the wall clock at the same speed.  The watchdog timeout
is in board ms (never under sim "wdt_min_real_ms", default 100, of real time); on expiry it
saves reset cause "watchdog", prints "WDT: reset" and kills the process with SIGKILL.

The vehicle: when the PWM goes off under it while it draws current it takes sim
"ev_react_ms" (default 100, board ms) to see it, then opens S2 (C -> B) and stops drawing.

Safety recorder (real-time microseconds since boot): events ring of the last 64 (relay_set, contacts,
lock_set, locked, cp_duty, cp_level, bench, violation, alarm_error, under_load); violations:
relay closed while not locked / CP not C or D / PWM off, and relay opened more than 100 ms
after the vehicle left C/D; latencies: vehicle leaving C/D -> relay_set(False) ("left_cd"),
fault injected while closed -> relay_set(False) ("fault:<name>").  The last 32 of each are
kept.  under_load counts the contactor openings with more than 1 A flowing.

The bench port (its protocol, state() and the heap figures): hal/simbench.py.

Sim only, for tests and the bench: bench(request) -> reply, state(), events(since),
cp_level(), current_a(), and the attributes duty, relay_cmd, contacts, lock_cmd, locked,
w (the world), clock, violations, violation_count, latencies.

Heap: this module is loaded from .mpy into a small heap, where every function, every distinct
name or string and every table costs (a string of more than 10 characters that is not also a
name is a heap object).  Hence few methods (the bench is one method driven by the text table
_CMDS), lists rather than constant tuples of strings (whose items would be string objects, not
interned names), one dict for everything the relay must answer (_pending), and small
preallocated rings.
"""

import asyncio
import time
import os
import json
import math
import random
from array import array
from micropython import const

from hal import simbench

_N = const(64)  # ADC samples per mains cycle (20 ms); a burst covers two cycles
_SLICES = const(4)  # a burst comes in this many slices, with an await before each
_PERIOD_US = const(312)  # 20 ms / 64
_RING = const(64)  # events kept, in a preallocated list (no heap growth while running)
_KEEP = const(32)  # violations and latencies kept
_LATE_US = const(100000)  # the relay must open this soon after the vehicle leaves C/D
FAULTS = ["welded", "lock_stuck", "estop", "leakage", "diode", "cp_short", "rcd_dead",
          "adc_dead", "ntc_open", "cp_rail"]
_EVENTS = ["relay_set", "contacts", "lock_set", "locked", "cp_duty", "cp_level", "bench",
           "violation", "alarm_error", "under_load"]  # event kinds, numbered as in the ring

# The built-in bench commands, one a line: the name, then its keys as key:kind or
# key:kind:lo:hi.  Kinds: bool, float (any JSON number), int, fault (a name in FAULTS); a
# capital kind (Bool ...) marks a required key.



_SIN = array("h", bytes(2 * _N))  # one mains cycle of sin, Q15
_NZ = array("h", bytes(2 * _N))  # gaussian-ish noise (sum of three uniforms), unit variance, Q10
v = 0  # sum of squares of the noise, first drawn in Q13
for n in range(_N):
    _SIN[n] = int(round(math.sin(2 * math.pi * n / _N) * 32767))
    _NZ[n] = int((random.random() + random.random() + random.random()) * 8192) - 12288
    v += _NZ[n] * _NZ[n]
v = math.sqrt(v / _N)
for n in range(_N):
    _NZ[n] = int(_NZ[n] / v * 1024)
del n, v


class Board:
    def __init__(self, board_cfg, opts=None):
        self.opts = opts = opts or {}
        self.sim = board_cfg.get("sim", {})  # the TRUE scale, offsets and timings
        self.storage = opts.get("storage", ".")
        self._trusted = opts.get("trusted", True)
        self.speed = max(1, int(opts.get("speed", 1)))
        self.manual = opts.get("manual", False)  # board time moves only by advance()
        self._us_at = [time.ticks_us(), 0]   # the recorder's clock (_us): ticks, us so far
        t = time.ticks_add(opts.get("ticks0", 0), 0)  # wrapped like this port's ticks
        # real ticks of the last ticks_ms(), board ticks then, wall clock ms at board tick
        self.clock = [time.ticks_ms(), t, opts.get("epoch_ms") or time.time_ns() // 1000000, t]
        self.bench_handlers = {}
        self._bufs = array("h", bytes(4 * _N)), array("h", bytes(4 * _N))
        self.duty = 100
        self.relay_cmd = self.contacts = self.lock_cmd = self.locked = False
        self.net = True  # the network link is up
        self.button = False  # the stop button was pressed (latched until read)
        self._lock_t = 0  # board ticks when the lock was last commanded
        self._alarms = []
        self.on_alarm = self._alarms.append  # on_alarm(callback) registers a callback
        self._ring = [0, 0, None] * _RING  # events: real us, kind number, value
        self._seq = 0  # number of the next event
        self.violations, self.violation_count, self.latencies = [], 0, []
        # what the relay must answer, name -> real us: "left_cd" (the vehicle left C/D with
        # the relay closed) and "fault:<name>" (injected while the relay was closed)
        self._pending = {}
        self._off_t = None  # board ticks the PWM went off under a vehicle drawing current
        self.under_load = 0  # contactor openings with current flowing (more than 1 A)
        self.watchdog = [0, 0, 0]  # last feed (real ticks), timeout (board ms), armed
        self._srv = None
        self.starved = False    # the bench's "starve": the heap is locked
        # the world: defaults, overlaid with what the world file holds (the same types)
        self.w = w = {"plugged": False, "want": True, "vent": False, "demand_a": 32,
                      "greedy": False, "v": 230.0, "pf": 1.0, "noise": 0.002, "temp_c": 25.0,
                      "faults": [], "reset": None}
        try:
            with open(self._save(None)) as f:
                got = json.load(f)
            num = (int, float)
            for k in w:
                x, t = got.get(k), type(w[k])
                if type(x) is t or type(x) in num and t in num or k == "reset" and type(x) is str:
                    w[k] = x
        except (OSError, ValueError, TypeError, AttributeError):
            pass
        faults = []
        for x in w["faults"]:
            if x in FAULTS:
                faults.append(x)
        w["faults"] = faults
        self.reset = w["reset"] or "power"  # the cause of this start
        if w["reset"]:
            w["reset"] = None
            self._save()
        self._level = self.cp_level()

    # ---- world file and recorder
    def _save(self, end=".tmp"):
        """Save the world (through its path + end); with end None only return the path."""
        path = self.opts.get("world") or self.storage + "/world.json"
        if end:
            try:
                with open(path + end, "w") as f:
                    json.dump(self.w, f)
                os.rename(path + end, path)
            except OSError as e:
                print("sim: save:", e)
        return path

    def _event(self, ev, v):
        """Record an event in the ring; a violation is also counted and kept."""
        if ev == "violation":
            self.violation_count += 1
            self.violations.append((self._us(), v))
            del self.violations[:-_KEEP]
        n = self._seq % _RING * 3     # three small ints (no big int per event)
        self._ring[n] = self._us()
        self._ring[n + 1] = _EVENTS.index(ev)
        self._ring[n + 2] = v
        self._seq += 1

    def _us(self):
        """Real microseconds since boot, for the recorder: from ticks_us, which allocates
        nothing (time_ns makes a big int: out of memory it would fail); read at least
        every few minutes (ticks_ms does) so a wrap of ticks_us is never missed."""
        a, t = self._us_at, time.ticks_us()
        a[1] += time.ticks_diff(t, a[0])
        a[0] = t
        return a[1]

    def events(self, since=0):
        """Recorded events numbered since..: list of {"n", "t_us", "ev", "v"}."""
        out = []
        r = self._ring
        for n in range(max(since, self._seq - _RING), self._seq):
            k = n % _RING * 3
            out.append({"n": n, "t_us": r[k], "ev": _EVENTS[r[k + 1]], "v": r[k + 2]})
        return out

    # ---- time
    def ticks_ms(self):
        self._us()      # keeps the recorder's clock across ticks_us wraps
        c = self.clock
        r = time.ticks_ms()
        d = time.ticks_diff(r, c[0])
        if d > 0 and not self.manual:
            c[0] = r
            c[1] = time.ticks_add(c[1], d * self.speed)
        return c[1]

    def advance(self, ms):
        """Sim only: move a manual clock (opts "manual") on by ms board milliseconds."""
        c = self.clock
        c[1] = time.ticks_add(c[1], ms)

    def now_ms(self):
        c = self.clock
        return c[2] + time.ticks_diff(self.ticks_ms(), c[3])

    def set_time_ms(self, ms):
        self.clock[2:] = [int(ms), self.ticks_ms()]
        self._trusted = True

    def time_trusted(self):
        return self._trusted

    # ---- control pilot and vehicle
    def cp_set(self, duty):
        if type(duty) is not int or not 0 <= duty <= 100:
            raise ValueError("duty")
        if duty != self.duty:
            if 0 < self.duty < 100 and self._level in "CD":
                self._off_t = self.ticks_ms()   # the vehicle takes ev_react_ms to see it
            elif 0 < duty < 100:
                self._off_t = None
            self.duty = duty
            try:                        # the output has moved; the records need memory
                self._event("cp_duty", duty)
                self._update()
            except MemoryError:
                pass

    def cp_read(self, sense=True):
        w = self.w
        f = w["faults"]
        if sense and "cp_rail" in f:  # what the firmware reads; the line itself is sound
            self.cp_read(False)         # and goes on as it would
            return 21816, 21816
        if "cp_short" in f:
            return 0, 0
        d = self.duty
        if d == 0:
            return -12000, -12000
        pwm = d < 100
        late = self._off_t is not None     # PWM just went off: the vehicle still in C/D
        if late and time.ticks_diff(self.ticks_ms(), self._off_t) >= \
                self.sim.get("ev_react_ms", 100):
            self._off_t = late = None
            self._update()
        if not w["plugged"]:
            hi = 12000
        elif (pwm or late) and w["want"]:
            hi = 3000 if w["vent"] else 6000
        else:
            hi = 9000
        if not pwm:
            return hi, hi
        if w["plugged"] and "diode" in f:
            return hi, -hi
        return hi, -12000

    def cp_level(self):
        """The IEC 61851 state of the CP high level: A 12 V, B 9, C 6, D 3, E 0, F -12 V."""
        return "FEDCBA"[max(0, self.cp_read(False)[0] // 3000 + 1)]

    def _update(self):
        """Note a CP level change; time the vehicle leaving C/D while the relay is closed."""
        old, new = self._level, self.cp_level()
        if new == old:
            return
        self._level = new
        self._event("cp_level", new)
        p = self._pending
        if old in "CD" and new not in "CD" and self.relay_cmd and "left_cd" not in p:
            p["left_cd"] = self._us()
        elif new in "CD" and "left_cd" in p:  # back in C/D before the relay opened
            d = self._us() - p.pop("left_cd")
            if d > _LATE_US:
                self._event("violation", "relay not opened %d ms after vehicle left C/D"
                            % (d // 1000))

    def current_a(self):
        """What the vehicle draws: its demand, within the PWM offer (0.6 A per %) unless greedy."""
        a = 0
        if self.contacts and self._level in "CD":
            a = self.w["demand_a"]
            if not self.w["greedy"]:
                a = min(a, self.duty * 0.6)
        return float(a)

    # ---- contactor and lock
    def relay_set(self, on):
        on = bool(on)
        was = self.relay_cmd
        try:
            amps = self.current_a()     # flowing as it opens (a float: needs memory)
        except MemoryError:
            amps = None
        self.relay_cmd = on     # the output first, as a pin moves: the records below may
        closed = on or self.contacts and "welded" in self.w["faults"]  # (welded: stays)
        moved = closed != self.contacts                  # run out of memory (the bench's
        self.contacts = closed                           # "starve"), the relay may not
        try:
            self._relay_records(on, was, moved, amps)
        except MemoryError:
            pass

    def _relay_records(self, on, was, moved, amps):
        """The safety recorder's view of a relay_set (events first: they need no memory;
        then violations and latencies)."""
        t = self._us()
        if on != was:
            self._event("relay_set", on)
        if moved:
            self._event("contacts", self.contacts)
        if on:
            why = []
            if not self.lock_feedback():
                why.append("lock not locked")
            if self._level not in "CD":
                why.append("CP level " + self._level)
            if not 1 <= self.duty <= 99:
                why.append("PWM off")
            if why:
                self._event("violation", "relay closed: " + ", ".join(why))
        elif was:  # opening: under load? and the latency of what it answers
            if amps is not None and amps > 1:
                self.under_load += 1
                self._event("under_load", amps)
            p, lat = self._pending, self.latencies
            if "left_cd" in p:
                d = t - p.pop("left_cd")
                lat.append(("left_cd", d))
                if d > _LATE_US:
                    self._event("violation", "relay opened %d ms after vehicle left C/D"
                                % (d // 1000))
            for name in p:
                lat.append((name, t - p[name]))
            self._pending = {}
            del lat[:-_KEEP]

    def relay_feedback(self):
        return self.contacts

    def lock_set(self, locked):
        locked = bool(locked)
        if locked != self.lock_cmd:
            self.lock_feedback()
            self.lock_cmd = locked
            self._lock_t = self.ticks_ms()
            self._event("lock_set", locked)

    def lock_feedback(self):
        if (self.locked != self.lock_cmd and "lock_stuck" not in self.w["faults"]
                and time.ticks_diff(self.ticks_ms(), self._lock_t)
                >= self.sim.get("lock_ms", 300)):
            self.locked = self.lock_cmd
            self._event("locked", self.locked)
        return self.locked

    # ---- measurement
    async def adc_burst(self):
        # the same two buffers every burst (as on the board): no 512-byte blocks to find
        # in the heap every 50 ms; the caller has used the previous burst by now.  In
        # _SLICES slices with an await between, as the ESP32 board samples
        v, i = self._bufs
        w = self.w
        if "adc_dead" in w["faults"]:
            for n in range(2 * _N):
                v[n] = i[n] = 0
            return v, i, _PERIOD_US
        sin, nz, g = _SIN, _NZ, self.sim.get
        # amplitudes in counts, Q10; noise sigma = noise x channel RMS + 0.5 count ADC floor
        va = int(w["v"] * 1414214 / g("v_uv", 200000) * 1024)
        ia = int(self.current_a() * 1414214 / g("i_ua", 25000) * 1024)
        phi = math.acos(w["pf"])
        ic, isn = int(ia * math.cos(phi)), int(ia * math.sin(phi))
        fl = 512 if w["noise"] else 0
        vn, inz = int(va * w["noise"] * 0.7071) + fl, int(ia * w["noise"] * 0.7071) + fl
        vo, io = g("v_offset", 2048), g("i_offset", 2048)
        k, j, js = random.getrandbits(6), random.getrandbits(6), random.getrandbits(5) * 2 + 1
        for n in range(2 * _N):
            if n % (2 * _N // _SLICES) == 0:
                await asyncio.sleep_ms(self.sim.get("burst_gap_ms", 0))
            x = vo + ((va * sin[k] + vn * nz[j] * 32 + 0x1000000) >> 25)
            v[n] = 0 if x < 0 else 4095 if x > 4095 else x
            x = io + ((ic * sin[k] - isn * sin[(k + 16) & 63]  # current lags by phi
                       + inz * nz[(j + 17) & 63] * 32 + 0x1000000) >> 25)
            i[n] = 0 if x < 0 else 4095 if x > 4095 else x
            k = (k + 1) & 63
            j = (j + js) & 63
        return v, i, _PERIOD_US

    def gun_temp(self):
        if "ntc_open" in self.w["faults"]:  # at the ADC's floor: a broken sensor
            return 2500
        return int(self.w["temp_c"] * 10)

    # ---- protective inputs (on_alarm is bound in __init__)
    def estop(self):
        return "estop" in self.w["faults"]

    def leakage(self):
        return "leakage" in self.w["faults"]

    async def leak_selftest(self):
        await asyncio.sleep_ms(self.sim.get("rcd_ms", 0))
        return "rcd_dead" not in self.w["faults"]

    def stop_button(self):
        b, self.button = self.button, False
        return b

    # ---- watchdog
    def wdt_start(self, ms):
        wdt = self.watchdog
        wdt[0] = time.ticks_ms()
        wdt[1] = max(1, int(ms))
        if wdt[2]:
            return
        wdt[2] = 1

        def watchdog():
            while wdt[2]:
                time.sleep_ms(20)
                lim = max(wdt[1] // self.speed, self.sim.get("wdt_min_real_ms", 100))
                if wdt[2] and time.ticks_diff(time.ticks_ms(), wdt[0]) > lim:
                    self.w["reset"] = "watchdog"
                    self._save(".wdt")
                    print("WDT: reset")
                    os.system("kill -9 $PPID")  # the shell os.system starts is our child
                    wdt[2] = 0

        import _thread
        _thread.start_new_thread(watchdog, ())

    def wdt_feed(self):
        self.watchdog[0] = time.ticks_ms()

    def reset_cause(self):
        return self.reset

    # ---- network, identity, life cycle
    def net_up(self):
        return self.net

    def net_poll(self):
        pass

    def cpu_id(self):
        return self.opts.get("cpu_id", "SIM0000000001")

    def mac(self):
        return self.opts.get("mac", "02AABBCCDDEE")

    def tasks(self):
        """The bench server, when opts has a bench_port."""
        port = self.opts.get("bench_port", 0)
        return [simbench.serve(self, port)] if port else []

    def shutdown(self):
        self.relay_set(False)
        self.cp_set(100)

    def close(self):
        """Sim only: disarm the watchdog thread and stop the bench server (tests)."""
        self.watchdog[2] = 0
        self._srv = None        # the server closes its socket

    # ---- the bench (hal/simbench.py)
    def bench(self, line):
        """Run one bench request (JSON text or dict); return the reply dict."""
        return simbench.handle(self, line)

    def state(self):
        """Everything the bench may want to see, as one JSON-able dict."""
        return simbench.state(self)
