"""Simulated board for the MicroPython unix port (the HAL contract of hal/__init__.py).

Owns the simulated world the firmware cannot see directly: an accelerated clock, an IEC 61851
vehicle on the control pilot, the mains seen by a 12-bit ADC (with the board's TRUE scale and
offsets from board.json "sim", deliberately unlike the nominal "cal"), contactor and lock with
their feedback, protective inputs, a thread watchdog that kills the process, the world file
that survives such a kill, a safety recorder and the bench port.

opts: storage ("."), world (storage/world.json), bench_port (0 = none), speed (1), epoch_ms
(real time), trusted (True), cpu_id, mac, ticks0 (first ticks_ms value, to test wrapping).
ticks_ms() counts board milliseconds (speed x real), wrapping with this port's ticks period
so time.ticks_diff works; now_ms() is the wall clock at the same speed.  The watchdog timeout
is in board ms (never under sim "wdt_min_real_ms", default 100, of real time); on expiry it
saves reset cause "watchdog", prints "WDT: reset" and kills the process with SIGKILL.

Safety recorder (real-time microseconds): events ring (relay_set, contacts, lock_set, locked,
cp_duty, cp_level, bench, alarm); violations: relay closed while not locked / CP not C or D /
PWM off, and relay opened more than 100 ms after the vehicle left C/D; latencies: vehicle
leaving C/D -> relay_set(False) ("left_cd"), fault injected while closed -> relay_set(False)
("fault:<name>").

Bench protocol
--------------
TCP on 127.0.0.1:<bench_port>, several clients at once.  One JSON object per line in, one JSON
line out: {"ok":true,...} or {"ok":false,"error":"<reason>"}.  An "id" in a request is echoed.
Bad input (not JSON, unknown cmd or key, wrong type or range) changes nothing.
  {"cmd":"plug"} / {"cmd":"unplug"}        connect / disconnect the vehicle
  {"cmd":"car","want":b,"vent":b,"demand_a":0..80,"greedy":b}   any subset; want = vehicle
                                           asks for power; greedy = it draws demand_a whatever
                                           the PWM offers (over-current tests)
  {"cmd":"mains","v":0..500,"pf":0..1,"noise":0..0.2}  RMS volts, power factor, noise fraction
  {"cmd":"temp","c":-60..250}              connector temperature
  {"cmd":"fault","name":N,"on":b}          N: welded lock_stuck estop leakage diode cp_short
                                           rcd_dead adc_dead (estop/leakage fire on_alarm)
  {"cmd":"button"}                         press the local stop button once
  {"cmd":"net","up":b}                     network link up/down
  {"cmd":"speed","x":1..10000}             board ms per real ms
  {"cmd":"clock","epoch_ms":int}           jump the wall clock (trust unchanged)
  {"cmd":"freeze","ms":0..120000}          block the event loop this many board ms
  {"cmd":"state"}   -> {"ok":true,"state":{cp_duty, cp_hi, cp_lo, cp_level, relay_cmd,
                        relay_closed, lock_cmd, locked, plugged, want, vent, demand_a,
                        current_a, mains_v, pf, noise, temp_c, estop, leakage, faults, net_up,
                        speed, now_ms, ticks_ms, trusted, reset_cause, overdue_ms,
                        violations, violation_count, latencies}}
  {"cmd":"events","since":n} -> {"ok":true,"events":[{"n","t_us","ev","v"}...],"next":n}
Any other cmd goes to Board.bench_handlers[cmd](request) (the application's own commands),
whose returned dict is the reply ("ok":true added when missing); else "unknown cmd".
Car, mains, temperature and faults are saved to the world file on every change and reloaded
at start; the relay always starts open.
"""

import time
import os
import json
import math
import random
from array import array

_MASK = time.ticks_add(0, -1)  # this port's ticks period - 1 ((1<<30)-1 on 32-bit ports)
FAULTS = ("welded", "lock_stuck", "estop", "leakage", "diode", "cp_short", "rcd_dead", "adc_dead")
_LEVEL = {12000: "A", 9000: "B", 6000: "C", 3000: "D", 0: "E", -12000: "F"}
_N = 128  # samples per burst: 2 mains cycles x 64
_PERIOD_US = 312  # 20 ms / 64
_RING = 200  # events kept, in preallocated arrays (no heap growth while running)
_KEEP = 32  # violations and latencies kept
_EVN = ("relay_set", "contacts", "lock_set", "locked", "cp_duty", "cp_level", "bench",
        "violation", "alarm_error")
