"""pile.meter: burst kernel, RMS and power, energy integration."""
import math
from array import array

from pile import meter
from pile.meter import Energy, Meter, isqrt, kernel, kernel_ref

CAL = {"v_offset": 2048, "i_offset": 2048, "v_uv": 200000, "i_ua": 25000}


def lcg(seed):
    """Deterministic pseudo-random 12-bit counts."""
    x = seed
    while True:
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        yield (x >> 8) & 0xFFF


def counts(gen, n):
    return array("h", [next(gen) for _ in range(n)])


def test_kernel_matches_ref_random():
    g = lcg(7)
    for n in (0, 1, 2, 63, 64, 65, 127, 128, 129, 256, 300, 1000):
        v, i = counts(g, n), counts(g, n)
        for voff, ioff in ((2048, 2048), (0, 0), (4095, 4095), (1990, 2101)):
            assert kernel(v, i, voff, ioff) == kernel_ref(v, i, voff, ioff), (n, voff)


def test_kernel_extremes():
    n = 1000
    top, bottom = array("h", [4095] * n), array("h", [0] * n)
    for v, i, voff, ioff in ((top, bottom, 0, 4095), (bottom, top, 4095, 0),
                             (top, top, 0, 0), (bottom, bottom, 4095, 4095)):
        want = kernel_ref(v, i, voff, ioff)
        assert kernel(v, i, voff, ioff) == want, want
    assert kernel(top, bottom, 0, 4095) == (n * 4095 ** 2, n * 4095 ** 2, -n * 4095 ** 2)


def test_kernel_signed_samples():
    # array('h') is signed; the viper kernel must sign-extend like kernel_ref
    v = array("h", [-1, -2048, 100, -4095 + 2048])
    i = array("h", [5, -7, -2000, 0])
    assert kernel(v, i, 0, 0) == kernel_ref(v, i, 0, 0)


def test_chunk_fits_32_bits():
    # viper ints are 32-bit words on the ESP32 (64-bit here, so wrapping cannot show in
    # this port): a chunk's partial sum plus the folded low part (< 2**24) must fit
    assert meter.CHUNK * 4095 ** 2 + 2 ** 24 < 2 ** 31


def test_kernel_long_burst_folds_exactly():
    n = 20000    # about 2**38 in each sum: many carries out of the 24-bit low parts
    top, bottom = array("h", [4095] * n), array("h", [0] * n)
    assert kernel(top, bottom, 0, 4095) == (n * 4095 ** 2, n * 4095 ** 2, -n * 4095 ** 2)
    g = lcg(3)
    v, i = counts(g, n), counts(g, n)
    assert kernel(v, i, 2048, 2048) == kernel_ref(v, i, 2048, 2048)


def test_kernel_length_mismatch():
    for k in (kernel, kernel_ref):
        try:
            k(array("h", [1, 2]), array("h", [1]), 0, 0)
        except ValueError:
            continue
        assert False, "length mismatch accepted"


def test_isqrt():
    for n in list(range(200)) + [10 ** 12, 10 ** 12 - 1, 2 ** 64, 2 ** 64 - 1, 3 ** 41]:
        r = isqrt(n)
        assert r * r <= n < (r + 1) * (r + 1), n
    assert isqrt(-5) == 0


def sine_burst(amp_v, amp_i, phase_deg, n=256, cycles=2):
    v, i = array("h", [0] * n), array("h", [0] * n)
    ph = phase_deg * math.pi / 180
    for k in range(n):
        t = 2 * math.pi * cycles * k / n
        v[k] = 2048 + int(round(amp_v * math.sin(t)))
        i[k] = 2048 + int(round(amp_i * math.sin(t - ph)))
    return v, i


def close(got, want, tol=0.003):
    return abs(got - want) <= abs(want) * tol


def test_sine_pf_1_and_half():
    m = Meter(CAL)
    av, ai = 1626, 1810    # 325.2 V and 45.25 A peak: 230 V, 32 A RMS
    vrms_mv = av * CAL["v_uv"] / 1000 / math.sqrt(2)
    irms_ma = ai * CAL["i_ua"] / 1000 / math.sqrt(2)
    for phase, pf in ((0, 1.0), (60, 0.5), (-60, 0.5), (90, 0.0), (180, -1.0)):
        mv, ma, mw = m.measure(*sine_burst(av, ai, phase))
        for x in (mv, ma, mw):
            assert type(x) is int
        assert close(mv, vrms_mv), (mv, vrms_mv)
        assert close(ma, irms_ma), (ma, irms_ma)
        want_mw = vrms_mv * irms_ma / 1000 * pf
        assert abs(mw - want_mw) <= vrms_mv * irms_ma / 1000 * 0.003, (phase, mw, want_mw)


def test_measure_dc_and_empty():
    m = Meter(CAL)
    flat = array("h", [2048] * 128)
    assert m.measure(flat, flat) == (0, 0, 0)
    assert m.measure(array("h"), array("h")) == (0, 0, 0)
    # a steady +100 counts on both: 20 V, 2.5 A, 50 W exactly
    up = array("h", [2148] * 100)
    assert m.measure(up, up) == (20000, 2500, 50000)
    # exporting: power is negative and truncated toward zero like the positive side
    v, i = array("h", [2149, 2048, 2048]), array("h", [2047, 2048, 2048])
    assert m.measure(v, i)[2] == -168       # -101 * 5e9 / 3e9 = -168.33
    assert m.measure(i, i)[2] == 1          # 1 * 5e9 / 3e9 = 1.67


def test_meter_rejects_bad_cal():
    for bad in ({"v_offset": -1}, {"i_offset": 4096}, {"v_uv": 0}, {"i_ua": -3}):
        cal = dict(CAL)
        cal.update(bad)
        try:
            Meter(cal)
        except ValueError:
            continue
        assert False, bad


def test_energy_exact_hour():
    e = Energy()
    for _ in range(3600):
        e.add(1000, 1000)       # 1 W for 1 s, an hour long
    assert e.mwh == 1000 and e.rem == 0


def test_energy_carries_remainder():
    e = Energy()
    assert e.add(1000, 1799) == 0
    assert e.add(1000, 1799) == 0
    assert e.rem == 3598000
    assert e.add(1, 2000) == 1 and e.rem == 0
    e = Energy()
    for _ in range(36000):
        e.add(7000000, 7)       # 7 kW in 7 ms steps: 252 s
    assert e.mwh == 7000000 * 7 * 36000 // 3600000 == 490000
    assert e.rem == 0


def test_energy_ignores_negative_and_restores():
    e = Energy(5, 123)
    e.add(-5000, 1000)
    e.add(5000, -1000)
    e.add(5000, 0)
    assert (e.mwh, e.rem) == (5, 123)
    e.add(1, 3600000 - 123)
    assert (e.mwh, e.rem) == (6, 0)
