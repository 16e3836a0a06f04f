"""Time-of-use pricing: the band of a local minute and the money rule (PROTOCOL.md
section 5).  Pure functions; integers only.  Validating a model (feeModelUpdateSrv, or
one read back from flash) is pile.feemodel's, loaded only while that happens.

Compact model: {"id": str, "starts": [minute of day, ...], "bands": [0..3, ...],
"power": [4 prices], "service": [4 prices]}; band 0 sharp, 1 peak, 2 flat, 3 valley
(seg_flag 10..13); prices in 0.0001 yuan/kWh, indexed by band.

Units: energy inside the firmware in mWh (0.000001 kWh); reported energy in 0.001 kWh;
money in 0.0001 yuan.  Every reduction truncates.  A band's cost comes from the band's
full internal energy; totals are sums of the reported band values, so a record always
adds up (total_elect likewise: the sum of the four reported *_elect values, which is
at most 3 units below the truncated sum of internal energies).
"""
from micropython import const

_DAY = const(1440)  # minutes
# wire names of each band's energy and money, band by band (pile.orders shares them);
# a list of interned names, not a tuple of string objects
KEYS = ["sharp_elect", "sharp_power_cost", "sharp_serv_cost",
        "peak_elect", "peak_power_cost", "peak_serv_cost",
        "flat_elect", "flat_power_cost", "flat_serv_cost",
        "valley_elect", "valley_power_cost", "valley_serv_cost"]


def band_at(model, minute):
    """Band index (0 sharp .. 3 valley) in force at a local minute of the day.

    Segment i runs from starts[i] up to starts[i+1]; the last one runs past midnight,
    so minutes before starts[0] belong to it.
    """
    starts = model["starts"]
    minute %= _DAY
    i = len(starts) - 1
    for k in range(len(starts)):
        if starts[k] > minute:
            break
        i = k
    return model["bands"][i]


def local_minute(epoch_ms, tz_min=480):
    """Minute of the local day (0..1439) for Unix-epoch milliseconds, UTC+tz_min."""
    return (epoch_ms // 60000 + tz_min) % _DAY


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
    for b in range(4):
        e = e_mwh[b]
        el, pc, sc = e // 1000, cost(e, model["power"][b]), cost(e, model["service"][b])
        out[KEYS[3 * b]], out[KEYS[3 * b + 1]], out[KEYS[3 * b + 2]] = el, pc, sc
        te += el
        tp += pc
        ts += sc
    out["total_elect"], out["total_power_cost"], out["total_serv_cost"] = te, tp, ts
    out["total_cost"] = tp + ts
    return out