_WORLD = {"plugged": False, "want": True, "vent": False, "demand_a": 32, "greedy": False,
          "v": 230.0, "pf": 1.0, "noise": 0.002, "temp_c": 25.0, "faults": [], "reset": None}
_SIN = array("h", [int(round(math.sin(2 * math.pi * k / _N) * 32767)) for k in range(_N)])  # Q15


def _noise():
    """64 gaussian-ish values (sum of three uniforms), scaled to unit variance, Q10."""
    z = [random.random() + random.random() + random.random() - 1.5 for k in range(64)]
    sd = math.sqrt(sum(x * x for x in z) / 64)
    return array("h", [int(x / sd * 1024) for x in z])


_NZ = _noise()


def _us():
    return time.time_ns() // 1000


def _err(msg):
    return {"ok": False, "error": msg}


def _is_num(x):
    return type(x) in (int, float)


def _keep(lst, x):
    lst.append(x)
    if len(lst) > _KEEP:
        lst.pop(0)


# bench arguments: key -> (kind, lo, hi); kind b bool, n number, i int, f fault name;
# upper case = required
_ARGS = {
    "plug": {}, "unplug": {}, "button": {}, "state": {},
    "car": {"want": ("b",), "vent": ("b",), "demand_a": ("n", 0, 80), "greedy": ("b",)},
    "mains": {"v": ("n", 0, 500), "pf": ("n", 0, 1), "noise": ("n", 0, 0.2)},
    "temp": {"c": ("n", -60, 250)},
    "fault": {"name": ("F",), "on": ("B",)},
    "net": {"up": ("B",)},
    "speed": {"x": ("I", 1, 10000)},
    "clock": {"epoch_ms": ("I", 1, 1 << 52)},
    "freeze": {"ms": ("I", 0, 120000)},
    "events": {"since": ("i", 0, 1 << 60)},
}


def _check(cmd, req):
    """Validate req against _ARGS[cmd]; return None or the reason it is bad."""
    spec = _ARGS[cmd]
    for k in req:
        if k != "cmd" and k != "id" and k not in spec:
            return "unknown key %r for %s" % (k, cmd)
    for k, s in spec.items():
        kind = s[0].lower()
        if k not in req:
            if kind != s[0]:
                return "%s needs %r" % (cmd, k)
            continue
        x = req[k]
        if kind == "b" and type(x) is not bool:
            return "%r must be true or false" % k
        if kind == "f" and x not in FAULTS:
            return "%r must be one of %s" % (k, " ".join(FAULTS))
        if kind == "n" and not _is_num(x) or kind == "i" and type(x) is not int:
            return "%r must be a%s" % (k, " number" if kind == "n" else "n integer")
        if kind in "ni" and not s[1] <= x <= s[2]:
            return "%r must be in %s..%s" % (k, s[1], s[2])
    return None


