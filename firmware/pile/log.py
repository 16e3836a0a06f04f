"""Logging: one line per event to the console, and the last lines kept in a RAM ring.

A field technician reads the ring from the REPL (``app.logs()``).  Secrets (the vendor
key, MQTT passwords) are never handed to this module; callers log only their absence.
"""
import time

RING = 40
_ring = []
_clock = None
echo = True


def set_clock(now_ms):
    """Use the board's wall clock (epoch ms) for time stamps."""
    global _clock
    _clock = now_ms


def _stamp():
    ms = _clock() if _clock else time.time() * 1000
    ms = int(ms)
    t = time.gmtime(ms // 1000)
    return "%02d:%02d:%02d.%03d" % (t[3], t[4], t[5], ms % 1000)


def log(tag, msg, level="I"):
    line = "%s %s [%s] %s" % (_stamp(), level, tag, msg)
    _ring.append(line)
    if len(_ring) > RING:
        _ring.pop(0)
    if echo:
        print(line)


def info(tag, msg):
    log(tag, msg, "I")


def warn(tag, msg):
    log(tag, msg, "W")


def error(tag, msg):
    log(tag, msg, "E")


def lines():
    return list(_ring)
