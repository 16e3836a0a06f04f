"""The simulated board's bench port: the world's controls and the recorder's view, over
TCP, for tests, the demo and the benchmarks (hal/sim.py holds the world itself).

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
                                           rcd_dead adc_dead ntc_open cp_rail (estop/leakage
                                           fire on_alarm)
  Inputs at the ADC's rails: ntc_open puts the NTC's ADC input at the floor (gun_temp reads
  2500, a broken sensor, as the ESP32 HAL reads any NTC outside the ADC's range); cp_rail
  puts the CP sense input at the top rail (cp_read gives 21816 mV, what the ESP32 board
  reads for code 4095 through the devkitc divider; the CP line and the vehicle are sound);
  mains above ~290 V or a current above ~70 A clip the simulated 12-bit ADC (codes 0, 4095).
  {"cmd":"button"}                         press the local stop button once
  {"cmd":"net","up":b}                     network link up/down
  {"cmd":"speed","x":1..10000}             board ms per real ms
  {"cmd":"clock","epoch_ms":int}           jump the wall clock (trust unchanged)
  {"cmd":"freeze","ms":0..120000}          block the event loop this many board ms
  {"cmd":"starve","ms":1..60000[,"with":req]}  out of memory for this many board ms: every
                                           allocation of the application raises MemoryError;
                                           with: a bench request carried out just before, in
                                           the same turn of the loop (a fault while starved)
  {"cmd":"heap"} -> {"alloc", "free", "largest"}   after a collection; largest: the
                                           biggest block one allocation can still get
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
Any other cmd goes to Board.bench_handlers[cmd](request) (the application's own commands),
whose returned dict is the reply ("ok":true added when missing); else "unknown cmd".
Car, mains, temperature and faults are saved to the world file on every change and reloaded
at start; the relay always starts open.

The server polls its sockets (every 5 ms) instead of asyncio's server, and reads or accepts
nothing while "starve" has the heap locked: asyncio's server would allocate at once and die
of it.  The commands are one function driven by the text table _CMDS (few functions, few
names: this module is loaded from .mpy into the same heap as the firmware).
"""
import asyncio
import json
import time

_CMDS = """plug
unplug
button
state
events since:int:0:1e18
car want:bool vent:bool demand_a:float:0:80 greedy:bool
mains v:float:0:500 pf:float:0:1 noise:float:0:0.2
temp c:float:-60:250
fault name:Fault on:Bool
net up:Bool
speed x:Int:1:10000
clock epoch_ms:Int:1:4.5e15
freeze ms:Int:0:120000
starve ms:Int:1:60000 with:req
heap map:bool"""


async def serve(b, port):
    """Accept bench clients on 127.0.0.1:port; each gets a task.  Sockets polled
    every 5 ms, and nothing is read or accepted while the bench starves the heap
    (asyncio's server would allocate at once and die of it)."""
    import select
    import socket
    srv = b._srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    srv.listen(8)
    srv.setblocking(False)
    poller = select.poll()
    poller.register(srv, select.POLLIN)
    while b._srv is srv:
        await asyncio.sleep_ms(5)
        for _ in () if b.starved else poller.ipoll(0):   # ipoll: no list made
            try:
                c = srv.accept()[0]
                c.setblocking(False)
                asyncio.create_task(_client(b, c))
            except Exception:       # out of memory, say: that client is dropped
                pass
    srv.close()

async def _client(b, c):
    """One client: a JSON request per line, a JSON reply line each."""
    got, buf = b"", bytearray(256)
    try:
        while b._srv:
            await asyncio.sleep_ms(5)
            if b.starved:
                continue
            n = c.readinto(buf)     # None: nothing yet (no exception made each time)
            if n is None:
                continue
            if not n:
                break
            got += buf[:n]
            while b"\n" in got:
                line, _, got = got.partition(b"\n")
                if line.strip():
                    out = memoryview((json.dumps(handle(b, line)) + "\n").encode())
                    while out:
                        try:
                            n = c.send(out)
                        except OSError:
                            n = 0
                        out = out[n:]
                        if out:
                            await asyncio.sleep_ms(5)
    except Exception as e:  # a dropped client must not stop the server
        try:
            print("sim: bench:", repr(e))
        except MemoryError:
            pass
    c.close()


