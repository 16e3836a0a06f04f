"""The platform link under network faults: how long the event loop stalls, and how soon
the link is back, for this firmware's Link and three other MicroPython MQTT clients, all
in the same run against the same broker.

Run with CPython:  python3 bench/bench_link.py [--part stall|recovery|all] [--quick]
                   [--json FILE]
Clients (each a MicroPython process in the unix port beside a 10 ms heartbeat task,
publishing QoS 1 every 500 ms, through its own failing network, bench/faultnet.py,
switched in step with the others; bench/stall_kit.py):
  link      the firmware's Link (bench/stall_link.py)
  naive     a naive umqtt.simple loop (bench/stall_naive.py)
  aiomqttc, chumicro   non-blocking MQTT clients for MicroPython from the package index,
            pinned in tools/fetch_peers.py (bench/stall_aiomqttc.py, stall_chumicro.py)
  none      the heartbeat alone (bench/stall_none.py): what the machine itself adds
Stall: every client with a 3 s keepalive so each failure path runs in seconds; the
longest heartbeat gap in each step: the broker down (connections closed, then refused),
blackholed while online, slow to answer (SLOW_MS on every byte it sends), down then
slow while reconnecting, down then a reconnect into a blackhole, and the network down
on the board (the Link only: the others have no board to ask).
Recovery: every client with its own defaults; after a 10 s and a 2 min outage (broker
down), the time from the broker's return to the client's own view of being online again;
then how long each takes to notice that the broker is blackholed.
--quick scales the outages down (4 s and 20 s) and the waits (recovery 30 s, notice 20 s).
Figures are for the host CPU and localhost; on an ESP32 a refused or unreachable host can
also block a naive connect() for the TCP timeout, which localhost does not show.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))

from broker import Broker  # noqa: E402
from faultnet import SLOW_MS, Path  # noqa: E402
from fetch_peers import PEERS  # noqa: E402
from pile_proc import MICROPYTHON, MPYPATH  # noqa: E402

PEERS_DIR = os.path.join(HERE, "peers")
PEER_PATH = ".frozen:" + PEERS_DIR
VERSION = {name: version for name, version, _, _ in PEERS}
CLIENTS = (  # key, what, script, MICROPYPATH
    ("link", "this firmware's Link", "stall_link.py", MPYPATH),
    ("naive", "naive umqtt.simple loop", "stall_naive.py", MPYPATH),
    ("aiomqttc", "aiomqttc " + VERSION["aiomqttc"], "stall_aiomqttc.py", PEER_PATH),
    ("chumicro", "chumicro-mqtt " + VERSION["chumicro-mqtt"], "stall_chumicro.py", PEER_PATH),
    ("none", "the heartbeat alone, no client (the machine's floor)", "stall_none.py", MPYPATH),
)
STALL = (  # (what, network mode, seconds, the board's network up, group)
    ("online", "pass", 2.0, True, "up"),
    ("broker down (closed, then refused)", "down", 3.0, True, "down"),
    ("broker back", "pass", 3.0, True, "up"),
    ("online, broker blackholed", "blackhole", 7.0, True, "blackhole"),
    ("broker back", "pass", 3.0, True, "up"),
    ("online, broker slow to answer", "slow", 6.0, True, "slow"),
    ("broker down", "down", 1.0, True, "down"),
    ("reconnect to a slow broker", "slow", 6.0, True, "slow_connect"),
    ("broker back", "pass", 3.0, True, "up"),
    ("broker down", "down", 1.0, True, "down"),
    ("reconnect into a blackhole", "blackhole", 5.0, True, "blackhole_connect"),
    ("broker back", "pass", 4.0, True, "up"),
    ("network down on the board", "pass", 4.0, False, "board"),
    ("network back", "pass", 3.0, True, "up"),
)
GROUPS = (  # the steps of STALL by what fails, in the order of the summary table
    ("down", "broker down (connections closed, then refused)"),
    ("blackhole", "broker blackholed while online"),
    ("slow", "broker slow to answer while online"),
    ("slow_connect", "reconnecting to a slow broker"),
    ("blackhole_connect", "reconnecting into a blackhole"),
    ("board", "network down on the board (the Link only)"),
    ("up", "online, and reconnecting when the broker is back"),
)


def peers_ready():
    return os.path.exists(os.path.join(PEERS_DIR, "PINNED"))


class Phases:
    """Which step was in force at a given time (-1: before the first)."""

    def __init__(self):
        self.starts = []

    def enter(self):
        self.starts.append(time.time())

    def at(self, t):
        return sum(1 for start in self.starts if start <= t) - 1


class Client:
    """One stall script through its own failing network.  Lines are stamped on arrival:
    a "G" line with the step in force when its gap began and the step it arrived in (a
    blocked loop reports nothing until it runs again), a "C" line as a state change."""

    def __init__(self, key, script, path, broker_port, user, password, profile, phases):
        self.key, self.phases = key, phases
        self.net = Path(broker_port)
        self.gaps = []              # (step began, step arrived, gap ms, online)
        self.changes = []           # (time, online)
        self.lines = []             # the last lines of anything else it printed
        self.control = None
        self.last_seen = 0.0        # when the last line of any kind arrived
        args = [MICROPYTHON, os.path.join(HERE, script), "127.0.0.1", str(self.net.port),
                user, password, profile]
        if key == "link":
            self.control = free_udp_port()
            args.append(str(self.control))
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, MICROPYPATH=path), cwd=ROOT,
                                     text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            now, words = time.time(), line.split()
            self.last_seen = now
            if len(words) == 3 and words[0] == "G":
                gap = int(words[1])
                self.gaps.append((self.phases.at(now - gap / 1000), self.phases.at(now), gap,
                                  words[2] == "1"))
            elif len(words) == 2 and words[0] == "C":
                self.changes.append((now, words[1] == "1"))
            else:
                self.lines = (self.lines + [line.rstrip()])[-20:]

    def board_net(self, up):
        if self.control:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"net 1" if up else b"net 0", ("127.0.0.1", self.control))

    def online(self):
        return bool(self.changes) and self.changes[-1][1]

    def worst(self, step=None):
        return max((g for p, _, g, _ in self.gaps if p == step or step is None and p >= 0),
                   default=None)

    def online_at_end(self, step):
        """yes/no from the last line that arrived in the step; 'blocked' if none did."""
        states = [c for _, p, _, c in self.gaps if p == step]
        return "blocked" if not states else ("yes" if states[-1] else "no")

    def first_change(self, since, up):
        for t, c in self.changes:
            if t >= since and c == up:
                return t
        return None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.net.close()


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_clients(broker, profile, phases, keys):
    clients = []
    for key in keys:
        broker.set_user("bench-%s-%s" % (key, profile), "pw-%s" % key)
    broker.reload()
    for key, _, script, path in CLIENTS:
        if key in keys:
            clients.append(Client(key, script, path, broker.port, "bench-%s-%s" % (key, profile),
                              "pw-%s" % key, profile, phases))
    return clients


def wait_all(clients, pred, cap):
    deadline = time.time() + cap
    while time.time() < deadline and not all(pred(c) for c in clients):
        time.sleep(0.05)


def stalls(broker, hold=1.0):
    phases = Phases()
    clients = start_clients(broker, "short", phases, [k for k, _, _, _ in CLIENTS])
    try:
        wait_all(clients, Client.online, 10)
        for what, mode, seconds, board_up, _ in STALL:
            phases.enter()
            for c in clients:
                c.net.set(mode)
                c.board_net(board_up)
            time.sleep(seconds * hold)
        time.sleep(0.3)
    finally:
        for c in clients:
            c.stop()
    out = {}
    for c in clients:
        steps = []
        for i, (what, mode, seconds, board_up, _) in enumerate(STALL):
            if not board_up and c.key not in ("link", "none"):
                steps.append(None)      # the others have no board to ask
                continue
            steps.append({"worst_ms": c.worst(i), "online_at_end": c.online_at_end(i)})
        worst = max((s["worst_ms"] for s in steps if s and s["worst_ms"] is not None),
                    default=None)
        out[c.key] = {"steps": steps, "worst_ms": worst, "tail": c.lines[-5:]}
    return out


def recovery(broker, outages, back_cap, notice_cap):
    phases = Phases()
    clients = start_clients(broker, "default", phases,
                            [k for k, _, _, _ in CLIENTS if k != "none"])
    out = {c.key: {"back_s": {}, "notice_s": None, "back_after_blackhole_s": None}
           for c in clients}
    try:
        wait_all(clients, Client.online, 30)
        for c in clients:
            out[c.key]["online_at_start"] = c.online()
        for outage in outages:
            t_down = time.time()
            for c in clients:
                c.net.set("down")
            time.sleep(outage)
            t0 = time.time()
            for c in clients:
                c.net.set("pass")
            wait_all(clients, lambda c: c.first_change(t0, True) or
                     not c.first_change(t_down, False), back_cap)
            for c in clients:
                t = c.first_change(t0, True)
                went = c.first_change(t_down, False)
                out[c.key]["back_s"][str(outage)] = \
                    "stayed online" if went is None else None if t is None else t - t0
            time.sleep(1)
        t0 = time.time()
        for c in clients:
            c.net.set("blackhole")
        wait_all(clients, lambda c: c.first_change(t0, False), notice_cap)
        t_end = time.time()
        for c in clients:
            t = c.first_change(t0, False)
            out[c.key]["notice_s"] = None if t is None else t - t0
            # not noticed, and nothing printed for the last second: its loop is blocked
            out[c.key]["blocked"] = t is None and c.last_seen < t_end - 1.0
        t1 = time.time()
        for c in clients:
            c.net.set("pass")
        wait_all(clients, lambda c: c.online() and c.last_seen > t1, back_cap)
        for c in clients:
            t = c.first_change(t1, True)
            out[c.key]["back_after_blackhole_s"] = \
                "stayed online" if c.first_change(t0, False) is None and c.online() \
                else None if t is None else t - t1
    finally:
        for c in clients:
            c.stop()
    for c in clients:
        out[c.key]["tail"] = c.lines[-5:]
    return out


def ms(x):
    return "-" if x is None else "%d ms" % x


def secs(x, cap):
    if isinstance(x, str):
        return x
    return "not within %.0f s" % cap if x is None else "%.1f s" % x


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("stall", "recovery", "all"), default="all")
    ap.add_argument("--quick", action="store_true",
                    help="outages 4 s and 20 s instead of 10 s and 2 min, shorter waits")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    if not peers_ready():
        sys.exit("bench_link: the peer clients are missing: python3 tools/fetch_peers.py")
    outages = (4, 20) if args.quick else (10, 120)
    back_cap, notice_cap = (30, 20) if args.quick else (75, 100)
    figures = {"clients": [[k, what] for k, what, _, _ in CLIENTS], "slow_ms": SLOW_MS,
               "quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="bench_link-") as tmp:
        broker = Broker(os.path.join(tmp, "broker")).start()
        try:
            if args.part in ("stall", "all"):
                figures["stall"] = stalls(broker)
                figures["stall_steps"] = [[w, m, s, g] for w, m, s, _, g in STALL]
                figures["stall_groups"] = [list(g) for g in GROUPS]
            if args.part in ("recovery", "all"):
                figures["recovery"] = recovery(broker, outages, back_cap, notice_cap)
                figures["outages"] = list(outages)
                figures["caps"] = [back_cap, notice_cap]
        finally:
            broker.stop()
    report(figures)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 0


def report(fig):
    keys = [k for k, _ in fig["clients"]]
    rkeys = [k for k in keys if k in fig.get("recovery", {})]
    names = dict(fig["clients"])
    print("clients: " + "; ".join("%s = %s" % (k, names[k]) for k in keys))
    if "stall" in fig:
        st = fig["stall"]
        print("\nLongest gap of a 10 ms heartbeat task, keepalive 3 s (slow: %d ms on every "
              "byte from the broker);\n'on' is the client's own view at the end of the step"
              % fig["slow_ms"])
        row = "  %-36s %-9s %4s" + "  %8s %-7s" * len(keys)
        print(row % tuple(["step", "network", "secs"] + sum([[k, "on"] for k in keys], [])))
        for i, (what, mode, seconds, _) in enumerate(fig["stall_steps"]):
            cells = []
            for k in keys:
                s = st[k]["steps"][i]
                cells += ["n/a", ""] if s is None else [ms(s["worst_ms"]), s["online_at_end"]]
            print(row % tuple([what, mode, "%.0f" % seconds] + cells))
        print(row % tuple(["worst of all steps", "", ""] +
                          sum([[ms(st[k]["worst_ms"]), ""] for k in keys], [])))
    if "recovery" in fig:
        rec, (back_cap, notice_cap) = fig["recovery"], fig["caps"]
        print("\nRecovery, every client with its default settings:")
        row = "  %-36s" + " %18s" * len(rkeys)
        print(row % tuple(["", ] + rkeys))
        for outage in fig["outages"]:
            print(row % tuple(["broker back after %d s down -> online" % outage] +
                              [secs(rec[k]["back_s"].get(str(outage)), back_cap)
                               for k in rkeys]))
        print(row % tuple(["broker blackholed -> noticed"] +
                          [("loop blocked" if rec[k].get("blocked") else
                            secs(rec[k]["notice_s"], notice_cap)) for k in rkeys]))
        print(row % tuple(["blackhole over -> online"] +
                          [secs(rec[k]["back_after_blackhole_s"], back_cap) for k in rkeys]))


if __name__ == "__main__":
    sys.exit(main())
