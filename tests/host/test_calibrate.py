"""tools/calibrate.py: corrected integer gains, validated, written atomically; and against
the simulated board, whose true ADC scale differs from its nominal calibration."""
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import calibrate  # noqa: E402
from pile_proc import PileProcess  # noqa: E402


def board_copy(tmp_path, name="pile7kw"):
    dst = tmp_path / ("%s.json" % name)
    shutil.copyfile(os.path.join(ROOT, "boards", name, "board.json"), dst)
    return dst


def run(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "calibrate.py")]
                          + [str(a) for a in args], capture_output=True, text=True)


def test_gains_from_typed_readings(tmp_path):
    path = board_copy(tmp_path)
    before = json.loads(path.read_text())
    res = run("--board", path, "--pile-v", "225.4", "--ref-v", "230",
              "--pile-i", "15.8", "--ref-i", "16.00")
    assert res.returncode == 0, res.stderr
    after = json.loads(path.read_text())
    assert after["cal"]["v_uv"] == 204082        # 200000 x 230 / 225.4 = 204081.6
    assert after["cal"]["i_ua"] == 25316         # 25000 x 16 / 15.8 = 25316.5 (exact: .46)
    assert after["cal"]["v_offset"] == before["cal"]["v_offset"]
    for key in before:
        if key != "cal":
            assert after[key] == before[key]
    assert list(after) == list(before)           # same order, same layout
    assert path.read_text() == calibrate.dump(after)
    assert path.read_text().count("\n") == len(before)
    assert not list(tmp_path.glob("*.tmp"))
    assert "+2.041 %" in res.stdout and "cal.i_ua 25000 -> 25316" in res.stdout
    # the firmware's validator accepts the result
    sys.path.insert(0, os.path.join(ROOT, "firmware"))
    from pile import boardfile
    assert boardfile.validate(after) == []


def test_one_channel_and_out_and_dry_run(tmp_path):
    path = board_copy(tmp_path)
    text = path.read_text()
    out = tmp_path / "unit" / "HCS1.board.json"
    res = run("--board", path, "--pile-i", "9.5", "--ref-i", "10", "--out", out)
    assert res.returncode == 0, res.stderr
    assert path.read_text() == text              # the model's file is untouched
    got = json.loads(out.read_text())
    assert got["cal"]["i_ua"] == 26316 and got["cal"]["v_uv"] == 200000
    res = run("--board", path, "--pile-v", "200", "--ref-v", "210", "--dry-run")
    assert res.returncode == 0 and "dry run" in res.stdout and path.read_text() == text


def test_implausible_input_is_refused_and_nothing_written(tmp_path):
    path = board_copy(tmp_path)
    text = path.read_text()
    cases = [
        (("--pile-v", "180", "--ref-v", "230"), "beyond 20 %"),       # +27.8 %
        (("--pile-i", "16", "--ref-i", "1.6"), "beyond 20 %"),        # A vs 0.1 A
        (("--ref-v", "230"), "no pile reading for V"),
        (("--pile-v", "0", "--ref-v", "230"), "must be positive"),
        (("--pile-v", "230",), "give --ref-v and/or --ref-i"),
    ]
    for args, why in cases:
        res = run("--board", path, *args)
        assert res.returncode != 0 and why in res.stderr, (args, res.stderr)
        assert path.read_text() == text
    # --force accepts a large correction, but never a board file the firmware would refuse
    res = run("--board", path, "--pile-v", "1", "--ref-v", "230", "--force")
    assert res.returncode != 0 and "cal.v_uv: expected int" in res.stderr
    assert path.read_text() == text
    res = run("--board", path, "--pile-v", "180", "--ref-v", "230", "--force")
    assert res.returncode == 0 and json.loads(path.read_text())["cal"]["v_uv"] == 255556


