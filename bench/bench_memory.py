"""Heap figures of the firmware loaded from .mpy, as the board loads it (DESIGN.md
"Memory"; the target: the full session with reconnects passes every run at
`-X heapsize=140000` on this 64-bit unix port, the largest free block after it above
8 KB).  Figures only, no pass/fail.

    python3 bench/bench_memory.py [--runs N] [--heaps 130000,140000,150000] [--quick]

One run: a private mosquitto, the platform simulator and the firmware image (x64 .mpy,
run from its folder as on the board) in `micropython -X heapsize=H`: provisioning, fee
model, a charge session, two broker restarts during it, the platform's stop and the order
acknowledged.  It passes when all of that happened, the process is alive and its console
holds no MemoryError nor "Task exception".  Printed: the pass rate per heap size (N runs
each, two at a time), and from one run in the largest heap: the heap in use once online,
charging, after each restart and after the order (bench {"cmd":"heap"}: after a
collection), the high-water of those, and the largest block one allocation can still get
after the session (fragmentation, not the total, is what fails first); then the heap each
resident module costs once imported (bench/bench_size.py).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))

from broker import Broker  # noqa: E402
from pile_proc import ROOT, PileProcess  # noqa: E402
from platform_sim import PlatformSim  # noqa: E402

DEV = "HCS220922001000"
MODEL = ("M1", ["0000", "0800", "1200"], [13, 11, 12], [10000, 50000, 20000, 10000],
         [20000, 20000, 20000, 10000])


def build(work):
    out = os.path.join(work, "mpy")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_mpy.py"), "--arch",
                    "x64", "--out", out], check=True, capture_output=True)
    return ".frozen:" + out


def session(work, path, heap, figures=None):
    """One full session in a heap of `heap` bytes; return (passed, why)."""
    broker = Broker(os.path.join(work, "broker"))
    broker.start()
    sim = PlatformSim(broker).start()
    pile = PileProcess(os.path.join(work, "pile"), sim.provision_url, cpu_id=DEV, speed=30,
                       heap=heap, mpypath=path, keepalive_s=5)
    rows = figures if figures is not None else []

    def sample(what):
        rows.append((what, pile.bench({"cmd": "heap"})))

    try:
        pile.start()
        sim.wait_for(DEV, "verInfoEvt", timeout=30)
        time.sleep(1)
        sample("online, idle")
        mark = sim.mark()
        sim.set_fee_model(DEV, *MODEL)
        sim.wait_for(DEV, "feeModelUpdateSrv_reply", since=mark, timeout=15)
        pile.bench({"cmd": "plug"})
        time.sleep(0.5)
        sim.start_charge(DEV, "MEMBENCH")
        res = sim.wait_for(DEV, "startChaResEvt", timeout=15)["msg"]["body"]
        if res["start_result"] != 10:
            return False, "start refused %s" % res
        time.sleep(3)
        sample("charging")
        for k in range(2):
            mark = sim.mark()
            broker.restart()
            sim.wait_for(DEV, "verInfoEvt", since=mark, timeout=30)
            time.sleep(1)
            sample("after broker restart %d" % (k + 1))
        sim.stop_charge(DEV, "MEMBENCH")
        sim.wait_for(DEV, "orderUpdateEvt", timeout=15)
        pile.wait_status(lambda s: s["orders_pending"] == 0, timeout=15)
        time.sleep(1)
        sample("after the order")
        out = pile.output()
        if not pile.alive():
            return False, "the process died"
        for bad in ("MemoryError", "Task exception", "memory allocation failed"):
            if bad in out:
                return False, bad
        return True, ""
    except Exception as e:
        return False, "%s: %s" % (type(e).__name__, str(e)[:100])
    finally:
        pile.stop()
        sim.stop()
        broker.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("RUNS", "20")))
    ap.add_argument("--heaps", default=os.environ.get("HEAPS", "130000,140000,150000"))
    ap.add_argument("--quick", action="store_true", help="3 runs a heap size")
    args = ap.parse_args()
    runs = 3 if args.quick else args.runs
    heaps = [int(h) for h in args.heaps.split(",")]
    work = tempfile.mkdtemp(prefix="bench-mem-")
    path = build(work)
    figures = []
    ok, why = session(os.path.join(work, "figures"), path, max(heaps) + 60000, figures)
    print("firmware from x64 .mpy, one run in a heap of %d bytes (%s)"
          % (max(heaps) + 60000, "passed" if ok else "FAILED: " + why))
    print("%-26s %10s %10s %10s" % ("moment", "in use", "free", "largest"))
    for what, h in figures:
        print("%-26s %10d %10d %10d" % (what, h["alloc"], h["free"], h["largest"]))
    if figures:
        print("high-water in use: %d bytes; largest free block after the session: %d"
              % (max(h["alloc"] for _, h in figures), figures[-1][1]["largest"]))
    print("\nfull session with reconnects, %d runs a heap size (two at a time):" % runs)
    for heap in heaps:
        results = []
        lock = threading.Lock()

        def one(k):
            got = session(os.path.join(work, "h%d-%d" % (heap, k)), path, heap)
            with lock:
                results.append(got)

        for k in range(0, runs, 2):
            ts = [threading.Thread(target=one, args=(j,)) for j in range(k, min(runs, k + 2))]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        passed = sum(1 for r in results if r[0])
        whys = sorted(set(r[1] for r in results if not r[0]))
        print("  heap %6d: %2d of %2d passed%s" % (heap, passed, runs,
                                                    ("  (%s)" % "; ".join(whys)) if whys else ""))
    print()
    sys.stdout.flush()
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench_size.py")])


if __name__ == "__main__":
    main()
