"""Boot to online: time from the firmware process's start to the platform's receipt of
its firmwareEvt, cold (provisioning over HTTP first) and warm (stored credentials).

Run with CPython:  python3 bench/bench_boot.py [--runs N] [--json FILE]
A private mosquitto and the platform simulator; each run a fresh pile directory: a cold
boot, stopped once online, then a warm boot from what it stored.  The start is the wall
clock just before Popen; the receipt is stamped by the platform simulator (its MQTT
thread, the same host clock).  The firmware runs from source on the unix port (a board
loads .mpy: less compiling, a slower CPU).  Prints figures only.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tools"))

from broker import Broker  # noqa: E402
from pile_proc import PileProcess  # noqa: E402
from platform_sim import PlatformSim  # noqa: E402

DEV = "HCS220922001000"


def boot_times(platform, workdir, runs):
    """Seconds from Popen to the platform's receipt of firmwareEvt: cold and warm boots."""
    cold, warm = [], []
    for i in range(runs):
        pile = PileProcess(os.path.join(workdir, "boot%d" % i), platform.provision_url,
                           keepalive_s=10)
        try:
            for out in (cold, warm):
                mark = platform.mark()
                t0 = time.time()
                pile.start(wait=False)
                rec = platform.wait_for(DEV, "firmwareEvt", since=mark, timeout=20)
                out.append(rec["t"] - t0)
                pile.stop()
        finally:
            pile.stop()
    return cold, warm


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="boots of each kind (default 5)")
    ap.add_argument("--json", help="also write the figures (ms) to this file")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_boot-") as tmp:
        broker = Broker(os.path.join(tmp, "broker")).start()
        platform = PlatformSim(broker).start()
        try:
            cold, warm = boot_times(platform, tmp, args.runs)
        finally:
            platform.stop()
            broker.stop()
    fig = {}
    print("Time from process start to firmwareEvt at the platform (%d runs)" % args.runs)
    for key, name, xs in (("cold", "cold boot (provisions first)", cold),
                          ("warm", "warm boot (stored creds)", warm)):
        ms = [x * 1000 for x in xs]
        fig[key] = {"median": statistics.median(ms), "min": min(ms), "max": max(ms),
                    "n": len(ms)}
        print("  %-30s median %4.0f ms   min %4.0f   max %4.0f"
              % (name, fig[key]["median"], fig[key]["min"], fig[key]["max"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(fig, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
