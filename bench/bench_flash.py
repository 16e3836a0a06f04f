"""Flash wear: what the firmware writes per charging hour and per idle day, and the years
of life that gives an ESP32's flash.  Figures only, no pass/fail.

    python3 bench/bench_flash.py [--quick]

Runs the firmware on the simulated board (accelerated clock) against a private mosquitto
and the platform simulator and reads its own count of documents saved and their bytes
(status "flash": pile.store counts every save): one hour of charging at 7.36 kW (ended by
the platform, its order acknowledged), then one idle day plugged out, each measured from
the difference of the counts.  --quick: 15 minutes of charging and 6 idle hours, scaled.

The model of the flash (MicroPython's littlefs on a 4 MB ESP32, stated so it can be
argued with): 4096-byte erase blocks; the filesystem partition of MicroPython's default
4 MB layout, 2 MB = 512 blocks; 100,000 erase cycles a block; littlefs's wear levelling
spreads erases over every block of the partition.  A saved document is larger than
littlefs inlines in its directory (pile.store writes ~100..800 bytes, the inline limit is
the cache size, 128..512 bytes), so each save takes a fresh data block: one erase, plus
a share of the directory's metadata-pair compactions (each save commits ~3 metadata
entries of ~64 bytes: a 4 KB block of them every ~20 saves).  Erases = saves x 1.05 (and
never fewer than bytes / 4096).  Years of life = 512 x 100,000 / erases a day, for a pile
that charges 8 hours a day and for one that charges around the clock.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))

from broker import Broker  # noqa: E402
from pile_proc import PileProcess  # noqa: E402
from platform_sim import PlatformSim  # noqa: E402

DEV = "HCS220922001000"
BLOCK, BLOCKS, CYCLES = 4096, 512, 100000


def erases(saves, nbytes):
    return max(saves * 1.05, nbytes / BLOCK)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    charge_h, idle_h = (0.25, 6) if args.quick else (1, 24)
    work = tempfile.mkdtemp(prefix="bench-flash-")
    broker = Broker(os.path.join(work, "broker"))
    broker.start()
    sim = PlatformSim(broker).start()
    speed = 120
    pile = PileProcess(os.path.join(work, "pile"), sim.provision_url, cpu_id=DEV,
                       speed=speed, keepalive_s=60, telemetry_slow_s=90, heartbeat_s=120)
    try:
        pile.start()
        sim.wait_for(DEV, "verInfoEvt", timeout=30)
        sim.set_fee_model(DEV, "M1", ["0000", "0800", "1200"], [13, 11, 12],
                          [10000, 50000, 20000, 10000], [20000, 20000, 20000, 10000])
        sim.wait_for(DEV, "feeModelUpdateSrv_reply")
        pile.bench({"cmd": "plug"})
        time.sleep(0.3)
        f0 = pile.status()["flash"]
        sim.start_charge(DEV, "FLASH1")
        sim.wait_for(DEV, "startChaResEvt", timeout=15)
        time.sleep(charge_h * 3600 / speed)
        sim.stop_charge(DEV, "FLASH1")
        order = sim.wait_for(DEV, "orderUpdateEvt", timeout=30)["msg"]["body"]
        pile.wait_status(lambda s: s["journal"] == 0, timeout=30)
        f1 = pile.status()["flash"]
        pile.bench({"cmd": "unplug"})
        pile.bench({"cmd": "speed", "x": 2000})
        time.sleep(idle_h * 3600 / 2000)
        f2 = pile.status()["flash"]
    finally:
        pile.stop()
        sim.stop()
        broker.stop()
    ch = [(f1[k] - f0[k]) / charge_h for k in (0, 1)]
    idle = [(f2[k] - f1[k]) * 24 / idle_h for k in (0, 1)]
    ech, eidle = erases(*ch), erases(*idle)
    print("flash written (pile.store saves), %.0f Wh charged in the hour measured"
          % (order["total_elect"] / charge_h))
    print("%-22s %10s %12s %14s" % ("", "saves", "bytes", "erase blocks"))
    print("%-22s %10.0f %12.0f %14.0f" % ("per charging hour", ch[0], ch[1], ech))
    print("%-22s %10.0f %12.0f %14.0f" % ("per idle day", idle[0], idle[1], eidle))
    life = BLOCKS * CYCLES
    for hours in (8, 24):
        day = ech * hours + eidle * (24 - hours) / 24
        print("charging %2d h a day: %6.0f erases a day, %5.0f years of life (4 MB, 2 MB "
              "littlefs, 100k cycles)" % (hours, day, life / day / 365))


if __name__ == "__main__":
    main()
