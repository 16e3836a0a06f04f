"""`make run`: a pile comes online and runs one whole charge session.

Starts a private mosquitto (or uses the broker of --mqtt-url without touching its
configuration), the platform simulator and the firmware on the MicroPython unix port with
the simulated board on an accelerated clock, then: fee model, plug in, start from the
platform, charge, stop from the platform, unplug.  The trace interleaves the pile's
console ("pile |"), what the platform receives ("cloud|") and the hardware as the bench
port shows it ("hw   |").  Exits 0 with a summary when the session's order arrived.
"""
import argparse
import collections
import os
import shutil
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from broker import Broker  # noqa: E402
from pile_proc import ROOT, PileProcess  # noqa: E402
from platform_sim import ExternalBroker, PlatformSim, describe  # noqa: E402

DEV = "HCS220922001000"


def say(text):
    print("demo | " + text, flush=True)


def follow(path, stop):
    """Print the pile's console as it grows."""
    pos = 0
    while not stop.is_set():
        try:
            with open(path, errors="replace") as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
        except OSError:
            chunk = ""
        for line in chunk.splitlines():
            print("pile | " + line, flush=True)
        time.sleep(0.05)


def hardware(pile):
    s = pile.state()
    print("hw   | CP %s (%+.1f V) duty %d%%  lock %s  relay %s  %.1f V  %.1f A" % (
        s["cp_level"], s["cp_hi"] / 1000, s["cp_duty"], "locked" if s["locked"] else "open",
        "closed" if s["relay_closed"] else "open", s["mains_v"], s["current_a"]), flush=True)
    return s


def external(url):
    u = urllib.parse.urlparse(url)
    admin = "%s:%s" % (u.username or "", u.password or "")
    return ExternalBroker("mqtt://%s:%d" % (u.hostname, u.port or 1883), admin)


def run(args):
    work = os.path.join(ROOT, "run")
    shutil.rmtree(work, ignore_errors=True)
    broker = external(args.mqtt_url) if args.mqtt_url else Broker(os.path.join(work, "broker"))
    if not args.mqtt_url:
        broker.start()
    say("broker at %s:%d%s" % (broker.host, broker.port, " (yours)" if args.mqtt_url else ""))
    sim = PlatformSim(broker)
    sim.on_record = lambda rec: print("cloud| " + describe(rec, 150), flush=True)
    sim.start()
    say("platform simulator: provisioning at %s" % sim.provision_url)
    # start the day at 11:55 local time (UTC+8) so the session crosses the 12:00 boundary
    today = int(time.time()) // 86400 * 86400
    pile = PileProcess(os.path.join(work, "pile"), sim.provision_url, cpu_id=DEV,
                       speed=args.speed, epoch_ms=(today + 3 * 3600 + 55 * 60) * 1000)
    stop = threading.Event()
    threading.Thread(target=follow, args=(pile.log_path, stop), daemon=True).start()
    t0 = time.time()
    try:
        pile.start()
        sim.wait_for(DEV, "verInfoEvt", timeout=30)
        online = time.time() - t0
        say("pile online after %.2f s; pushing the fee model" % online)
        sim.set_fee_model(DEV, "DEMO-1", ["0000", "0800", "1200", "1800"], [13, 11, 12, 10],
                          [10000, 50000, 20000, 10000], [20000, 20000, 20000, 10000])
        sim.wait_for(DEV, "feeModelUpdateSrv_reply")
        say("the driver plugs in")
        pile.bench({"cmd": "plug"})
        time.sleep(0.5)
        hardware(pile)
        say("the platform starts the charge (order DEMO-0001)")
        sim.start_charge(DEV, "DEMO-0001")
        sim.wait_for(DEV, "startChaResEvt", timeout=20)
        for _ in range(args.seconds):
            time.sleep(1)
            hardware(pile)
        say("the platform stops the charge")
        sim.stop_charge(DEV, "DEMO-0001")
        sim.wait_for(DEV, "stopChaResEvt", timeout=10)
        order = sim.wait_for(DEV, "orderUpdateEvt", timeout=10)["msg"]["body"]
        time.sleep(0.5)
        say("the driver unplugs")
        pile.bench({"cmd": "unplug"})
        time.sleep(0.5)
        state = hardware(pile)
    finally:
        pile.stop()
        time.sleep(0.2)
        stop.set()
        sim.stop()
        if not args.mqtt_url:
            broker.stop()
    summary(sim, order, state, online)
    return 0


def summary(sim, order, state, online):
    counts = collections.Counter(r["cmd"] for r in sim.messages(DEV))
    say("---- summary ----")
    say("online (provisioned, connected, announced) in %.2f s" % online)
    say("messages from the pile: " + ", ".join("%s %d" % kv for kv in sorted(counts.items())))
    say("order %s: %d Wh (%s), power %.4f yuan + service %.4f yuan, stop code %d" % (
        order["pre_trade_no"], order["total_elect"],
        " ".join("%s %d" % (b, order[b + "_elect"]) for b in ("sharp", "peak", "flat", "valley")),
        order["total_power_cost"] / 10000, order["total_serv_cost"] / 10000, order["reason"]))
    say("safety violations recorded by the board: %d" % len(state["violations"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mqtt-url", help="use this broker (mqtt://[user:pass@]host:port)")
    ap.add_argument("--speed", type=int, default=60, help="board ms per real ms (default 60)")
    ap.add_argument("--seconds", type=int, default=12, help="real seconds of charging")
    sys.exit(run(ap.parse_args()))


if __name__ == "__main__":
    main()
