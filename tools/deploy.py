"""Put the firmware on a board over its USB serial port with mpremote.

    make deploy PORT=/dev/ttyUSB0 BOARD=pile7kw [CONFIG=build/piles/<cpu_id>.json] [FULL=1]
    python tools/deploy.py --port /dev/ttyUSB0 --board pile7kw [--config FILE] [--full]

1. Checks boards/<board>/board.json (or --board PATH) with the firmware's own validator
   (pile.boardfile): a broken board file is never deployed.
2. Compiles firmware/ and lib/ with tools/build_mpy.py for the board's "arch" (default
   xtensawin) into <build>/<arch>/; main.py stays source.  The board gets main.py,
   hal/__init__ and hal/esp32 (not the simulator), pile/*, umqtt/simple (at the root, so
   the pinned, tested umqtt.simple shadows any copy frozen into the MicroPython image) and
   board.json.
3. Copies only what changed: <build>/deployed-<port>.json records the sha256 of every file
   the last successful deploy through that port wrote, for which board.  A file whose hash
   differs is copied; everything is copied with --full, or when the record is missing or
   names another board.  (The record cannot see files changed on the board by hand: use
   --full after that, or after plugging another pile into the port.)  Files the record has
   and the image no longer has are removed, and so are stray .py sources in the image's
   directories, which would shadow the .mpy files.
4. --config FILE is written as /config.json on every deploy (it holds the pile's secrets:
   it is never hashed, recorded or printed), and with it the CA file it names (ca_file, a
   file name beside FILE, as tools/factory.py writes it), as /<ca_file>.
5. Resets the board, which starts the new firmware.
All of it is one mpremote command line (connect PORT exec ... + fs cp ... + reset); its
Ctrl-C stops the running application safely first.  The environment variable MPREMOTE
names the mpremote to run (default .venv/bin/mpremote).
"""
import argparse
import hashlib
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "firmware"))

import build_mpy  # noqa: E402
from pile import boardfile  # noqa: E402

SKIP = ("hal/sim.mpy", "hal/simbench.mpy")    # the simulated board never runs on hardware


def load_board(name):
    path = name if os.path.sep in name or name.endswith(".json") else \
        os.path.join(ROOT, "boards", name, "board.json")
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit("deploy: cannot read board file %s: %s" % (path, e))
    errors = boardfile.validate(cfg)
    if "pins" not in cfg:
        errors.append("pins: missing (not a hardware board)")
    if errors:
        sys.exit("deploy: board file %s is broken:\n  %s" % (path, "\n  ".join(errors)))
    return path, cfg


def ca_of(config):
    """(local path, board path) of the CA file a configuration names, or None; exits when
    it names one that is not beside it."""
    try:
        with open(config) as f:
            name = json.load(f).get("ca_file") or ""
    except (OSError, ValueError, AttributeError) as e:
        sys.exit("deploy: cannot read configuration %s: %s" % (config, e))
    if not name:
        return None
    local = os.path.join(os.path.dirname(os.path.abspath(config)), name)
    if os.path.basename(name) != name or name in ("config.json", "board.json", "main.py"):
        sys.exit("deploy: ca_file %r: expected a file name beside the configuration" % name)
    if not os.path.isfile(local):
        sys.exit("deploy: the configuration names ca_file %s: %s is missing" % (name, local))
    return local, name


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def image(arch, out, board_path):
    """{board path: local file} of everything the board gets but config.json."""
    build_mpy.build(arch, out)
    files = {}
    for src, rel in build_mpy.sources():
        rel = rel if rel == "main.py" else rel[:-3] + ".mpy"
        if rel not in SKIP:
            files[rel] = os.path.join(out, rel)
    files["board.json"] = board_path
    if "umqtt/simple.mpy" not in files:
        sys.exit("deploy: lib/umqtt/simple.py is missing: run make setup")
    return files


def record_path(build, port):
    return os.path.join(build, "deployed-%s.json" % re.sub(r"[^A-Za-z0-9_.-]", "_",
                                                           os.path.basename(port)))


def plan(files, record, board, full):
    """(files to copy, files to remove) against the record of the last deploy."""
    old = record.get("files", {}) if record.get("board") == board and not full else {}
    hashes = {rel: sha256(path) for rel, path in files.items()}
    copy = sorted(rel for rel in files if old.get(rel) != hashes[rel])
    gone = sorted(rel for rel in record.get("files", {}) if rel not in files)
    return copy, gone, hashes


def board_script(dirs, gone):
    """Run on the board first: make the directories, drop stray sources and old files."""
    return ("import os\n"
            "for d in %r:\n"
            " try: os.mkdir(d)\n"
            " except OSError: pass\n"
            " for f in os.listdir(d):\n"
            "  if f.endswith('.py'): os.remove(d + '/' + f)\n"
            "for f in %r:\n"
            " try: os.remove(f)\n"
            " except OSError: pass\n" % (tuple(dirs), tuple(gone)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", required=True, help="serial port of the board")
    ap.add_argument("--board", required=True, help="board name under boards/, or a path")
    ap.add_argument("--config", help="the pile's config.json (tools/factory.py writes it)")
    ap.add_argument("--full", action="store_true", help="copy every file")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="build directory")
    ap.add_argument("--dry-run", action="store_true", help="show what would be done")
    a = ap.parse_args(argv)
    board_path, cfg = load_board(a.board)
    if a.config and not os.path.isfile(a.config):
        sys.exit("deploy: no configuration file %s" % a.config)
    ca = ca_of(a.config) if a.config else None
    arch = cfg.get("arch", "xtensawin")
    files = image(arch, os.path.join(a.build, arch), board_path)
    rec_path = record_path(a.build, a.port)
    try:
        with open(rec_path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        record = {}
    copy, gone, hashes = plan(files, record, cfg["name"], a.full)
    dirs = sorted({os.path.dirname(rel) for rel in files if os.path.dirname(rel)})
    mpremote = os.environ.get("MPREMOTE") or os.path.join(ROOT, ".venv", "bin", "mpremote")
    cmd = [mpremote, "connect", a.port, "exec", board_script(dirs, gone)]
    for rel in copy:
        cmd += ["+", "fs", "cp", files[rel], ":" + rel]
    if a.config:
        cmd += ["+", "fs", "cp", a.config, ":config.json"]
    if ca:
        cmd += ["+", "fs", "cp", ca[0], ":" + ca[1]]
    cmd += ["+", "reset"]
    print("deploy: board %s (%s) on %s: %d of %d files changed%s%s%s"
          % (cfg["name"], arch, a.port, len(copy), len(files),
             ", %d removed" % len(gone) if gone else "",
             ", config.json from %s (not shown)" % a.config if a.config else "",
             ", CA file %s" % ca[1] if ca else ""))
    for rel in copy:
        print("  " + rel)
    if a.dry_run:
        return 0
    res = subprocess.run(cmd)
    if res.returncode:
        print("deploy: mpremote failed (exit %d); the record is unchanged, run again"
              % res.returncode, file=sys.stderr)
        return res.returncode
    os.makedirs(a.build, exist_ok=True)
    tmp = rec_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"board": cfg["name"], "port": a.port, "arch": arch, "files": hashes}, f,
                  indent=1, sort_keys=True)
    os.replace(tmp, rec_path)
    print("deploy: done; the board restarts with the new firmware")
    return 0


if __name__ == "__main__":
    sys.exit(main())
