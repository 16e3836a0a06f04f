"""Correct a board file's mains gains from the pile's readings and a reference meter's.

    python tools/calibrate.py --board boards/pile7kw/board.json --pile-v 228.41 --ref-v 230.10 \
        --pile-i 15.92 --ref-i 16.05 [--out build/piles/<cpu_id>.board.json] [--dry-run]
    python tools/calibrate.py --board boards/sim/board.json --bench 127.0.0.1:7001 --ref-v 230

The pile's readings are RMS volts and amps as the pile reports them: typed in (diag.status()
shows v_mv and i_ma; diag.adc(10) averages ten bursts), or read from a simulated board's
bench port ({"cmd":"status"}, averaged over --samples readings).  Each channel given a
reference is corrected: new gain = old gain x reference / reading (cal.v_uv, cal.i_ua,
integers, exact decimal arithmetic, rounded to the nearest).  A correction beyond
--max-change (default 20 %) is refused as a wiring or unit mistake unless --force.  The
result is checked with the firmware's validator and written atomically (temporary file,
then rename) in the board file's own layout.  docs/calibration.md has the procedure.

Also: --v-offset / --i-offset set the zero offsets (ADC counts, diag.adc() means with no
voltage / no current), and --cp-a MV --cp-f MV correct the control pilot divider (cp.offset,
cp.uv) from the pile's cp readings at the +12 V and -12 V plateaus (diag.status() cp_hi_mv
with no vehicle, and after board.cp_set(0)) against the true levels, --cp-ref-a/-f
(default +12000 / -12000 mV, or what a meter shows).
"""
import argparse
import json
import os
import sys
import time
from fractions import Fraction

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tools/ first: its bench.py,
import bench  # noqa: E402                                     # not the bench/ folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "firmware"))

from pile import boardfile  # noqa: E402

CHANNELS = (("v", "v_uv", "V", "v_mv"), ("i", "i_ua", "A", "i_ma"))


def board_path(name):
    if os.path.sep in name or name.endswith(".json"):
        return name
    return os.path.join(ROOT, "boards", name, "board.json")


def dump(cfg):
    """The board file layout of the repository: one top-level key per line."""
    return "{" + ",\n ".join("%s: %s" % (json.dumps(k), json.dumps(v))
                             for k, v in cfg.items()) + "}\n"


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def bench_status(addr, timeout=5):
    host, _, port = addr.rpartition(":")
    reply = bench.send(int(port), {"cmd": "status"}, host or "127.0.0.1", timeout)
    if not reply.get("ok"):
        raise RuntimeError("bench: %s" % reply.get("error"))
    return reply["status"]


def bench_readings(addr, samples, interval):
    """Mean RMS volts and amps (Fractions) over `samples` status readings."""
    sums = {"v_mv": 0, "i_ma": 0}
    for n in range(samples):
        if n:
            time.sleep(interval)
        st = bench_status(addr)
        for key in sums:
            sums[key] += st[key]
    return {"v": Fraction(sums["v_mv"], 1000 * samples),
            "i": Fraction(sums["i_ma"], 1000 * samples)}


def corrected(cal, readings, refs, max_change, force):
    """(new cal, report lines) or SystemExit with the reason."""
    cal = dict(cal)
    lines = []
    for ch, key, unit, _ in CHANNELS:
        if refs.get(ch) is None:
            continue
        reading, ref = readings.get(ch), refs[ch]
        if reading is None:
            sys.exit("calibrate: no pile reading for %s (give --pile-%s or --bench)" % (unit, ch))
        if reading <= 0 or ref <= 0:
            sys.exit("calibrate: %s readings must be positive (pile %s, reference %s)"
                     % (unit, float(reading), float(ref)))
        ratio = ref / reading
        if abs(ratio - 1) > max_change and not force:
            sys.exit("calibrate: %s correction of %+.1f %% is beyond %.0f %%: check the wiring "
                     "and units, or --force" % (unit, float(ratio - 1) * 100, max_change * 100))
        new = round(cal[key] * ratio)
        lines.append("%s: pile %.4g %s, reference %.4g %s -> cal.%s %d -> %d (%+.3f %%)"
                     % (unit, float(reading), unit, float(ref), unit, key, cal[key], new,
                        float(ratio - 1) * 100))
        cal[key] = new
    if not lines:
        sys.exit("calibrate: give --ref-v and/or --ref-i")
    return cal, lines


