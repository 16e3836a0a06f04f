"""Run a MicroPython snippet in the unix port with the firmware on its path (for benches).

run(code, heap, reps) substitutes {REPS} in code, runs it in `micropython -X heapsize`
(heap 0: the port's default), relays its output and returns its exit code; output() runs
it the same way and returns (exit code, stdout), relaying only stderr.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
MPYPATH = ".frozen:%s:%s" % (os.path.join(ROOT, "firmware"), os.path.join(ROOT, "lib"))


def output(code, heap, reps):
    res = _run(code, heap, reps)
    sys.stderr.write(res.stderr)
    return res.returncode, res.stdout


def run(code, heap, reps):
    res = _run(code, heap, reps)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    return res.returncode


def _run(code, heap, reps):
    cmd = [MICROPYTHON] + (["-X", "heapsize=%d" % heap] if heap else [])
    cmd += ["-c", code.replace("{REPS}", str(reps))]
    env = dict(os.environ, MICROPYPATH=MPYPATH)
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
