"""Field diagnostics at the serial REPL (docs/field-guide.md): diag.help() lists them.

Ctrl-C stops the application safely (relay open, PWM off, watchdog held off); these
helpers work on the last application started since boot (App.current).  Never loaded at
boot, so they cost no memory while the pile runs.
"""
import json
import os
import sys

from pile import config as _config
from pile import log


_HELP = """Ctrl-C stopped the application; the relay is open.
  diag.status()          CP (mV and state), relay, lock, V, I, temperature, faults, link,
                         session, memory
  diag.fee()             the fee model in force (None without one)
  diag.orders()          journal records (start and stop results, orders) not yet
                         acknowledged by the platform
  diag.logs(20)          the last lines of the log
  diag.adc(10)           mean raw ADC counts and RMS V, I over 10 bursts (calibration)
  diag.stop()            end the running session: PWM off, relay open once the vehicle
                         has left C (at most stop_wait_ms), lock released, order kept
  diag.provision()       forget the MQTT credentials: provision again at the next run
  diag.config()          config.json as the next run reads it, secrets masked
  diag.set_config("heartbeat_s", 60)   change one key and save config.json
  diag.run()             start the application again (Ctrl-C stops it)"""


def help():
    print(_HELP)


def _app():
    from pile.app import App
    a = getattr(App, "current", None)
    if a is None:
        raise RuntimeError("no application has run since boot")
    return a


def _path():
    import main
    return main.options(getattr(sys, "argv", []))["config"]


def status():
    a = _app()
    b = a.board
    s = a.status()
    s["cp_hi_mv"], s["cp_lo_mv"] = b.cp_read()
    s.update(estop=b.estop(), leakage=b.leakage(), net_up=b.net_up(),
             time_trusted=b.time_trusted(), reset_cause=b.reset_cause())
    return s


def fee():
    return _app().tariff.model


def orders():
    """The journal's records as the platform will receive them (their bodies)."""
    a = _app()
    p, out = a.proto, []
    for r in a.journal.recs:
        seq = p.seq
        body = json.loads(bytes(a.journal.message(r)[2]))["body"]
        p.seq = seq                     # shown, not sent: no event id used up
        out.append(body)
    return out


def logs(n=40):
    for line in log.lines()[-n:]:
        print(line)


def adc(n=10):
    import asyncio
    a = _app()
    sv = si = cnt = mv = ma = 0
    for _ in range(n):
        v, i, period = asyncio.run(a.board.adc_burst())
        sv, si, cnt = sv + sum(v), si + sum(i), cnt + len(v)
        x = a.metering.meter.measure(v, i)
        mv, ma = mv + x[0], ma + x[1]
    return {"v_mean": sv // cnt, "i_mean": si // cnt, "v_mv": mv // n, "i_ma": ma // n,
            "samples": len(v), "period_us": period}


def stop():
    """End the running session: PWM off, the relay opens once the vehicle has left C (the
    gun's own normal stop, stepped here while the application is stopped), at most
    stop_wait_ms later; the order is journaled; the lock is released."""
    import time
    a = _app()
    g, b = a.gun, a.board
    g.local_stop()
    t0 = time.ticks_ms()
    while g.s is not None and time.ticks_diff(time.ticks_ms(), t0) < \
            a.cfg["stop_wait_ms"] + 500:
        g.step()
        time.sleep_ms(10)
    b.relay_set(False)
    g.relay = False
    if not b.relay_feedback():
        b.lock_set(False)
        g.lock = False
    return {"work_status": g.work_status(), "relay": b.relay_feedback(),
            "orders_pending": a.journal.orders()}


def provision():
    _app().prov.forget("asked at the console")
    return "credentials dropped: the next run provisions again"


def config():
    cfg, errors = _config.load(_path())
    for e in errors:
        print("config:", e)
    return _config.public(cfg)


def set_config(key, value):
    d = _config.DEFAULTS
    if key not in d:
        raise ValueError("unknown config key %s" % key)
    if type(value) is not type(d[key]):
        raise ValueError("%s: expected %s" % (key, type(d[key]).__name__))
    path = _path()
    try:
        with open(path) as f:
            user = json.load(f)
    except (OSError, ValueError):
        user = {}
    user[key] = value
    with open(path + ".tmp", "w") as f:
        json.dump(user, f)
    os.rename(path + ".tmp", path)
    log.warn("diag", "config key %s changed at the console" % key)
    return config()


def run():
    import main
    return main.main()
