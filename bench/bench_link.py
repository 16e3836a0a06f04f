"""The platform link: time to come online, and how long the event loop stalls while the
network fails, for this firmware's Link and for a naive umqtt.simple loop.

Run with CPython:  python3 bench/bench_link.py [--runs N] [--hold S] [--heap BYTES]
Prints figures only (no pass/fail):
  - time from process start to firmwareEvt at the platform (median, min, max of N runs):
    cold (provisioning over HTTP first) and warm (stored credentials);
  - the longest gap of a 10 ms asyncio heartbeat (bench/stall_link.py beside the Link,
    bench/stall_naive.py beside blocking umqtt.simple calls), both running at once, each
    through its own netem proxy switched in step: established link while the broker is
    down (connection closed, then refused), established link blackholed, and a reconnect
    into a blackhole (TCP accepted, nothing answers).  Target for the Link: under 50 ms.
Figures are for the host CPU and localhost; on an ESP32 a refused or unreachable host can
also block a naive connect() for the TCP timeout, which localhost does not show.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

from broker import Broker  # noqa: E402
from netem import Proxy  # noqa: E402
from pile_proc import MICROPYTHON, MPYPATH, PileProcess  # noqa: E402
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


class Runner:
    """One MicroPython stall script.  Each "G gap connected" line is kept with the phase in
    force when its gap began (a stall is reported only once it is over) and the phase in
    which the line arrived (a blocked loop reports nothing)."""

    def __init__(self, script, port, user, password, phases, heap=None):
        self.phases = phases
        self.gaps = []                      # (phase began, phase arrived, gap_ms, connected)
        env = dict(os.environ, MICROPYPATH=MPYPATH)
        self.proc = subprocess.Popen(
            [MICROPYTHON] + (["-X", "heapsize=%d" % heap] if heap else []) +
            [os.path.join(ROOT, "bench", script), "127.0.0.1", str(port), user, password], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
            text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            words = line.split()
            if len(words) == 3 and words[0] == "G":
                gap, now = int(words[1]), time.time()
                self.gaps.append((self.phases.at(now - gap / 1000), self.phases.at(now), gap,
                                  words[2] == "1"))

    def worst(self, phase=None):
        return max((g for p, _, g, _ in self.gaps if p == phase or phase is None and p >= 0),
                   default=None)

    def online_at_end(self, phase):
        """yes/no from the last line that arrived in the phase; 'blocked' if none did."""
        states = [c for _, p, _, c in self.gaps if p == phase]
        return "blocked" if not states else ("yes" if states[-1] else "no")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)


class Phases:
    """Which step of SCENARIO was in force at a given time (-1: before the first)."""

    def __init__(self):
        self.starts = []

    def enter(self):
        self.starts.append(time.time())

    def at(self, t):
        return sum(1 for start in self.starts if start <= t) - 1


SCENARIO = [  # (what, proxy mode, seconds)
    ("online", "pass", 2.0),
    ("broker down (closed, refused)", "down", 3.0),
    ("network back", "pass", 3.0),
    ("online link blackholed", "blackhole", 7.0),
    ("network back", "pass", 3.0),
    ("broker down", "down", 1.0),
    ("reconnect into a blackhole", "blackhole", 5.0),
    ("network back", "pass", 4.0),
]


def stalls(broker, hold, heap=None):
    users = {"bench-link": "pw-link-1", "bench-naive": "pw-naive-1"}
    for user, pw in users.items():
        broker.set_user(user, pw)
    broker.reload()
    phases = Phases()
    proxies, runners = [], []
    try:
        for script, user in (("stall_link.py", "bench-link"), ("stall_naive.py", "bench-naive")):
            proxy = Proxy("127.0.0.1", broker.port)
            proxies.append(proxy)
            runners.append(Runner(script, proxy.port, user, users[user], phases, heap))
        time.sleep(1.5)
        for name, mode, seconds in SCENARIO:
            phases.enter()
            for proxy in proxies:
                proxy.set_mode(mode)
            time.sleep(seconds * hold)
        time.sleep(0.3)
    finally:
        for r in runners:
            r.stop()
        for p in proxies:
            p.close()
    return runners


def ms(x):
    return "-" if x is None else "%d ms" % x


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="boots to time (default 5)")
    ap.add_argument("--hold", type=float, default=1.0,
                    help="scale every failure phase's duration (default 1)")
    ap.add_argument("--heap", type=int, default=None,
                    help="MicroPython heap for the stall scripts, e.g. 110000 (ESP32)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_link-") as tmp:
        broker = Broker(os.path.join(tmp, "broker")).start()
        platform = PlatformSim(broker).start()
        try:
            cold, warm = boot_times(platform, tmp, args.runs)
            ours, naive = stalls(broker, args.hold, args.heap)
        finally:
            platform.stop()
            broker.stop()

    print("Time from process start to firmwareEvt at the platform (%d runs)" % args.runs)
    for name, xs in (("cold boot (provisions first)", cold), ("warm boot (stored creds)", warm)):
        print("  %-30s median %4.0f ms   min %4.0f   max %4.0f"
              % (name, statistics.median(xs) * 1000, min(xs) * 1000, max(xs) * 1000))
    print()
    print("Longest gap of a 10 ms heartbeat task (target for the Link: < 50 ms);")
    print("'online' is each client's own view at the end of the step")
    row = "  %-30s %-9s %5s  %10s %8s  %12s %8s"
    print(row % ("step", "netem", "secs", "pile Link", "online", "naive umqtt", "online"))
    for i, (name, mode, seconds) in enumerate(SCENARIO):
        print(row % (name, mode, "%.1f" % (seconds * args.hold), ms(ours.worst(i)),
                     ours.online_at_end(i), ms(naive.worst(i)), naive.online_at_end(i)))
    print(row % ("worst of all steps", "", "", ms(ours.worst()), "", ms(naive.worst()), ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
