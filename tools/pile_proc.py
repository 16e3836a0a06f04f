"""Run the firmware on the MicroPython unix port as a separate process, and drive it.

PileProcess writes the pile's factory config into its own directory, starts
``micropython firmware/main.py`` with the simulated board, keeps its console output in a
file, and talks to the simulated board's bench port (JSON lines over TCP).  Used by the
demo (tools/demo.py), the system tests and the benchmarks.
"""
import json
import os
import re
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tools/ first: its bench.py,
import bench  # noqa: E402                                     # not the bench/ folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
MPYPATH = ".frozen:" + os.path.join(ROOT, "firmware") + ":" + os.path.join(ROOT, "lib")
VENDOR_KEY = "bc0e921e1132c98628197baea2edd65d)"


def wait_until(pred, timeout=10, what="condition", poll=0.01):
    """Poll pred() until it returns something true; return that, or fail after timeout."""
    deadline = time.time() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(poll)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PileProcess:
    def __init__(self, workdir, provision_url, cpu_id="HCS220922001000", speed=1,
                 epoch_ms=None, board="boards/sim/board.json", heap=None, mpypath=None,
                 trusted=True, **config):
        self.dir = workdir
        self.storage = workdir      # the pile's flash (--storage); the same folder by default
        os.makedirs(workdir, exist_ok=True)
        self.cpu_id = cpu_id
        self.bench_port = free_port()
        self.speed = speed
        self.epoch_ms = epoch_ms
        self.trusted = trusted      # False: the board's clock is not set (no NTP yet)
        self.board = os.path.join(ROOT, board)
        self.heap = heap
        self.mpypath = mpypath or MPYPATH
        self.config = dict(app_id="hci", cpu_id=cpu_id, product_type="HCI-EVA7",
                           secret_key=VENDOR_KEY, provision_url=provision_url,
                           backoff_min_ms=200, backoff_max_ms=2000, keepalive_s=10)
        self.config.update(config)
        self.proc = None
        self.log_path = os.path.join(workdir, "console.log")
        self.starts = 0

    def image(self):
        """The image folder on the path (a build/ dir of .mpy files), or None (source)."""
        for d in self.mpypath.split(":")[1:]:
            if d != os.path.join(ROOT, "firmware") and \
                    os.path.exists(os.path.join(d, "main.py")):
                return d
        return None

    def write_config(self):
        with open(os.path.join(self.dir, "config.json"), "w") as f:
            json.dump(self.config, f)

    def start(self, wait=True):
        self.write_config()
        cmd = [MICROPYTHON]
        if self.heap:
            cmd += ["-X", "heapsize=%d" % self.heap]
        image = self.image()
        # an image runs as on the board: from its own folder, found through "" on the
        # path, so each module's name is short ("pile/gun.mpy": one small interned name)
        cmd += ["-m", "main"] if image else [os.path.join(ROOT, "firmware", "main.py")]
        cmd += ["--board", self.board,
                "--config", os.path.join(self.dir, "config.json"), "--storage", self.storage,
                "--bench", str(self.bench_port), "--speed", str(self.speed),
                "--cpu-id", self.cpu_id]
        if self.epoch_ms:
            cmd += ["--epoch-ms", str(self.epoch_ms)]
        if not self.trusted:
            cmd += ["--trusted", "0"]
        self.starts += 1
        log = open(self.log_path, "a")
        log.write("=== start %d\n" % self.starts)
        log.flush()
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=image or ROOT, env=dict(
                                         os.environ, MICROPYPATH=".frozen:" if image
                                         else self.mpypath))
        log.close()
        if wait:
            self.wait_bench()
        return self

    def wait_bench(self, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("firmware exited %s:\n%s" % (self.proc.returncode,
                                                                 self.output()[-3000:]))
            try:
                return self.bench({"cmd": "state"})
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("bench port never answered:\n" + self.output()[-3000:])

    def bench(self, request, timeout=5):
        """Send one bench request (a dict, or a line as it is); return the reply dict."""
        return bench.send(self.bench_port, request, timeout=timeout)

    def state(self):
        return self.bench({"cmd": "state"})["state"]

    def output(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_output(self, pattern, timeout=10, count=1):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(re.findall(pattern, self.output())) >= count:
                return
            if self.proc and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("no %r in the console:\n%s" % (pattern, self.output()[-3000:]))

    def status(self):
        """The application's status (work status, link, session, faults, energy)."""
        return self.bench({"cmd": "status"})["status"]

    def wait_state(self, pred, timeout=10):
        """Poll the hardware state until pred(state) holds; return that state."""
        return self._wait(self.state, pred, timeout)

    def wait_status(self, pred, timeout=10):
        """Poll the application's status until pred(status) holds; return it."""
        return self._wait(self.status, pred, timeout)

    @staticmethod
    def _wait(read, pred, timeout):
        last = [None]

        def matched():
            last[0] = read()
            return last[0] if pred(last[0]) else None

        try:
            return wait_until(matched, timeout, poll=0.02)
        except AssertionError:
            raise AssertionError("never matched; last: %s" % (last[0],))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None
