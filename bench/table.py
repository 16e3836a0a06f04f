"""`make bench`: every benchmark under bench/, and one table of their figures against the
targets, the peer clients and the limits.

Run with CPython:  python3 bench/table.py [--quick] [--write BENCHMARKS.md] [--only a,b]
                                         [--table-only]
Each bench_*.py runs as its own process (each stays runnable alone); its output goes to
build/bench/<name>.log and, when it takes --json, its figures to build/bench/<name>.json.
The timing-sensitive ones run one at a time; then the two long ones that measure seconds
or pass rates, not milliseconds (the link's recovery and the memory runs), run side by
side.  A bench_*.py this file does not know is run too (with no arguments) and the last
lines it printed go under the table.
--quick (or BENCH_QUICK=1): fewer runs, outages of 4 s and 20 s instead of 10 s and 2 min,
shorter waits; its figures are for checking the harness, not for BENCHMARKS.md.
--write FILE replaces the part of FILE between the table markers with this run's machine,
table and notes (the rest of the file is kept as written); never after a quick or partial
run.  --table-only runs nothing: the table again from the figures, logs and record
(build/bench/run.json: runs, durations, machine) of the last run.
"""
import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "build", "bench")
BEGIN = "<!-- bench table: written by `make bench` from a full run; edit above or below -->"
END = "<!-- end of bench table -->"
SIZE_TARGET = 60 * 1024

# (run name, script, arguments of a full run, of a quick run, runs side by side with the
#  other "long" ones)
RUNS = (
    ("size", "bench_size.py", [], [], False),
    ("meter", "bench_meter.py", [], ["--reps", "5000"], False),
    ("billing", "bench_billing.py", [], ["--sessions", "1000"], False),
    ("boot", "bench_boot.py", ["--runs", "5"], ["--runs", "2"], False),
    ("stall", "bench_link.py", ["--part", "stall"], ["--part", "stall"], False),
    ("stop", "bench_stop.py", ["--runs", "200"], ["--runs", "20"], False),
    ("trip", "bench_trip.py", ["--n", "30"], ["--n", "5"], False),
    ("tls", "bench_tls.py", [], [], False),
    ("recovery", "bench_link.py", ["--part", "recovery"], ["--part", "recovery", "--quick"],
     True),
    ("memory", "bench_memory.py", ["--runs", "20"], ["--quick"], True),
    ("flash", "bench_flash.py", [], ["--quick"], True),
)


def takes_json(script):
    with open(os.path.join(HERE, script)) as f:
        return '"--json"' in f.read()


def plan(quick, only=None):
    """[(name, script, args)] of every run: RUNS first, then any other bench_*.py."""
    known = {r[1] for r in RUNS}
    runs = [(n, s, q if quick else a, long) for n, s, a, q, long in RUNS
            if os.path.exists(os.path.join(HERE, s))]
    for script in sorted(os.listdir(HERE)):
        if script.startswith("bench_") and script.endswith(".py") and script not in known:
            runs.append((script[6:-3], script, [], False))
    return [r for r in runs if not only or r[0] in only]


def start(name, script, args):
    os.makedirs(OUT, exist_ok=True)
    log = open(os.path.join(OUT, name + ".log"), "w")
    js = os.path.join(OUT, name + ".json")
    if os.path.exists(js):
        os.remove(js)
    cmd = [sys.executable, os.path.join(HERE, script)] + args
    if takes_json(script):
        cmd += ["--json", js]
    log.write("$ %s\n" % " ".join(cmd))
    log.flush()
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log, time.time()


def finish(name, proc, log, t0, timeout):
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = "timed out after %d s" % timeout
    log.close()
    dt = time.time() - t0
    print("  %-10s %5.0f s  %s" % (name, dt, "ok" if rc == 0 else "FAILED (%s)" % rc),
          flush=True)
    return {"rc": rc, "seconds": dt}


def run_all(runs, timeout=1500):
    done = {}
    for name, script, args, long in runs:
        if not long:
            done[name] = finish(name, *start(name, script, args), timeout)
    par = [(name, start(name, script, args)) for name, script, args, long in runs if long]
    for name, started in par:
        done[name] = finish(name, *started, timeout)
    return done


