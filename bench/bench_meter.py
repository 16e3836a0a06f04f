"""Time the meter kernel and the pricing of a session in the MicroPython unix port.

Run from anywhere with CPython:  python3 bench/bench_meter.py [--reps N] [--heap BYTES]
                                 [--json FILE]
Prints figures only (no pass/fail): microseconds per sample of the viper kernel and
of the plain-Python kernel_ref (both in one MicroPython run, on the same bursts), their
ratio, and Meter.measure per burst (pricing: bench_billing.py).  The limit: the
same sums (of dv*dv, di*di, dv*di over int16 samples less their offsets) in C, compiled
here with gcc -O2 and timed on the very bursts the MicroPython run wrote out (its sums
checked equal to the kernel's).
Figures are for the host CPU; an ESP32 is much slower, the ratios are what carry over.
The heap defaults to 110 KB, what an ESP32 without PSRAM leaves to Python: in a loop that allocates only multi-block
objects (here the result tuples) MicroPython's allocator rescans everything allocated
since its last one-block allocation, so a 2 MB unix heap makes small calls look several
times slower than they are on the board.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import mprun

C_KERNEL = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

__attribute__((noinline)) static void sums(const int16_t *v, const int16_t *i, int n,
                                           int voff, int ioff, int64_t *out) {
    int64_t svv = 0, sii = 0, svi = 0;
    for (int k = 0; k < n; k++) {
        int64_t x = v[k] - voff, y = i[k] - ioff;
        svv += x * x;
        sii += y * y;
        svi += x * y;
    }
    out[0] = svv; out[1] = sii; out[2] = svi;
}

int main(int argc, char **argv) {   /* burst file, samples, repetitions */
    int n = atoi(argv[2]);
    long reps = atol(argv[3]);
    int16_t *buf = malloc(4 * n);
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(buf, 2, 2 * n, f) != (size_t)(2 * n)) return 1;
    int64_t out[3], check = 0;
    struct timespec t0, t1;
    sums(buf, buf + n, n, 2048, 2048, out);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long r = 0; r < reps; r++) {
        sums(buf, buf + n, n, 2048 + (int)(r & 1), 2048, out);  /* not hoisted */
        check += out[2];
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    sums(buf, buf + n, n, 2048, 2048, out);
    double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
    printf("%lld %lld %lld %.6f %lld\n", (long long)out[0], (long long)out[1],
           (long long)out[2], ns / 1000.0 / ((double)reps * n), (long long)check);
    return 0;
}
"""


CODE = r"""
import time, math, micropython
from array import array
from pile import meter

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
OUT = {OUT}
for n in (128, 256, 1024):
    v, i = burst(n, n)
    sums = meter.kernel(v, i, 2048, 2048)
    assert sums == meter.kernel_ref(v, i, 2048, 2048)
    ref = per_sample(meter.kernel_ref, v, i, REPS // 10)
    nat = per_sample(kernel_native, v, i, REPS // 4)
    fast = per_sample(meter.kernel, v, i, REPS)
    print("burst %4d samples: kernel_ref %.4f us/sample, native %.4f, viper kernel %.4f;"
          " ref/viper %.1fx" % (n, ref, nat, fast, ref / fast))
    print("FIG %d %.6f %.6f %.6f %d %d %d" % ((n, ref, nat, fast) + sums))
    if OUT:
        with open("%s/burst%d.bin" % (OUT, n), "wb") as f:
            f.write(v)
            f.write(i)

m = meter.Meter({"v_offset": 2048, "i_offset": 2048, "v_uv": 200000, "i_ua": 25000})
v, i = burst(128, 1)
print("Meter.measure, 128-sample burst: %.1f us; result %s"
      % (per_call(lambda: m.measure(v, i), REPS), m.measure(v, i)))

"""


def c_limit(work, bursts):
    """{n: (us per sample, sums)} of the C kernel, or None without a C compiler."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        return None
    src, exe = os.path.join(work, "kernel.c"), os.path.join(work, "kernel")
    with open(src, "w") as f:
        f.write(C_KERNEL)
    subprocess.run([cc, "-O2", "-o", exe, src], check=True)
    out = {}
    for n in bursts:
        reps = max(1000, 50000000 // n)
        w = subprocess.run([exe, os.path.join(work, "burst%d.bin" % n), str(n), str(reps)],
                           check=True, capture_output=True, text=True).stdout.split()
        out[n] = (float(w[3]), tuple(int(x) for x in w[:3]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20000, help="iterations of the fast paths")
    ap.add_argument("--heap", type=int, default=110000,
                    help="micropython -X heapsize (0: the unix port's default)")
    ap.add_argument("--json", help="also write the figures (us per sample) to this file")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench_meter-")
    try:
        rc, out = mprun.output(CODE.replace("{OUT}", repr(work)), a.heap, a.reps)
        figs = {}
        for line in out.splitlines():
            m = re.match(r"FIG (\d+) (\S+) (\S+) (\S+) (-?\d+) (-?\d+) (-?\d+)$", line)
            if m:
                figs[int(m.group(1))] = {"plain": float(m.group(2)), "native": float(m.group(3)),
                                         "viper": float(m.group(4)),
                                         "sums": [int(m.group(k)) for k in (5, 6, 7)]}
            else:
                print(line)
        if rc:
            return rc
        limit = c_limit(work, sorted(figs))
        if limit is None:
            print("C limit: no C compiler here")
        else:
            print("the limit, C (gcc -O2) on the same bursts, and the ratios to it:")
            for n in sorted(figs):
                f = figs[n]
                us, sums = limit[n]
                f["c"] = us
                f["c_sums_equal"] = list(sums) == f["sums"]
                print("  burst %4d: C %.5f us/sample%s; viper %.1fx C, native %.1fx C, "
                      "plain %.0fx C" % (n, us, "" if f["c_sums_equal"] else " (SUMS DIFFER)",
                                         f["viper"] / us, f["native"] / us, f["plain"] / us))
        if a.json:
            with open(a.json, "w") as fj:
                json.dump({"bursts": {str(n): f for n, f in figs.items()}, "heap": a.heap}, fj,
                          indent=1)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