class Board:
    def __init__(self, board_cfg, opts=None):
        opts = opts or {}
        sim = board_cfg.get("sim", {})
        self.storage = opts.get("storage", ".")
        self._path = opts.get("world") or self.storage + "/world.json"
        self._port = opts.get("bench_port", 0)
        self._cpu = opts.get("cpu_id", "SIM0000000001")
        self._mac = opts.get("mac", "02AABBCCDDEE")
        self._trusted = opts.get("trusted", True)
        self.speed = max(1, int(opts.get("speed", 1)))
        self._last = self._wall_r = time.ticks_ms()  # real ticks of the last reading
        self._acc = opts.get("ticks0", 0) & _MASK  # board ticks (opts "ticks0": start value)
        self._wall = opts.get("epoch_ms") or time.time_ns() // 1000000
        g = sim.get
        self._v_uv, self._v_off = g("v_uv", 200000), g("v_offset", 2048)
        self._i_ua, self._i_off = g("i_ua", 25000), g("i_offset", 2048)
        self._lock_ms, self._wdt_floor = g("lock_ms", 300), g("wdt_min_real_ms", 100)
        self.bench_handlers = {}
        self.duty = 100
        self.relay_cmd = self.contacts = self.lock_cmd = self.locked = False
        self._lock_t = 0
        self._net, self._button, self._alarms = True, False, []
        self._evt = array("q", bytes(8 * _RING))  # events ring: real us, name, value
        self._evk = bytearray(_RING)
        self._evv = [None] * _RING
        self._seq = 0  # number of the next event
        self.violations, self.violation_count, self.latencies = [], 0, []
        self._t_left = None  # real us when the vehicle left C/D with the relay closed
        self._pending = {}  # fault name -> real us injected while the relay was closed
        self._wdt = [0, 0, 0]  # last feed (real ticks), timeout (board ms), armed
        self._srv = None
        self.w = self._load()
        self._level = self.cp_level()

    # ---- world file
    def _load(self):
        w = dict(_WORLD)
        w["faults"] = []
        try:
            with open(self._path) as f:
                got = json.load(f)
            for k in w:
                x = got.get(k)
                if type(x) == type(w[k]) or _is_num(x) and _is_num(w[k]):
                    w[k] = x
                elif k == "reset" and type(x) is str:
                    w[k] = x
            w["faults"] = [x for x in w["faults"] if x in FAULTS]
        except (OSError, ValueError, TypeError, AttributeError):
            pass
        self._reset = w["reset"] or "power"
        if w["reset"]:
            w["reset"] = None
            self._save(w)
        return w

    def _save(self, w=None, tmp=".tmp"):
        tmp = self._path + tmp
        try:
            with open(tmp, "w") as f:
                json.dump(w or self.w, f)
            os.rename(tmp, self._path)
        except OSError as e:
            print("sim: cannot save world:", e)

    # ---- recorder
    def _event(self, what, v):
        n = self._seq % _RING
        self._evt[n] = _us()
        self._evk[n] = _EVN.index(what)
        self._evv[n] = v
        self._seq += 1

    def events(self, since=0):
        """Recorded events numbered since..: list of {"n", "t_us", "ev", "v"}."""
        out = []
        for n in range(max(since, self._seq - _RING), self._seq):
            k = n % _RING
            out.append({"n": n, "t_us": self._evt[k], "ev": _EVN[self._evk[k]], "v": self._evv[k]})
        return out

    def _violation(self, what, t):
        self.violation_count += 1
        _keep(self.violations, (t, what))
        self._event("violation", what)

    def _latency(self, what, us):
        _keep(self.latencies, (what, us))

    # ---- time
    def ticks_ms(self):
        r = time.ticks_ms()
        d = time.ticks_diff(r, self._last)
        if d > 0:
            self._last = r
            self._acc = (self._acc + d * self.speed) & _MASK
        return self._acc

    def now_ms(self):
        return self._wall + time.ticks_diff(time.ticks_ms(), self._wall_r) * self.speed

    def set_time_ms(self, ms):
        self._wall = int(ms)
        self._wall_r = time.ticks_ms()
        self._trusted = True

    def time_trusted(self):
        return self._trusted

    def _set_speed(self, x):
        self.ticks_ms()
        self._wall = self.now_ms()
        self._wall_r = time.ticks_ms()
        self.speed = x

    # ---- control pilot and vehicle
    def cp_set(self, duty):
        if type(duty) is not int or not 0 <= duty <= 100:
            raise ValueError("cp duty must be an int 0..100")
        if duty != self.duty:
            self.duty = duty
            self._event("cp_duty", duty)
            self._update()

    def cp_read(self):
        f = self.w["faults"]
        if "cp_short" in f:
            return 0, 0
        d = self.duty
        if d == 0:
            return -12000, -12000
        w = self.w
        pwm = d < 100
        if not w["plugged"]:
            hi = 12000
        elif pwm and w["want"]:
            hi = 3000 if w["vent"] else 6000
        else:
            hi = 9000
        if not pwm:
            return hi, hi
        if w["plugged"] and "diode" in f:
            return hi, -hi
        return hi, -12000

    def cp_level(self):
        return _LEVEL[self.cp_read()[0]]

    def _update(self):
        """Note a CP level change; time the vehicle leaving C/D while the relay is closed."""
        old, new = self._level, self.cp_level()
        if new == old:
            return
        self._level = new
        self._event("cp_level", new)
        if old in "CD" and new not in "CD" and self.relay_cmd and self._t_left is None:
            self._t_left = _us()
        elif new in "CD" and self._t_left is not None:
            d = _us() - self._t_left
            if d > 100000:
                self._violation("relay stayed closed %d ms out of C/D" % (d // 1000), _us())
            self._t_left = None

    def current_a(self):
        if not self.contacts or self._level not in "CD":
            return 0.0
        if self.w["greedy"]:
            return float(self.w["demand_a"])
        return min(float(self.w["demand_a"]), self.duty * 0.6)

    # ---- contactor and lock
    def relay_set(self, closed):
        closed = bool(closed)
        t = _us()
        if closed:
            self._check_close(t)
        elif self.relay_cmd:
            self._opened(t)
        if closed != self.relay_cmd:
            self.relay_cmd = closed
            self._event("relay_set", closed)
        self._contacts(closed or self.contacts and "welded" in self.w["faults"])

    def _contacts(self, c):
        if c != self.contacts:
            self.contacts = c
            self._event("contacts", c)

    def _check_close(self, t):
        why = []
        if not self.lock_feedback():
            why.append("lock not locked")
        if self._level not in "CD":
            why.append("CP level " + self._level)
        if not 1 <= self.duty <= 99:
            why.append("PWM off")
        if why:
            self._violation("relay closed: " + ", ".join(why), t)

    def _opened(self, t):
        if self._t_left is not None:
            d = t - self._t_left
            self._latency("left_cd", d)
            if d > 100000:
                self._violation("relay opened %d ms after vehicle left C/D" % (d // 1000), t)
            self._t_left = None
        for name, t0 in self._pending.items():
            self._latency("fault:" + name, t - t0)
        self._pending = {}

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
                and time.ticks_diff(self.ticks_ms(), self._lock_t) >= self._lock_ms):
            self.locked = self.lock_cmd
            self._event("locked", self.locked)
        return self.locked

    # ---- measurement
    def adc_burst(self):
        v = array("h", bytes(2 * _N))
        i = array("h", bytes(2 * _N))
        if "adc_dead" in self.w["faults"]:
            return v, i, _PERIOD_US
        sin, nz = _SIN, _NZ
        w = self.w
        # amplitudes in counts, Q10; noise sigma = noise x channel RMS + 0.5 count ADC floor
        va = int(w["v"] * 1.4142136e6 / self._v_uv * 1024)
        ia = int(self.current_a() * 1.4142136e6 / self._i_ua * 1024)
        phi = math.acos(w["pf"])
        ic, isn = int(ia * math.cos(phi)), int(ia * math.sin(phi))
        fl = 512 if w["noise"] else 0
        vn, inz = int(va * w["noise"] * 0.7071) + fl, int(ia * w["noise"] * 0.7071) + fl
        vo, io = self._v_off, self._i_off
        k, j, js = random.getrandbits(7), random.getrandbits(6), random.getrandbits(5) * 2 + 1
        for n in range(_N):
            x = vo + ((va * sin[k] + vn * nz[j] * 32 + 0x1000000) >> 25)
            v[n] = 0 if x < 0 else 4095 if x > 4095 else x
            x = io + ((ic * sin[k] - isn * sin[(k + 32) & 127]
                       + inz * nz[(j + 17) & 63] * 32 + 0x1000000) >> 25)
            i[n] = 0 if x < 0 else 4095 if x > 4095 else x
            k = (k + 2) & 127
            j = (j + js) & 63
        return v, i, _PERIOD_US

    def gun_temp_c(self):
        return float(self.w["temp_c"])

    # ---- protective inputs
    def estop(self):
        return "estop" in self.w["faults"]

    def leakage(self):
        return "leakage" in self.w["faults"]

    def leak_selftest(self):
        return "rcd_dead" not in self.w["faults"]

    def stop_button(self):
        b, self._button = self._button, False
        return b

    def on_alarm(self, callback):
        self._alarms.append(callback)

    # ---- watchdog
    def wdt_start(self, timeout_ms):
        self._wdt[0] = time.ticks_ms()
        self._wdt[1] = max(1, int(timeout_ms))
        if not self._wdt[2]:
            self._wdt[2] = 1
            try:
                with open("/proc/self/stat") as f:
                    self._pid = f.read().split()[0]
            except OSError:
                self._pid = "$PPID"  # the shell os.system starts is our child
            import _thread
            _thread.start_new_thread(self._wdt_run, ())

    def wdt_feed(self):
        self._wdt[0] = time.ticks_ms()

    def _wdt_run(self):
        w = self._wdt
        while w[2]:
            time.sleep_ms(20)
            lim = max(w[1] // self.speed, self._wdt_floor)
            if w[2] and time.ticks_diff(time.ticks_ms(), w[0]) > lim:
                self.w["reset"] = "watchdog"
                self._save(None, ".wdt")
                print("WDT: reset")
                os.system("kill -9 " + self._pid)
                os.system("kill -9 $PPID")  # only reached if the first kill failed
                w[2] = 0

    def reset_cause(self):
        return self._reset

    # ---- network, identity, life cycle
    def net_up(self):
        return self._net

    def net_poll(self):
        pass

    def cpu_id(self):
        return self._cpu

    def mac(self):
        return self._mac

    def tasks(self):
        return [self._serve()] if self._port else []

    def shutdown(self):
        self.relay_set(False)
        self.cp_set(100)

    def close(self):
        """Sim only: disarm the watchdog thread and stop the bench server (tests)."""
        self._wdt[2] = 0
        if self._srv:
            self._srv.close()

    # ---- bench
    async def _serve(self):
        import asyncio
        self._srv = await asyncio.start_server(self._client, "127.0.0.1", self._port)
        await self._srv.wait_closed()

    async def _client(self, r, w):
        try:
            while True:
                line = await r.readline()
                if not line:
                    break
                if line.strip():
                    w.write(json.dumps(self.bench(line)) + "\n")
                    await w.drain()
        except Exception as e:  # a dropped client must not stop the server
            print("sim: bench client:", repr(e))
        w.close()

    def bench(self, line):
        """Run one bench request (JSON text or dict); return the reply dict."""
        req = line
        if type(line) is not dict:
            try:
                req = json.loads(line)
            except (ValueError, TypeError, UnicodeError):
                return _err("not JSON")
        if type(req) is not dict:
            return _err("request must be a JSON object")
        rep = self._dispatch(req)
        if "id" in req:
            rep["id"] = req["id"]
        return rep

    def _dispatch(self, req):
        cmd = req.get("cmd")
        if type(cmd) is not str:
            return _err("missing \"cmd\" string")
        try:
            if cmd in _ARGS:
                why = _check(cmd, req)
                if why:
                    return _err(why)
                if cmd != "state" and cmd != "events":
                    self._event("bench", req)
                rep = self._apply(cmd, req)
            elif cmd in self.bench_handlers:
                rep = self.bench_handlers[cmd](req)
                if type(rep) is not dict:
                    return _err(cmd + " handler gave no reply")
            else:
                return _err("unknown cmd: " + cmd)
        except Exception as e:  # a bench bug must not kill the server
            return _err("%s failed: %r" % (cmd, e))
        if "ok" not in rep:
            rep["ok"] = True
        return rep

    def _apply(self, cmd, req):
        """Carry out a validated built-in bench command; return the reply dict."""
        if cmd == "state":
            return {"state": self.state()}
        if cmd == "events":
            return {"events": self.events(req.get("since", 0)), "next": self._seq}
        if cmd == "button":
            self._button = True
        elif cmd == "net":
            self._net = req["up"]
        elif cmd == "speed":
            self._set_speed(req["x"])
        elif cmd == "clock":
            self._wall = req["epoch_ms"]
            self._wall_r = time.ticks_ms()
        elif cmd == "freeze":
            ms = req["ms"] // self.speed
            time.sleep_ms(ms)
            return {"real_ms": ms}
        elif cmd == "fault":
            self._fault(req["name"], req["on"])
        else:  # the world: plug, unplug, car, mains, temp
            w = self.w
            if cmd != "car" and cmd != "mains" and cmd != "temp":
                w["plugged"] = cmd == "plug"
            for k in _ARGS[cmd]:
                if k in req:
                    w["temp_c" if k == "c" else k] = req[k]
            self._update()
            self._save()
        return {}

    def _fault(self, name, on):
        f = self.w["faults"]
        if on == (name in f):
            return
        if on:
            self.lock_feedback()  # a stuck lock freezes where it is now
            f.append(name)
            if self.relay_cmd:
                self._pending[name] = _us()
        else:
            f.remove(name)
            if name == "welded":
                self._contacts(self.relay_cmd)
        self._update()
        self._save()
        if on and name in ("estop", "leakage"):
            for cb in self._alarms:
                try:
                    cb(name)
                except Exception as e:
                    self._event("alarm_error", repr(e))

    def state(self):
        """Everything the bench may want to see, as one JSON-able dict."""
        hi, lo = self.cp_read()
        w = self.w
        t = self._t_left
        return {
            "cp_duty": self.duty, "cp_hi": hi, "cp_lo": lo, "cp_level": self._level,
            "relay_cmd": self.relay_cmd, "relay_closed": self.contacts,
            "lock_cmd": self.lock_cmd, "locked": self.lock_feedback(),
            "plugged": w["plugged"], "want": w["want"], "vent": w["vent"],
            "demand_a": w["demand_a"], "current_a": self.current_a(), "mains_v": w["v"],
            "pf": w["pf"], "noise": w["noise"], "temp_c": w["temp_c"],
            "estop": self.estop(), "leakage": self.leakage(), "faults": list(w["faults"]),
            "net_up": self._net, "speed": self.speed, "now_ms": self.now_ms(),
            "ticks_ms": self.ticks_ms(), "trusted": self._trusted, "reset_cause": self._reset,
            "overdue_ms": None if t is None else (_us() - t) // 1000,
            "violations": [{"t_us": t, "what": x} for t, x in self.violations],
            "violation_count": self.violation_count,
            "latencies": [{"what": x, "us": u} for x, u in self.latencies]}
