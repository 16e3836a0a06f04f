"""Vetting a compact fee model (pile.fees), received or read back from flash: imported
only while that happens, then dropped again by pile.tariff, so none of this code stays
in the heap while the pile runs.

pile.protocol has already checked a received model's shape (types, lengths, prices, the
"HHMM" times); check() holds every model to the rules a model must keep
(PROTOCOL.md section 4): 1..14 segments, start minutes strictly ascending within the
day, a band 0..3 per segment, four non-negative integer prices of each kind.  Its reason
names the offending part and a cut-short copy of its value, for the service reply.
"""
from micropython import const

_DAY = const(1440)  # minutes
_MAX_SEGS = const(14)


def _show(x):
    """repr of a value for a reason text, cut short (it may come from the network)."""
    r = repr(x)
    return r if len(r) <= 24 else r[:21] + "..."


def _prices(x, name):
    """Reason text, or None when x is a list of 4 non-negative ints (bool is not int)."""
    if type(x) is not list or len(x) != 4:
        return "%s prices: must be a list of 4" % name
    for k in range(4):
        if type(x[k]) is not int or x[k] < 0:
            return "%s price %d: %s is not a non-negative integer" % (name, k, _show(x[k]))
    return None


def check(model):
    """None when a compact model is sound, else the reason."""
    if type(model) is not dict:
        return "model: must be a dict"
    mid = model.get("id")
    if type(mid) is not str or not 1 <= len(mid) <= 64:
        return "model id: must be a string of 1..64 characters"
    starts, bands = model.get("starts"), model.get("bands")
    if type(starts) is not list or not 1 <= len(starts) <= _MAX_SEGS:
        return "segments: must be 1..%d" % _MAX_SEGS
    if type(bands) is not list or len(bands) != len(starts):
        return "bands: one per segment"
    prev = -1
    for k in range(len(starts)):
        m = starts[k]
        if type(m) is not int or not prev < m < _DAY:
            return "segment %d: start minute %s is not after the one before it" % (k, _show(m))
        prev = m
    for b in bands:
        if type(b) is not int or not 0 <= b <= 3:
            return "bands: %s is not 0..3" % _show(b)
    return _prices(model.get("power"), "power") or _prices(model.get("service"), "service")