def test_offsets_and_control_pilot(tmp_path):
    path = board_copy(tmp_path)
    cfg = json.loads(path.read_text())
    off, uv = cfg["cp"]["offset"], cfg["cp"]["uv"]         # 1613 counts, 8790 uV/count
    # the real divider: 0 V at 1600 counts, 9000 uV per count; the pile, using the board
    # file's values, reads +12 V as (1600 + 1333.3 - 1613) * 8.79 and -12 V likewise
    a = round((1600 + 12000 / 9 - off) * uv / 1000)
    f = round((1600 - 12000 / 9 - off) * uv / 1000)
    res = run("--board", path, "--cp-a", a, "--cp-f", f, "--v-offset", 2051,
              "--i-offset", 2046)
    assert res.returncode == 0, res.stderr
    got = json.loads(path.read_text())
    assert abs(got["cp"]["uv"] - 9000) <= 5 and abs(got["cp"]["offset"] - 1600) <= 1, got["cp"]
    assert got["cal"]["v_offset"] == 2051 and got["cal"]["i_offset"] == 2046
    assert got["cal"]["v_uv"] == cfg["cal"]["v_uv"]        # gains untouched
    assert "cp.uv 8790 ->" in res.stdout
    res = run("--board", path, "--cp-a", a)
    assert res.returncode != 0 and "both --cp-a and --cp-f" in res.stderr
    res = run("--board", path, "--i-offset", 5000)
    assert res.returncode != 0 and "cal.i_offset: expected int 0..4095" in res.stderr
    sim = board_copy(tmp_path, "sim")
    res = run("--board", sim, "--cp-a", 12000, "--cp-f", -12000)
    assert res.returncode != 0 and "no cp section" in res.stderr


class FakeBench:
    """Answers {"cmd":"status"} with the next of the given readings."""

    def __init__(self, readings):
        self.readings = list(readings)
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen()
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while self.readings:
            conn, _ = self.srv.accept()
            with conn:
                assert json.loads(conn.makefile().readline()) == {"cmd": "status"}
                v, i = self.readings.pop(0)
                conn.sendall((json.dumps({"ok": True, "status": {"v_mv": v, "i_ma": i}})
                              + "\n").encode())


def test_readings_from_a_bench_port(tmp_path):
    path = board_copy(tmp_path)
    bench = FakeBench([(226000, 15900), (227000, 16100), (226500, 16000)])
    res = run("--board", path, "--bench", "127.0.0.1:%d" % bench.port, "--samples", "3",
              "--interval", "0", "--ref-v", "230", "--ref-i", "16")
    assert res.returncode == 0, res.stderr
    cal = json.loads(path.read_text())["cal"]
    assert cal["v_uv"] == 203091 and cal["i_ua"] == 25000   # 200000 x 230 / 226.5 = 203090.5


def test_calibrating_the_simulated_board_removes_its_error(tmp_path):
    """The sim's ADC really has 203000 uV per count where its board file says 200000."""
    path = board_copy(tmp_path, "sim")

    def reading(pile):
        pile.wait_bench()
        pile.bench({"cmd": "mains", "v": 230, "noise": 0})
        time.sleep(0.5)
        return pile.bench({"cmd": "status"})["status"]["v_mv"]

    pile = PileProcess(str(tmp_path / "pile"), provision_url="http://127.0.0.1:9/x",
                       board=str(path))
    try:
        pile.start()
        before = reading(pile)
        assert abs(before - 230000 * 200 / 203) < 300, before     # 1.5 % low
        res = run("--board", path, "--bench", "127.0.0.1:%d" % pile.bench_port,
                  "--samples", "3", "--interval", "0.2", "--ref-v", "230")
        assert res.returncode == 0, res.stderr
        assert abs(json.loads(path.read_text())["cal"]["v_uv"] - 203000) < 300
        pile.stop()
        pile.start()
        after = reading(pile)
        assert abs(after - 230000) < 230, after                   # within 0.1 %
    finally:
        pile.stop()
