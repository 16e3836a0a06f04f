"""Time the meter kernel and the pricing of a session in the MicroPython unix port.

Run from anywhere with CPython:  python3 bench/bench_meter.py [--reps N] [--heap BYTES]
Prints figures only (no pass/fail): microseconds per sample of the viper kernel and
of the plain-Python kernel_ref (both in one MicroPython run, on the same bursts), their
ratio, Meter.measure per burst, and fees.bill / fees.band_at per call.
Figures are for the host CPU; an ESP32 is much slower, the ratios are what carry over.
The heap defaults to the ESP32's 110 KB: in a loop that allocates only multi-block
objects (here the result tuples) MicroPython's allocator rescans everything allocated
since its last one-block allocation, so a 2 MB unix heap makes small calls look several
times slower than they are on the board.
"""
import argparse
import sys

import mprun


CODE = r"""
import time, math, micropython
from array import array
from pile import feemodel, meter, fees

def burst(n, seed):
    v, i = array('h', [0] * n), array('h', [0] * n)
    x = seed
    for k in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        t = 2 * math.pi * k / 128
        v[k] = 2048 + int(1626 * math.sin(t)) + (x >> 28)
        i[k] = 2048 + int(1810 * math.sin(t - 0.5)) + ((x >> 24) & 7)
    return v, i

@micropython.native
def kernel_native(v, i, voff, ioff):
    svv = sii = svi = 0
    for k in range(len(v)):
        x = v[k] - voff
        y = i[k] - ioff
        svv += x * x
        sii += y * y
        svi += x * y
    return svv, sii, svi

def per_sample(fn, v, i, reps):
    fn(v, i, 2048, 2048)
    t0 = time.ticks_us()
    for _ in range(reps):
        fn(v, i, 2048, 2048)
    return time.ticks_diff(time.ticks_us(), t0) / (reps * len(v))

def per_call(fn, reps):
    fn()
    t0 = time.ticks_us()
    for _ in range(reps):
        fn()
    return time.ticks_diff(time.ticks_us(), t0) / reps

REPS = {REPS}
for n in (128, 256, 1024):
    v, i = burst(n, n)
    assert meter.kernel(v, i, 2048, 2048) == meter.kernel_ref(v, i, 2048, 2048)
    ref = per_sample(meter.kernel_ref, v, i, REPS // 10)
    nat = per_sample(kernel_native, v, i, REPS // 4)
    fast = per_sample(meter.kernel, v, i, REPS)
    print("burst %4d samples: kernel_ref %.4f us/sample, native %.4f, viper kernel %.4f;"
          " ref/viper %.1fx" % (n, ref, nat, fast, ref / fast))

m = meter.Meter({"v_offset": 2048, "i_offset": 2048, "v_uv": 200000, "i_ua": 25000})
v, i = burst(128, 1)
print("Meter.measure, 128-sample burst: %.1f us; result %s"
      % (per_call(lambda: m.measure(v, i), REPS), m.measure(v, i)))

model, why = feemodel.parse({"ele_model_id": "m1", "time_num": 14,
    "time_seg": ["0000", "0200", "0400", "0600", "0800", "1000", "1200", "1400",
                 "1600", "1800", "2000", "2200", "2300", "2359"],
    "seg_flag": [13, 13, 12, 11, 10, 11, 12, 11, 10, 10, 11, 12, 13, 13],
    "charge_fee": [15000, 12000, 8000, 4000], "serviceFee": [8000, 8000, 8000, 8000]})
energy = [12345678, 23456789, 3456789, 45678901]     # a 85 kWh session, mWh per band
print("fees.bill, 4 bands: %.1f us per session; total_cost %d"
      % (per_call(lambda: fees.bill(energy, model), REPS), fees.bill(energy, model)["total_cost"]))
print("fees.band_at, 14 segments, minute 1438: %.1f us"
      % per_call(lambda: fees.band_at(model, 1438), REPS))
print("feemodel.parse, 14 segments: %.1f us" % per_call(lambda: feemodel.parse({"ele_model_id": "m1",
    "time_num": 14, "time_seg": ["0000", "0200", "0400", "0600", "0800", "1000", "1200",
    "1400", "1600", "1800", "2000", "2200", "2300", "2359"],
    "seg_flag": [13] * 14, "charge_fee": [1, 2, 3, 4], "serviceFee": [1, 2, 3, 4]}), REPS // 10))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20000, help="iterations of the fast paths")
    ap.add_argument("--heap", type=int, default=110000,
                    help="micropython -X heapsize (0: the unix port's default)")
    a = ap.parse_args()
    return mprun.run(CODE, a.heap, a.reps)


if __name__ == "__main__":
    sys.exit(main())
