"""Time-of-use pricing: the band of a local minute and the money rule (PROTOCOL.md
section 5).  Pure functions; integers only.  Validating a model (feeModelUpdateSrv, or
one read back from flash) is pile.feemodel's, loaded only while that happens.

Compact model: {"id": str, "starts": [minute of day, ...], "bands": [0..3, ...],
"power": [4 prices], "service": [4 prices]}; band 0 sharp, 1 peak, 2 flat, 3 valley
(the wire's flags 10..13); prices in 0.0001 yuan/kWh, indexed by band.

Units: energy inside the firmware in mWh (0.000001 kWh); reported energy in Wh (0.001
kWh); money in 0.0001 yuan.  Every reduction truncates.  A band's cost comes from the
band's full internal energy; totals are sums of the band values, so a record always adds
up (the energy total likewise: the sum of the four truncated bands, at most 3 Wh below
the truncated sum of internal energies).  None of this allocates: the limits of a
running session are checked with it every 50 ms.
"""
from micropython import const

_DAY = const(1440)  # minutes


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


def wh(e):
    """The reported energy (Wh) of per-band mWh e: the sum of the truncated bands."""
    return e[0] // 1000 + e[1] // 1000 + e[2] // 1000 + e[3] // 1000


def money(e, prices):
    """The money of per-band mWh e at 4 prices (None: 0): the sum of each band's cost,
    each from the band's whole energy."""
    if prices is None:
        return 0
    return cost(e[0], prices[0]) + cost(e[1], prices[1]) + cost(e[2], prices[2]) + \
        cost(e[3], prices[3])
