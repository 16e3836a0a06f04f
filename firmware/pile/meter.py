"""Mains measurement from ADC bursts, and energy integration.

Owns: the sums over one burst (kernel), RMS voltage and current and real power from
them with the board's calibration (Meter), and integer energy in mWh (Energy).

Samples are the HAL's array('h') raw counts (0..4095); the calibration ``cal`` gives
v_offset, i_offset (counts, 0..4095) and v_uv, i_ua (microvolts / microamps per count).

kernel is viper code.  Viper ints are machine words (32 bits on the ESP32) and wrap
silently, so it sums CHUNK samples at a time (CHUNK * 4095**2 < 2**30, exact) and folds
each partial sum into a running hi * 2**24 + lo pair; hi grows by at most 64 per chunk,
so any burst length is exact.  The result goes out through a scratch array('i'):
viper tuples would be one heap allocation per call, and a 3-block allocation in
MicroPython's GC scans past every block allocated since the last 1-block one.
Viper reads array('h') through ptr16 (unsigned) and sign-extends, so it agrees with
kernel_ref for any sample with |sample - offset| <= 4095.
"""

import micropython
from micropython import const
from array import array

CHUNK = const(64)  # samples per exact 32-bit partial sum
MWH = 3600000  # mW * ms in one mWh


def kernel_ref(v, i, voff, ioff):
    """(svv, sii, svi): sums of dv*dv, di*di and dv*di, dv = v - voff, di = i - ioff."""
    n = len(v)
    if len(i) != n:
        raise ValueError("v and i differ in length")
    svv = sii = svi = 0
    for k in range(n):
        x = v[k] - voff
        y = i[k] - ioff
        svv += x * x
        sii += y * y
        svi += x * y
    return svv, sii, svi


@micropython.viper
def _sums(v, i, n: int, voff: int, ioff: int, out):
    pv = ptr16(v)  # noqa: F821 (viper built-in)
    pi = ptr16(i)  # noqa: F821
    po = ptr32(out)  # noqa: F821
    la = 0  # running sums as hi * 2**24 + lo, lo in 0..2**24-1
    ha = 0
    lb = 0
    hb = 0
    lc = 0
    hc = 0
    k = 0
    while k < n:
        end = k + CHUNK
        if end > n:
            end = n
        a = 0
        b = 0
        c = 0
        while k < end:
            x = ((pv[k] ^ 0x8000) - 0x8000) - voff
            y = ((pi[k] ^ 0x8000) - 0x8000) - ioff
            a += x * x
            b += y * y
            c += x * y
            k += 1
        la += a
        ha += la >> 24
        la &= 0xFFFFFF
        lb += b
        hb += lb >> 24
        lb &= 0xFFFFFF
        lc += c
        hc += lc >> 24  # arithmetic shift: a negative sum gets a negative hi
        lc &= 0xFFFFFF
    po[0] = ha
    po[1] = la
    po[2] = hb
    po[3] = lb
    po[4] = hc
    po[5] = lc


_out = array("i", [0] * 6)  # scratch for _sums: no allocation per burst (not re-entrant)


def kernel(v, i, voff, ioff):
    """Same result as kernel_ref, fast (viper), allocating nothing but the result."""
    n = len(v)
    if len(i) != n:
        raise ValueError("v and i differ in length")
    o = _out
    _sums(v, i, n, voff, ioff, o)
    return (o[0] << 24) + o[1], (o[2] << 24) + o[3], (o[4] << 24) + o[5]


def isqrt(n):
    """Integer square root: the largest r with r * r <= n (0 for n <= 0)."""
    if n <= 0:
        return 0
    bits, m = 0, n
    while m:
        m >>= 8
        bits += 8
    x = 1 << ((bits + 1) >> 1)  # >= sqrt(n)
    while True:
        y = (x + n // x) >> 1
        if y >= x:
            return x
        x = y


def _tdiv(a, b):
    """a / b truncated toward zero (b > 0)."""
    return a // b if a >= 0 else -(-a // b)


class Meter:
    """measure(v, i) -> (mv, ma, mw): RMS voltage (mV), RMS current (mA) and real
    power (mW, the mean of v*i, so the power factor counts; negative when exporting),
    all ints truncated toward zero, from one burst of raw samples."""

    def __init__(self, cal):
        self.voff = int(cal["v_offset"])
        self.ioff = int(cal["i_offset"])
        self.v_uv = int(cal["v_uv"])
        self.i_ua = int(cal["i_ua"])
        if not (0 <= self.voff <= 4095 and 0 <= self.ioff <= 4095):
            raise ValueError("cal: offsets must be 0..4095 counts")
        if self.v_uv <= 0 or self.i_ua <= 0:
            raise ValueError("cal: v_uv and i_ua must be positive")

    def measure(self, v, i):
        n = len(v)
        if not n:
            return 0, 0, 0
        svv, sii, svi = kernel(v, i, self.voff, self.ioff)
        d = n * 1000000  # (uV)^2 -> (mV)^2 and the mean
        mv = isqrt(svv * self.v_uv * self.v_uv // d)
        ma = isqrt(sii * self.i_ua * self.i_ua // d)
        mw = _tdiv(svi * self.v_uv * self.i_ua, d * 1000)  # uV*uA = 1e-12 W
        return mv, ma, mw


class Energy:
    """Integrates power into whole mWh (.mwh), carrying the remainder (.rem, in
    mW*ms, below MWH) so nothing is lost over a long session.  Negative power or
    time counts as 0.  Energy(mwh, rem) restores a checkpoint."""

    def __init__(self, mwh=0, rem=0):
        self.mwh = mwh
        self.rem = rem

    def add(self, mw, dt_ms):
        if mw > 0 and dt_ms > 0:
            q, self.rem = divmod(self.rem + mw * dt_ms, MWH)
            self.mwh += q
        return self.mwh