def load(name):
    """(figures from build/bench/<name>.json or None, the text of its log)."""
    fig, text = None, ""
    try:
        with open(os.path.join(OUT, name + ".json")) as f:
            fig = json.load(f)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(OUT, name + ".log")) as f:
            text = f.read()
    except OSError:
        pass
    return fig, text


def unusable_peers():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from fetch_peers import UNUSABLE
    return UNUSABLE


def firmware_config():
    """pile/config.py DEFAULTS (plain Python: it imports json only)."""
    spec = importlib.util.spec_from_file_location(
        "pile_config", os.path.join(ROOT, "firmware", "pile", "config.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.DEFAULTS


# --- formatting ----------------------------------------------------------------------------

def ms(x):
    if x is None:
        return "-"
    return "%.2f ms" % x if x < 10 else "%.0f ms" % x


def secs(x, cap=None):
    if isinstance(x, str):
        return x
    if x is None:
        return "not within %.0f s" % cap if cap else "-"
    return "%.1f s" % x


def verdict(ok):
    return "met" if ok else "**not met**"


class Table:
    def __init__(self):
        self.rows = []
        self.notes = []

    def add(self, key, what, ours, others, target, result, note=""):
        self.rows.append((key, what, ours, others, target, result))
        if note:
            self.notes.append("%s: %s" % (key, note))

    def missing(self, key, what, why, target="-"):
        self.add(key, what, "not measured", "-", target, "not measured", why)

    def markdown(self):
        head = ("#", "measure", "this firmware", "peers / limit", "target", "verdict")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            lines.append("| " + " | ".join(c.replace("|", "/") for c in r) + " |")
        return "\n".join(lines)


# --- the rows ------------------------------------------------------------------------------

def failed(name, runs):
    r = runs.get(name)
    why = "its bench did not run" if r is None else "its bench failed (%s)" % r["rc"]
    return "%s: see build/bench/%s.log" % (why, name)


# what a client should believe at the end of a step of each group of bench_link.STALL
EXPECT = {"down": "no", "blackhole": "no", "blackhole_connect": "no", "board": "no",
          "up": "yes", "slow": "yes", "slow_connect": "yes"}


def row_stall(t, fig, runs):
    if not fig or "stall" not in fig:
        return t.missing("1", "event-loop stall under network faults", failed("stall", runs),
                         "<= 20 ms")
    st, names = fig["stall"], dict(fig["clients"])
    peers = [k for k in names if k not in ("link", "none")]
    groups = fig["stall_groups"]
    steps = fig["stall_steps"]

    def worst(key, group):
        xs = [st[key]["steps"][i] for i, s in enumerate(steps) if s[3] == group]
        xs = [x["worst_ms"] for x in xs if x and x["worst_ms"] is not None]
        return max(xs) if xs else None

    for n, (group, label) in enumerate(groups):
        ours = worst("link", group)
        floor = worst("none", group)
        others = " · ".join("%s %s" % (k, ms(worst(k, group)) if worst(k, group) is not None
                                       else "n/a") for k in peers)
        key = "1%s" % "abcdefgh"[n]
        note = ""
        if ours is not None and ours > 20:
            note = ("the Link's longest gap, %s, in a step where the heartbeat alone showed %s "
                    "on this machine in the same run" % (ms(ours), ms(floor)))
        t.add(key, "stall: " + label, ms(ours), others + "; heartbeat alone %s" % ms(floor),
              "<= 20 ms", verdict(ours is not None and ours <= 20), note)
    ours = st["link"]["worst_ms"]
    t.add("1", "**stall: worst of all steps** (longest gap of a 10 ms heartbeat)", ms(ours),
          " · ".join("%s %s" % (k, ms(st[k]["worst_ms"])) for k in peers) +
          "; heartbeat alone %s" % ms(st["none"]["worst_ms"]), "<= 20 ms",
          verdict(ours is not None and ours <= 20))
    t.notes.append("1: clients: %s; every one with a 3 s keepalive, publishing QoS 1 every "
                   "500 ms; slow = every byte from the broker %d ms late; a blocking call "
                   "waits as long as the fault lasts, so such a figure is the step's length"
                   % ("; ".join("%s = %s" % kv for kv in names.items()), fig["slow_ms"]))
    t.notes.append("1, 2: peers not measured: " + "; ".join(
        "%s: %s" % u for u in unusable_peers()))
    wrong = []
    for k in ["link"] + peers:
        bad = []
        for i, x in enumerate(st[k]["steps"]):
            if x and EXPECT.get(steps[i][3]) and x["online_at_end"] != EXPECT[steps[i][3]]:
                b = "'%s' (%s)" % (steps[i][0], {"yes": "online", "no": "offline"}.get(
                    x["online_at_end"], x["online_at_end"]))
                if b not in bad:
                    bad.append(b)
        wrong.append("%s %s" % (k, ", ".join(bad) if bad else "none"))
    t.notes.append("1: steps at whose end a client's own view (online or not) was wrong: "
                   + "; ".join(wrong))


def row_recovery(t, fig, runs, cfg):
    if not fig or "recovery" not in fig:
        return t.missing("2", "recovery after outages", failed("recovery", runs))
    rec, (back_cap, notice_cap) = fig["recovery"], fig["caps"]
    peers = [k for k in rec if k != "link"]
    back_t = cfg["backoff_max_ms"] / 1000 + 1
    notice_t = cfg["keepalive_s"] + 1
    for n, outage in enumerate(fig["outages"]):
        ours = rec["link"]["back_s"].get(str(outage))
        t.add("2%s" % "ab"[n], "recovery: broker back after %s down -> online again"
              % ("%d s" % outage if outage < 60 else "%d min" % (outage // 60)),
              secs(ours, back_cap),
              " · ".join("%s %s" % (k, secs(rec[k]["back_s"].get(str(outage)), back_cap))
                         for k in peers),
              "<= %.0f s (back-off cap %d ms + connect)" % (back_t, cfg["backoff_max_ms"]),
              verdict(isinstance(ours, float) and ours <= back_t),
              "" if isinstance(ours, float) and ours <= back_t else
              "the Link retries after a back-off doubling from %d to %d ms, each wait drawn "
              "between half and all of it, ended early only by the board's network coming "
              "back" % (cfg["backoff_min_ms"], cfg["backoff_max_ms"]))
    ours = rec["link"]["notice_s"]
    quick = notice_cap < notice_t
    t.add("2c", "recovery: broker blackholed -> noticed", secs(ours, notice_cap),
          " · ".join("%s %s" % (k, "loop blocked" if rec[k].get("blocked") else
                                secs(rec[k]["notice_s"], notice_cap)) for k in peers),
          "<= %d s (one keepalive, %d s)" % (notice_t, cfg["keepalive_s"]),
          "not measured (quick run)" if quick and ours is None else
          verdict(ours is not None and ours <= notice_t),
          "the Link notices a silent broker after one keepalive of silence (keepalive_s "
          "%d, pinged at half of it); its QoS 1 publishes waiting for PUBACK do not end the "
          "session sooner" % cfg["keepalive_s"])
    ours = rec["link"]["back_after_blackhole_s"]
    t.add("2d", "recovery: blackhole over -> online again", secs(ours, back_cap),
          " · ".join("%s %s" % (k, secs(rec[k]["back_after_blackhole_s"], back_cap))
                     for k in peers), "<= %.0f s" % back_t,
          verdict(ours == "stayed online" or isinstance(ours, float) and ours <= back_t))
    t.notes.append("2: each client with its own defaults (the Link: pile/config.py; umqtt: "
                   "keepalive 0, the naive loop retries 200 ms after an error; aiomqttc: "
                   "keepalive 60 s, no reconnection of its own, the application's next "
                   "publish() connects; chumicro-mqtt: keepalive 60 s, acknowledgement "
                   "timeout 5 s, self-healing with a back-off 1 s doubling to 60 s); one "
                   "outage each, so a back-off figure depends on where its schedule falls; "
                   "\"online\" is each client's own view")


def row_boot(t, fig, runs):
    if not fig:
        return t.missing("3", "boot to online", failed("boot", runs))
    for key, label in (("cold", "3a"), ("warm", "3b")):
        f = fig[key]
        t.add(label, "boot to online (process start -> firmwareEvt at the platform), %s"
              % ("cold: provisioning first" if key == "cold" else "warm: stored credentials"),
              "median %s (%s..%s, %d runs)" % (ms(f["median"]), ms(f["min"]), ms(f["max"]),
                                               f["n"]),
              "-", "none set", "n/a (figure only)")


def row_stop(t, fig, runs):
    if not fig:
        return t.missing("4", "command latency", failed("stop", runs), "p99 <= 100 ms")

    def mp(f):
        return "median %s, p99 %s (n=%d)" % (ms(f["median"]), ms(f["p99"]), f["n"])

    e, r = fig["event"], fig["relay"]
    t.add("4a", "command: stopChargeSrv published -> stopChaResEvt received", mp(e), "-",
          "p99 <= 100 ms", verdict(e["p99"] <= 100))
    react = fig["ev_react_ms"] / fig["speed"]
    if r["min"] < -1 - fig.get("clock_uncertainty_ms", 0):
        t.missing("4b", "command: stopChargeSrv published -> relay open",
                  "the board's event stamps and the host's clock disagree (a relay open "
                  "%s before its command): bench_stop.py does not read the board's clock "
                  "right" % ms(-r["min"]), "p99 <= 100 ms")
        r = None
    if r is not None:
        t.add("4b", "command: stopChargeSrv published -> relay open", mp(r),
              "limit: the vehicle leaves C %.0f ms after the PWM goes off" % react,
              "p99 <= 100 ms", verdict(r["p99"] <= 100),
              "a normal stop switches the PWM off and opens the relay once the vehicle has left "
              "C (IEC 61851-1); the simulated vehicle takes ev_react_ms = %.0f ms to do so, seen "
              "at the firmware's next pilot read: command -> PWM off %s, PWM off -> vehicle left "
              "C %s, vehicle left C -> relay open %s (each median / p99)"
              % (react, "/".join(ms(fig["pwm_off"][k]) for k in ("median", "p99")),
                 "/".join(ms(fig["pwm_to_left"][k]) for k in ("median", "p99")),
                 "/".join(ms(fig["left_to_relay"][k]) for k in ("median", "p99"))) +
              ("; the board's event clock is set against the host's to within %s"
               % ms(fig["clock_uncertainty_ms"]) if "clock_uncertainty_ms" in fig else ""))
    lv = fig["leave"]
    t.add("4c", "vehicle leaves C -> relay open (PROTOCOL.md section 7)", mp(lv), "-",
          "p99 <= 100 ms", verdict(lv["p99"] <= 100))


def row_trip(t, fig, runs):
    if not fig:
        return t.missing("5", "protection latency", failed("trip", runs))
    by = {}
    for r in fig["rows"]:
        by.setdefault(r["kind"], {})[r["net"]] = r
    targets = {"estop": 20, "leakage": 20, "cp-short": 20, "over-current": 100}
    for n, kind in enumerate(("estop", "leakage", "cp-short", "over-current")):
        nets = by.get(kind)
        if not nets:
            t.missing("5%s" % "abcd"[n], "protection: %s" % kind, "not in this run")
            continue
        cells = "; ".join("%s %s / %s" % (net, ms(r["median"]), ms(r["p99"]))
                          for net, r in sorted(nets.items(), reverse=True))
        worst = max(r["p99"] for r in nets.values())
        note = "over-current is seen on the next ADC burst (every 50 ms) and trips at once" \
            if kind == "over-current" else ""
        for net, r in sorted(nets.items(), reverse=True):
            over = sorted((x for x in r.get("ms", ()) if x > targets[kind]), reverse=True)
            if over:        # over 30 runs the p99 is the largest: say how many
                rest = sorted(r["ms"])[-len(over) - 1] if len(r["ms"]) > len(over) else None
                note += "%s%s: %d of %d injections over %d ms (%s), the largest of the others "\
                    "%s" % ("; " if note else "", net, len(over), len(r["ms"]), targets[kind],
                            ", ".join(ms(x) for x in over[:3]), ms(rest))
        t.add("5%s" % "abcd"[n], "protection: %s injected -> relay open (median / p99, n=%d "
              "each)" % (kind, min(r["n"] for r in nets.values())), cells, "-",
              "p99 <= %d ms" % targets[kind], verdict(worst <= targets[kind]), note)
    if fig.get("violations"):
        t.notes.append("5: the simulated board recorded %d safety violations"
                       % fig["violations"])
    if fig.get("refused"):
        t.notes.append("5: %d starts were refused right after a fault had cleared and asked "
                       "again 0.5 s later (kind start_result/fault_code: %s)" % (
                           len(fig["refused"]),
                           ", ".join(sorted(set("%s %s/%s" % tuple(r) for r in fig["refused"])))))


def row_meter(t, fig, runs):
    if not fig:
        return t.missing("6", "meter kernel", failed("meter", runs))
    for n, size in enumerate(("128", "1024")):
        b = fig["bursts"].get(size)
        if not b:
            continue
        if "c" in b:
            lim = "C gcc -O2 %.4f us/sample = 1x: viper %.1fx, plain %.0fx%s" % (
                b["c"], b["viper"] / b["c"], b["plain"] / b["c"],
                "" if b.get("c_sums_equal") else " (C sums DIFFER)")
        else:
            lim = "no C compiler here"
        t.add("6%s" % "ab"[n], "meter kernel, %s-sample burst%s: time per sample"
              % (size, " (the board's)" if size == "128" else ""),
              "viper %.4f us; plain %.4f us (%.1fx the viper)" % (b["viper"], b["plain"],
                                                                  b["plain"] / b["viper"]),
              lim, "none set", "n/a (figure only)")


def row_billing(t, fig, runs):
    if not fig:
        return t.missing("7", "billing", failed("billing", runs), "0 disagreements")
    t.add("7", "billing: %d generated sessions priced, disagreements with the reference"
          % fig["sessions"],
          "%.0f sessions/s; %d disagreements" % (fig["per_s"], fig["disagreements"]),
          "the reference (CPython) %.0f sessions/s" % fig["ref_per_s"], "0 disagreements",
          verdict(fig["disagreements"] == 0))


def row_memory(t, text, runs, flash_text):
    """From the lines bench_memory.py and bench_flash.py print."""
    m = re.search(r"high-water in use: (\d+) bytes; largest free block after the session: "
                  r"(\d+)", text)
    online = re.search(r"^online, idle\s+(\d+)\s+(\d+)\s+(\d+)", text, re.M)
    if m and online:
        largest = int(m.group(2))
        t.add("8a", "memory: heap in use online / high-water / largest free block after "
              "the session", "%s / %s / %s bytes" % (online.group(1), m.group(1), largest),
              "-", "largest block > 8 KB", verdict(largest > 8192))
    else:
        t.missing("8a", "memory: heap online, high-water, largest free block",
                  failed("memory", runs) if runs.get("memory", {}).get("rc") else
                  "bench_memory.py printed no such figures")
    rates = re.findall(r"heap\s+(\d+):\s+(\d+) of\s+(\d+) passed", text)
    whys = re.findall(r"heap\s+(\d+):\s+\d+ of\s+\d+ passed\s+\((.*)", text)
    if m and online and int(m.group(2)) <= 8192:
        t.notes.append("8a: the heap is fragmented: after the session no free block is larger "
                       "than %s bytes" % m.group(2))
    if whys:
        t.notes.append("8b: why runs failed: " + "; ".join(
            "%d KB: %s" % (int(h) // 1000, w.strip().rstrip(")")[:160]) for h, w in whys))
        if online:
            small = [int(h) for h, _ in whys if int(h) < int(online.group(1))]
            if small:
                t.notes.append("8b: in a large heap the firmware holds %s bytes once online, "
                               "more than %s: it cannot come up there" % (
                                   online.group(1), ", ".join("%d" % h for h in small)))
    if rates:
        at140 = [(int(p), int(n)) for h, p, n in rates if int(h) == 140000]
        t.add("8b", "memory: full session with reconnects passes, per heap size",
              ", ".join("%d KB %s/%s" % (int(h) // 1000, p, n) for h, p, n in rates), "-",
              "every run at 140 KB (DESIGN.md)",
              verdict(bool(at140) and at140[0][0] == at140[0][1]) if at140 else
              "not measured at 140 KB")
    else:
        t.missing("8b", "memory: pass rate per heap size", "bench_memory.py printed no pass "
                  "rates")
    flash = re.search(r"per charging hour\s+(\d+)\s+(\d+)\s+(\d+)", flash_text)
    life = re.findall(r"charging\s+(\d+) h a day:\s+(\d+) erases a day,\s+(\d+) years",
                      flash_text)
    if flash:
        t.add("8c", "flash writes per charging hour (pile.store saves)",
              "%s saves, %s bytes, ~%s erase blocks" % flash.groups(),
              "; ".join("%s years of flash life charging %s h a day" % (y, h)
                        for h, _, y in life) or "-", "none set", "n/a (figure only)",
              "the flash model (4 KB blocks, 2 MB littlefs, 100k cycles) is bench_flash.py's")
    else:
        t.missing("8c", "flash writes per charging hour",
                  failed("flash", runs) if "flash" in runs else
                  "no bench under bench/ prints it")


def row_size(t, fig, runs):
    if not fig:
        return t.missing("9", "size", failed("size", runs), "<= 60 KB")
    total = fig["deployed_mpy"] + fig["main_py"]
    top = sorted(fig["modules"].items(), key=lambda kv: -kv[1])[:4]
    t.add("9", "size: what `make deploy` puts on the board (xtensawin .mpy, umqtt "
          "included, + main.py)",
          "%d bytes (%.1f KB: .mpy %d + main.py %d)" % (total, total / 1024,
                                                        fig["deployed_mpy"], fig["main_py"]),
          "largest: " + ", ".join("%s %d" % kv for kv in top), "<= 60 KB (61440 bytes)",
          verdict(total <= SIZE_TARGET),
          "" if total <= SIZE_TARGET else "%d bytes over; the largest modules are %s"
          % (total - SIZE_TARGET, ", ".join("%s (%d)" % kv for kv in top)))


def row_tls(t, text, runs):
    kinds = re.findall(r"server certificate (.+?) \(", text)
    times = re.findall(r"CONNECT/CONNACK: median ([\d.]+) ms.*?plain TCP ([\d.]+) ms", text)
    held = re.findall(r"a connection, while open\s+(\d+)\s+\(plain TCP (\d+)\)", text)
    if not times or runs["tls"]["rc"]:
        return t.missing("10", "TLS to the broker", failed("tls", runs), "none set")
    t.add("10", "TLS: connect + handshake + CONNECT/CONNACK; heap of an open connection",
          "; ".join("%s %s ms" % (k, tm[0]) for k, tm in zip(kinds, times)) +
          ("; %s bytes open" % held[0][0] if held else ""),
          "plain TCP %s ms%s" % (times[0][1], "; %s bytes" % held[0][1] if held else ""),
          "none set", "n/a (figure only)")


def build_table(runs):
    t = Table()
    cfg = firmware_config()
    row_stall(t, load("stall")[0], runs)
    row_recovery(t, load("recovery")[0], runs, cfg)
    row_boot(t, load("boot")[0], runs)
    row_stop(t, load("stop")[0], runs)
    row_trip(t, load("trip")[0], runs)
    row_meter(t, load("meter")[0], runs)
    row_billing(t, load("billing")[0], runs)
    known = {r[0] for r in RUNS}
    others = {name: load(name)[1] for name in runs if name not in known}
    row_memory(t, load("memory")[1], runs, load("flash")[1])
    row_size(t, load("size")[0], runs)
    if "tls" in runs:
        row_tls(t, load("tls")[1], runs)
    for name, text in sorted(others.items()):
        tail = [line for line in text.splitlines() if line.strip()][-3:]
        t.notes.append("bench_%s.py (not in the table): %s" % (name, " / ".join(tail)))
    return t


# --- the machine and BENCHMARKS.md ---------------------------------------------------------

def _out(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine():
    cpu = ""
    for line in _out(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            cpu = line.split(":", 1)[1].strip()
    mp = _out([os.path.join(ROOT, ".venv", "bin", "micropython"), "-c",
               "import sys; print('%d.%d.%d' % sys.implementation.version[:3], "
               "sys.version.split('; ')[1], sys.implementation._machine)"])
    mosq = _out(["sh", "-c", "(mosquitto -h || /usr/sbin/mosquitto -h) 2>&1 | head -1"])
    commit = _out(["git", "rev-parse", "--short", "HEAD"])
    dirty = _out(["git", "status", "--porcelain", "--untracked-files=no"])
    return [("date", datetime.datetime.now().strftime("%Y-%m-%d %H:%M")),
            ("commit", commit + (" with uncommitted changes" if dirty else "")),
            ("CPU", "%s, %d cores (%s)" % (cpu or platform.processor(), os.cpu_count(),
                                            platform.machine())),
            ("kernel", platform.system() + " " + platform.release()),
            ("Python", platform.python_version()),
            ("MicroPython", mp or "?"), ("mosquitto", mosq or "?"),
            ("C compiler", _out(["sh", "-c", "gcc --version | head -1"]) or "none")]


def render(t, runs, quick, total_s, host):
    lines = ["## Last %s run" % ("quick" if quick else "full"), ""]
    lines += ["- %s: %s" % tuple(kv) for kv in host]
    lines += ["- duration: %.1f min (%s)" % (total_s / 60, ", ".join(
        "%s %.0f s" % (n, r["seconds"]) for n, r in runs.items()))]
    lines += ["", t.markdown(), ""]
    if t.notes:
        lines += ["Notes:", ""] + ["- " + n for n in t.notes] + [""]
    return "\n".join(lines)


def write(path, text):
    try:
        with open(path) as f:
            doc = f.read()
    except OSError:
        doc = "# Benchmarks\n\n%s\n%s\n" % (BEGIN, END)
    if BEGIN not in doc or END not in doc:
        doc = doc.rstrip("\n") + "\n\n%s\n%s\n" % (BEGIN, END)
    head, rest = doc.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(path, "w") as f:
        f.write(head + BEGIN + "\n" + text.rstrip("\n") + "\n" + END + tail)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", default=bool(os.environ.get("BENCH_QUICK")))
    ap.add_argument("--write", help="put the table into this file (a full run only)")
    ap.add_argument("--only", help="comma-separated run names (size, meter, billing, boot, "
                    "stall, stop, trip, tls, recovery, memory, ...)")
    ap.add_argument("--table-only", action="store_true",
                    help="no runs: the table again from the figures of the last run")
    args = ap.parse_args(argv)
    info = os.path.join(OUT, "run.json")
    if args.table_only:         # the last run as it was recorded: its runs, machine, time
        with open(info) as f:
            last = json.load(f)
    else:
        runs = plan(args.quick, args.only and args.only.split(","))
        host, t0 = machine(), time.time()
        print("bench: %d runs%s; logs in %s" % (len(runs), " (quick)" if args.quick else "",
                                                os.path.relpath(OUT, ROOT)), flush=True)
        done = run_all(runs)
        last = {"runs": done, "quick": args.quick, "partial": bool(args.only),
                "seconds": time.time() - t0, "machine": host}
        with open(info, "w") as f:
            json.dump(last, f, indent=1)
    done = last["runs"]
    text = render(build_table(done), done, last["quick"], last["seconds"], last["machine"])
    print()
    print(text)
    if args.write:
        if last["quick"] or last["partial"]:
            print("(a quick or partial run: %s left as it was)" % args.write)
        else:
            write(os.path.join(ROOT, args.write), text)
            print("(written to %s)" % args.write)
    return 0 if all(r["rc"] == 0 for r in done.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
