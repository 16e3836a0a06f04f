"""Billing: how many sessions the firmware prices per second in the MicroPython unix port,
and whether every one of them agrees with the independent reference.

Run with CPython:  python3 bench/bench_billing.py [--sessions N] [--json FILE]
The sessions, the firmware-side runner and the reference are tests/host/test_pricing.py's
(imported, not copied): N generated sessions (fee models of 1..14 segments, time zones,
band boundaries, local midnight, empty sessions), priced by one MicroPython process the
way a real message goes (protocol.decode of the feeModelUpdateSrv text, tariff.vet,
Session.add for every energy increment, Session.record, protocol.order and
protocol.status), and every order compared field by field with the reference's plain
CPython integer arithmetic.  Sessions per second: the runner's wall time less that of
the same runner over no session (start-up, imports), over N; it includes reading each
session's JSON line and writing its order's.  Prints figures only.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "host"))

import test_pricing as tp  # noqa: E402

SEED = 20240611


def price(src, dst):
    """Seconds the firmware runner takes over the sessions in src (orders to dst)."""
    t0 = time.perf_counter()
    res = subprocess.run([tp.MICROPYTHON, "-c", tp.RUNNER, src, dst], cwd=ROOT,
                         env=dict(os.environ, MICROPYPATH=tp.MPYPATH), capture_output=True,
                         text=True, timeout=900)
    dt = time.perf_counter() - t0
    if res.returncode:
        sys.exit("bench_billing: the firmware runner failed:\n" + res.stdout + res.stderr)
    return dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10000)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    rnd = random.Random(SEED)
    sessions = [tp.session(rnd, k) for k in range(args.sessions)]
    with tempfile.TemporaryDirectory(prefix="bench_billing-") as tmp:
        src, dst, none = (os.path.join(tmp, n) for n in ("in.jsonl", "out.jsonl", "none.jsonl"))
        with open(src, "w") as f:
            f.writelines(json.dumps(x) + "\n" for x in sessions)
        open(none, "w").close()
        base = min(price(none, dst) for _ in range(3))
        dt = price(src, dst)
        with open(dst) as f:
            got = [json.loads(line) for line in f]
    t0 = time.perf_counter()
    wants = [tp.ref_order(x) for x in sessions]
    ref_dt = time.perf_counter() - t0
    differ = [x["trade"] for x, fw, want in zip(sessions, got, wants) if fw != want]
    missing = len(sessions) - len(got)
    incs = sum(len(x["incs"]) for x in sessions)
    per_s = len(sessions) / max(dt - base, 1e-9)
    print("bench_billing: %d generated sessions (seed %d), %d energy increments"
          % (len(sessions), SEED, incs))
    print("  firmware (MicroPython unix port): %.2f s, of which %.2f s start-up -> %.0f "
          "sessions/s (%.1f us per increment on average)"
          % (dt, base, per_s, (dt - base) / max(incs, 1) * 1e6))
    print("  the reference (CPython, datetime): %.2f s -> %.0f sessions/s"
          % (ref_dt, len(sessions) / ref_dt))
    print("  disagreements with the reference: %d%s" % (
        len(differ) + missing, (" (first: %s)" % ", ".join(differ[:5])) if differ else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sessions": len(sessions), "increments": incs, "seconds": dt,
                       "startup_s": base, "per_s": per_s, "disagreements": len(differ) + missing,
                       "ref_per_s": len(sessions) / ref_dt}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
