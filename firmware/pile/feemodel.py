"""Validation of a fee model (PROTOCOL.md section 4 feeModelUpdateSrv): imported only
when a model arrives or is read back from flash at boot, then dropped again by
pile.tariff, so none of this code stays in the heap while the pile runs.

parse() turns a feeModelUpdateSrv body into the compact model that pile.fees prices with;
check() vets a compact model loaded from flash.  Both give a reason text a technician can
read (the offending field and a cut-short copy of its value).
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
        return "%s: must be a list of 4 prices" % name
    for k in range(4):
        if type(x[k]) is not int or x[k] < 0:
            return "%s[%d]: %s is not a non-negative integer" % (name, k, _show(x[k]))
    return None


def parse(body):
    """(model, None) for a valid feeModelUpdateSrv body, else (None, reason)."""
    if type(body) is not dict:
        return None, "body: must be an object"
    mid = body.get("ele_model_id")
    if type(mid) is not str or not mid:
        return None, "ele_model_id: must be a non-empty string"
    n = body.get("time_num")
    if type(n) is not int or not 1 <= n <= _MAX_SEGS:
        return None, "time_num: %s is not an integer 1..%d" % (_show(n), _MAX_SEGS)
    segs, flags = body.get("time_seg"), body.get("seg_flag")
    if type(segs) is not list or len(segs) != n:
        return None, "time_seg: must be a list of time_num (%d) times" % n
    if type(flags) is not list or len(flags) != n:
        return None, "seg_flag: must be a list of time_num (%d) flags" % n
    starts = []
    for k in range(n):
        s, m = segs[k], None        # m: minute of day of a valid "HHMM", else None
        if type(s) is str and len(s) == 4 and all(c in "0123456789" for c in s):
            h, m = int(s[:2]), int(s[2:])
            m = h * 60 + m if h <= 23 and m <= 59 else None
        if m is None:
            return None, "time_seg[%d]: %s is not a valid HHMM time" % (k, _show(s))
        if starts and m <= starts[-1]:
            return None, "time_seg[%d]: %s is not after time_seg[%d]" % (k, _show(s), k - 1)
        starts.append(m)
    for k in range(n):
        f = flags[k]
        if type(f) is not int or not 10 <= f <= 13:
            return None, "seg_flag[%d]: %s is not 10..13" % (k, _show(f))
    why = _prices(body.get("charge_fee"), "charge_fee") or \
        _prices(body.get("serviceFee"), "serviceFee")
    if why:
        return None, why
    return {"id": mid, "starts": starts, "bands": [f - 10 for f in flags],
            "power": list(body["charge_fee"]), "service": list(body["serviceFee"])}, None


def check(model):
    """None when a compact model (e.g. loaded back from flash) is sound, else the reason."""
    if type(model) is not dict:
        return "model: must be a dict"
    mid = model.get("id")
    if type(mid) is not str or not mid:
        return "id: must be a non-empty string"
    starts, bands = model.get("starts"), model.get("bands")
    if type(starts) is not list or not 1 <= len(starts) <= _MAX_SEGS:
        return "starts: must be a list of 1..%d minutes" % _MAX_SEGS
    if type(bands) is not list or len(bands) != len(starts):
        return "bands: must be a list as long as starts"
    prev = -1
    for m in starts:
        if type(m) is not int or not prev < m < _DAY:
            return "starts: %s is not an ascending minute of day" % _show(m)
        prev = m
    for b in bands:
        if type(b) is not int or not 0 <= b <= 3:
            return "bands: %s is not 0..3" % _show(b)
    return _prices(model.get("power"), "power") or _prices(model.get("service"), "service")
