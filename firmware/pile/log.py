"""Logging: one line per event to the console, and the last lines kept in a RAM ring.

A field technician reads the ring from the REPL (``from pile import diag; diag.logs()``).
Secrets (the vendor key, MQTT passwords) are never handed to this module; callers log
only their absence.  info(), warn() and error() take (tag, message) and differ only in
the level letter; they never raise (a line that cannot be made, out of memory say, is
counted in `lost`: a log call is safe in any error path).  The ring is one preallocated buffer of RING bytes (the newest lines,
oldest dropped whole): no string object per kept line.
"""
import time

from micropython import const

_RING = const(1536)     # bytes of the newest lines kept for the REPL
_ring = bytearray(_RING)
_n = 0                  # bytes of the ring in use
_clock = None
echo = True
lost = 0                # lines that could not be made (out of memory)


def set_clock(now_ms):
    """Use the board's wall clock (epoch ms) for time stamps."""
    global _clock
    _clock = now_ms


def _level(letter):
    def log(tag, msg):
        try:
            _log(letter, tag, msg)
        except Exception:           # out of memory, say: the line is lost, never the caller
            global lost
            lost += 1
    return log


def _log(letter, tag, msg):
    global _n
    ms = int(_clock() if _clock else time.time() * 1000)
    t = time.gmtime(ms // 1000)
    line = "%02d:%02d:%02d.%03d %s [%s] %s" % (t[3], t[4], t[5], ms % 1000, letter, tag, msg)
    if echo:
        print(line)
    b = memoryview(line)[:_RING - 1]        # a str as its UTF-8 bytes
    k = len(b) + 1
    need = _n + k - _RING
    if need > 0:                            # room: the oldest whole lines go
        i = _ring.find(b"\n", need - 1, _n)
        cut = i + 1 if i >= 0 else _n
        m = memoryview(_ring)
        m[:_n - cut] = m[cut:_n]
        _n -= cut
    _ring[_n:_n + k - 1] = b
    _ring[_n + k - 1] = 10
    _n += k


info, warn, error = _level("I"), _level("W"), _level("E")


def lines():
    """The kept lines, oldest first."""
    try:
        return bytes(_ring[:_n]).decode().split("\n")[:-1]
    except UnicodeError:                        # a line cut inside a character
        return [repr(bytes(_ring[:_n]))]
