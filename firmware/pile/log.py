"""Logging: one line per event to the console, and the last lines kept in a RAM ring.

A field technician reads the ring from the REPL (``app.logs()``).  Secrets (the vendor
key, MQTT passwords) are never handed to this module; callers log only their absence.
info(), warn() and error() take (tag, message) and differ only in the level letter.
"""
import time

from micropython import const

_RING = const(16)   # lines kept for the REPL
_ring = []
_clock = None
echo = True


def set_clock(now_ms):
    """Use the board's wall clock (epoch ms) for time stamps."""
    global _clock
    _clock = now_ms


def _level(letter):
    def log(tag, msg):
        ms = int(_clock() if _clock else time.time() * 1000)
        t = time.gmtime(ms // 1000)
        line = "%02d:%02d:%02d.%03d %s [%s] %s" % (t[3], t[4], t[5], ms % 1000, letter, tag, msg)
        _ring.append(line)
        if len(_ring) > _RING:
            _ring.pop(0)
        if echo:
            print(line)
    return log


info, warn, error = _level("I"), _level("W"), _level("E")


def lines():
    return list(_ring)
