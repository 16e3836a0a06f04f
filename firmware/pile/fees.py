"""Time-of-use fee model and the money rule (PROTOCOL.md section 4 feeModelUpdateSrv, 5).

Owns: validating a feeModelUpdateSrv body into the compact model, checking a model
read back from flash, the band of a local minute, and pricing per-band energy.
Pure functions; integers only.

Compact model: {"id": str, "starts": [minute of day, ...], "bands": [0..3, ...],
"power": [4 prices], "service": [4 prices]}; band 0 sharp, 1 peak, 2 flat, 3 valley
(seg_flag 10..13); prices in 0.0001 yuan/kWh, indexed by band.

Units: energy inside the firmware in mWh (0.000001 kWh); reported energy in 0.001 kWh;
money in 0.0001 yuan.  Every reduction truncates.  A band's cost comes from the band's
full internal energy; totals are sums of the reported band values, so a record always
adds up (total_elect likewise: the sum of the four reported *_elect values, which is
at most 3 units below the truncated sum of internal energies).
"""

BANDS = ("sharp", "peak", "flat", "valley")
MAX_SEGS = 14
DAY = 1440  # minutes
# wire names of each band's energy and money (built once; pile.orders shares them)
KEYS = tuple((b + "_elect", b + "_power_cost", b + "_serv_cost") for b in BANDS)


def _show(x):
    """repr of a value for a reason text, cut short (it may come from the network)."""
    r = repr(x)
    return r if len(r) <= 24 else r[:21] + "..."


def _is_int(x):
    return type(x) is int  # bool is not int here


def _prices(x, name):
    """Reason text, or None when x is a list of 4 non-negative ints."""
    if type(x) is not list or len(x) != 4:
        return "%s: must be a list of 4 prices" % name
    for k in range(4):
        if not _is_int(x[k]) or x[k] < 0:
            return "%s[%d]: %s is not a non-negative integer" % (name, k, _show(x[k]))
    return None


def _hhmm(s):
    """Minute of day for an "HHMM" string, or None when it is not a valid time."""
    if type(s) is not str or len(s) != 4:
        return None
    for c in s:
        if c not in "0123456789":
            return None
    h, m = int(s[:2]), int(s[2:])
    if h > 23 or m > 59:
        return None
    return h * 60 + m


def parse(body):
    """(model, None) for a valid feeModelUpdateSrv body, else (None, reason)."""
    if type(body) is not dict:
        return None, "body: must be an object"
    mid = body.get("ele_model_id")
    if type(mid) is not str or not mid:
        return None, "ele_model_id: must be a non-empty string"
    n = body.get("time_num")
    if not _is_int(n) or not 1 <= n <= MAX_SEGS:
        return None, "time_num: %s is not an integer 1..%d" % (_show(n), MAX_SEGS)
    segs, flags = body.get("time_seg"), body.get("seg_flag")
    if type(segs) is not list or len(segs) != n:
        return None, "time_seg: must be a list of time_num (%d) times" % n
    if type(flags) is not list or len(flags) != n:
        return None, "seg_flag: must be a list of time_num (%d) flags" % n
    starts = []
    for k in range(n):
        m = _hhmm(segs[k])
        if m is None:
            return None, "time_seg[%d]: %s is not a valid HHMM time" % (k, _show(segs[k]))
        if starts and m <= starts[-1]:
            return None, "time_seg[%d]: %s is not after time_seg[%d]" % (k, _show(segs[k]), k - 1)
        starts.append(m)
    for k in range(n):
        f = flags[k]
        if not _is_int(f) or not 10 <= f <= 13:
            return None, "seg_flag[%d]: %s is not 10..13" % (k, _show(f))
    why = _prices(body.get("charge_fee"), "charge_fee")
    why = why or _prices(body.get("serviceFee"), "serviceFee")
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
    if type(starts) is not list or not 1 <= len(starts) <= MAX_SEGS:
        return "starts: must be a list of 1..%d minutes" % MAX_SEGS
    if type(bands) is not list or len(bands) != len(starts):
        return "bands: must be a list as long as starts"
    prev = -1
    for m in starts:
        if not _is_int(m) or not prev < m < DAY:
            return "starts: %s is not an ascending minute of day" % _show(m)
        prev = m
    for b in bands:
        if not _is_int(b) or not 0 <= b <= 3:
            return "bands: %s is not 0..3" % _show(b)
    return _prices(model.get("power"), "power") or _prices(model.get("service"), "service")


def band_at(model, minute):
    """Band index (0 sharp .. 3 valley) in force at a local minute of the day.

    Segment i runs from starts[i] up to starts[i+1]; the last one runs past midnight,
    so minutes before starts[0] belong to it.
    """
    starts = model["starts"]
    minute %= DAY
    i = len(starts) - 1
    for k in range(len(starts)):
        if starts[k] > minute:
            break
        i = k
    return model["bands"][i]


def local_minute(epoch_ms, tz_min=480):
    """Minute of the local day (0..1439) for Unix-epoch milliseconds, UTC+tz_min."""
    return (epoch_ms // 60000 + tz_min) % DAY


def cost(e_mwh, price):
    """Money (0.0001 yuan, truncated) for e_mwh mWh at price 0.0001 yuan/kWh."""
    return e_mwh * price // 1000000


def bill(e_mwh, model):
    """Every per-band and total money/energy field, in wire units, for per-band mWh.

    e_mwh: 4 energies in mWh indexed by band.  Returns sharp_elect .. valley_serv_cost,
    total_elect, total_power_cost, total_serv_cost and total_cost.
    """
    out = {}
    te = tp = ts = 0
    power, service = model["power"], model["service"]
    for b in range(4):
        e = e_mwh[b]
        el, pc, sc = e // 1000, cost(e, power[b]), cost(e, service[b])
        k = KEYS[b]
        out[k[0]] = el
        out[k[1]] = pc
        out[k[2]] = sc
        te += el
        tp += pc
        ts += sc
    out["total_elect"] = te
    out["total_power_cost"] = tp
    out["total_serv_cost"] = ts
    out["total_cost"] = tp + ts
    return out