def cp_corrected(cp, a_mv, f_mv, ref_a, ref_f):
    """New cp offset and uv from the readings at the two plateaus (mV, current cal)."""
    counts_a = cp["offset"] + Fraction(a_mv * 1000, cp["uv"])
    counts_f = cp["offset"] + Fraction(f_mv * 1000, cp["uv"])
    if counts_a - counts_f < 100:
        sys.exit("calibrate: the +12 V reading must be well above the -12 V one")
    uv = Fraction((ref_a - ref_f) * 1000) / (counts_a - counts_f)
    offset = counts_a - ref_a * 1000 / uv
    new = dict(cp, uv=round(uv), offset=round(offset))
    return new, "CP: +12 V read %d mV, -12 V read %d mV -> cp.offset %d -> %d, cp.uv %d -> %d" \
        % (a_mv, f_mv, cp["offset"], new["offset"], cp["uv"], new["uv"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", required=True, help="board name under boards/, or a path")
    ap.add_argument("--out", help="write here instead of over the board file")
    ap.add_argument("--pile-v", type=Fraction, help="RMS volts the pile reports")
    ap.add_argument("--pile-i", type=Fraction, help="RMS amps the pile reports")
    ap.add_argument("--ref-v", type=Fraction, help="RMS volts of the reference meter")
    ap.add_argument("--ref-i", type=Fraction, help="RMS amps of the reference meter")
    ap.add_argument("--bench", metavar="HOST:PORT", help="read the pile from a bench port")
    ap.add_argument("--samples", type=int, default=5, help="bench readings to average")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between them")
    ap.add_argument("--v-offset", type=int, help="zero of the voltage channel (counts)")
    ap.add_argument("--i-offset", type=int, help="zero of the current channel (counts)")
    ap.add_argument("--cp-a", type=int, metavar="MV", help="pile's CP reading at +12 V")
    ap.add_argument("--cp-f", type=int, metavar="MV", help="pile's CP reading at -12 V")
    ap.add_argument("--cp-ref-a", type=int, default=12000, metavar="MV")
    ap.add_argument("--cp-ref-f", type=int, default=-12000, metavar="MV")
    ap.add_argument("--max-change", type=float, default=0.2)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    path = board_path(a.board)
    with open(path) as f:
        cfg = json.load(f)
    errors = boardfile.validate(cfg)
    if errors:
        sys.exit("calibrate: %s is broken:\n  %s" % (path, "\n  ".join(errors)))
    readings = {"v": a.pile_v, "i": a.pile_i}
    if a.bench:
        got = bench_readings(a.bench, max(1, a.samples), a.interval)
        readings = {ch: readings[ch] if readings[ch] is not None else got[ch] for ch in got}
    lines = []
    if a.ref_v is not None or a.ref_i is not None or \
            a.v_offset is None and a.i_offset is None and a.cp_a is None:
        cfg["cal"], lines = corrected(cfg["cal"], readings, {"v": a.ref_v, "i": a.ref_i},
                                      a.max_change, a.force)
    for key, value in (("v_offset", a.v_offset), ("i_offset", a.i_offset)):
        if value is not None:
            lines.append("cal.%s %d -> %d" % (key, cfg["cal"][key], value))
            cfg["cal"][key] = value
    if (a.cp_a is None) != (a.cp_f is None):
        sys.exit("calibrate: give both --cp-a and --cp-f")
    if a.cp_a is not None:
        if "cp" not in cfg:
            sys.exit("calibrate: %s has no cp section (not a hardware board)" % path)
        cfg["cp"], line = cp_corrected(cfg["cp"], a.cp_a, a.cp_f, a.cp_ref_a, a.cp_ref_f)
        lines.append(line)
    for line in lines:
        print(line)
    errors = boardfile.validate(cfg)
    if errors:
        sys.exit("calibrate: the corrected board file would be broken:\n  " +
                 "\n  ".join(errors))
    if a.dry_run:
        print("calibrate: dry run, nothing written")
        return 0
    out = a.out or path
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    write_atomic(out, dump(cfg))
    print("calibrate: wrote %s; put it on the pile with make deploy (BOARD=%s)" % (out, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