def handle(b, line):
    """Run one bench request (JSON text or dict); return the reply dict."""
    from hal.sim import FAULTS      # (hal.sim imports this module)
    req = line
    if type(req) is not dict:
        try:
            req = json.loads(line)
        except (ValueError, TypeError, UnicodeError):
            return {"ok": False, "error": "not JSON"}
    cmd = req.get("cmd") if type(req) is dict else None
    if type(cmd) is not str:
        return {"ok": False, "error": 'need {"cmd": <string>, ...}'}
    keys = None  # a built-in command's line of _CMDS, split
    for spec in _CMDS.split("\n"):
        spec = spec.split()
        if spec[0] == cmd:
            keys = spec[1:]
    try:
        if keys is None:  # not built in: the application's command, if any
            rep = b.bench_handlers.get(cmd)
            rep = rep(req) if rep else {"ok": False, "error": "unknown cmd: " + cmd}
        else:  # check every key, then carry the command out
            names, bad = [], None
            for spec in keys:
                k, t, *lim = spec.split(":")
                names.append(k)
                if k not in req:
                    if t[0].isupper():  # required
                        bad = k
                    continue
                x, t = req[k], t.lower()
                if (t == "bool" and type(x) is not bool or t == "fault" and x not in FAULTS
                        or t == "int" and type(x) is not int
                        or t == "float" and type(x) not in (int, float)
                        or t == "req" and type(x) is not dict
                        or lim and not float(lim[0]) <= x <= float(lim[1])):
                    bad = k
            for k in req:
                if k not in names and k != "cmd" and k != "id":
                    bad = k
            rep, w = {}, b.w
            if bad is None and cmd != "state" and cmd != "events":
                b._event("bench", req)  # the recorder notes every change the bench makes
            if bad is not None:
                rep = {"ok": False, "error": "%r: %s takes %s" % (bad, cmd, " ".join(keys))}
            elif cmd == "state":
                rep["state"] = b.state()
            elif cmd == "events":
                rep["events"] = b.events(req.get("since", 0))
                rep["next"] = b._seq
            elif cmd == "button":
                b.button = True
            elif cmd == "net":
                b.net = req["up"]
            elif cmd == "speed":
                b.ticks_ms()  # count board time so far at the old speed
                b.speed = req["x"]
            elif cmd == "clock":
                b.clock[2:] = [req["epoch_ms"], b.ticks_ms()]
            elif cmd == "freeze":
                rep["real_ms"] = req["ms"] // b.speed
                time.sleep_ms(rep["real_ms"])
            elif cmd == "starve":
                asyncio.create_task(starve(b, req["ms"], req.get("with")))
            elif cmd == "heap":
                rep.update(heap())
                if req.get("map"):
                    import micropython
                    micropython.mem_info(1)     # the block map, on the console
            else:  # the world: plug, unplug, car, mains, temp, fault
                name, f, fire = req.get("name"), w["faults"], False
                if cmd == "plug" or cmd == "unplug":
                    w["plugged"] = cmd == "plug"
                elif cmd != "fault":  # car, mains, temp: the keys given
                    for k in names:
                        if k in req:
                            w["temp_c" if k == "c" else k] = req[k]
                elif req["on"] and name not in f:
                    b.lock_feedback()  # a stuck lock freezes where it is now
                    f.append(name)
                    if b.relay_cmd:
                        b._pending["fault:" + name] = b._us()
                    fire = name == "estop" or name == "leakage"
                elif not req["on"] and name in f:
                    f.remove(name)
                    if name == "welded" and b.contacts != b.relay_cmd:
                        b.contacts = b.relay_cmd
                        b._event("contacts", b.contacts)
                b._update()
                b._save()
                for cb in b._alarms if fire else ():
                    try:
                        cb(name)
                    except Exception as e:
                        b._event("alarm_error", repr(e))
        if "ok" not in rep:
            rep["ok"] = True
    except Exception as e:  # a bench bug (or a handler's reply not a dict) keeps the server up
        rep = {"ok": False, "error": "%s failed: %r" % (cmd, e)}
    if "id" in req:
        rep["id"] = req["id"]
    return rep

def heap():
    """The heap after a collection: in use, free, and the largest block that can be
    allocated in one piece (found by trying: fragmentation is what fails first)."""
    import gc
    gc.collect()
    out = {"alloc": gc.mem_alloc(), "free": gc.mem_free()}
    lo, hi = 0, out["free"]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            bytearray(mid)
            lo = mid
        except MemoryError:
            hi = mid - 1
    out["largest"] = lo
    return out

async def starve(b, ms, first=None):
    """Out of memory for ms board ms: every allocation the loop's other tasks make
    raises MemoryError (the heap locked; this task allocates nothing until the end).
    first: a bench request carried out just before, in the same turn of the loop, so
    that no task sees its change with memory to spare (a fault while starved)."""
    import micropython
    if first is not None:
        got = handle(b, first)
        if not got["ok"]:
            print("sim: starve with:", got["error"])
    b.starved = True
    micropython.heap_lock()
    try:
        await asyncio.sleep_ms(max(1, ms // b.speed))
    finally:
        micropython.heap_unlock()
        b.starved = False


def state(b):
    """Everything the bench may want to see, as one JSON-able dict."""
    hi, lo = b.cp_read()
    w = b.w
    t = b._pending.get("left_cd")
    vs, ls = [], []
    for t_us, what in b.violations:
        vs.append({"t_us": t_us, "what": what})
    for what, us in b.latencies:
        ls.append({"what": what, "us": us})
    return {
        "cp_duty": b.duty, "cp_hi": hi, "cp_lo": lo, "cp_level": b._level,
        "relay_cmd": b.relay_cmd, "relay_closed": b.contacts,
        "lock_cmd": b.lock_cmd, "locked": b.lock_feedback(),
        "plugged": w["plugged"], "want": w["want"], "vent": w["vent"],
        "demand_a": w["demand_a"], "current_a": b.current_a(), "mains_v": w["v"],
        "pf": w["pf"], "noise": w["noise"], "temp_c": w["temp_c"],
        "estop": b.estop(), "leakage": b.leakage(), "faults": list(w["faults"]),
        "net_up": b.net, "speed": b.speed, "now_ms": b.now_ms(),
        "ticks_ms": b.ticks_ms(), "trusted": b._trusted, "reset_cause": b.reset,
        "overdue_ms": None if t is None else (b._us() - t) // 1000,
        "violations": vs, "violation_count": b.violation_count, "latencies": ls,
        "under_load": b.under_load}
