"""tools/bench.py, the bench port's command-line client, against the firmware process
(no broker needed: the bench port answers while provisioning retries), and the platform
simulator's start-up banner naming the vendor key it accepts."""
import os
import subprocess
import sys

from pile_proc import ROOT, PileProcess

sys.path.insert(0, os.path.join(ROOT, "tools"))
import bench  # noqa: E402


def test_request_words():
    assert bench.request(["plug"]) == {"cmd": "plug"}
    assert bench.request(["car", "want=false", "demand_a=16"]) == \
        {"cmd": "car", "want": False, "demand_a": 16}
    assert bench.request(["fault", "name=estop", "on=true"]) == \
        {"cmd": "fault", "name": "estop", "on": True}
    assert bench.request(['{"cmd": "mains", "v": 250}']) == {"cmd": "mains", "v": 250}
    try:
        bench.request(["car", "want"])
        raise AssertionError("a word without = was taken")
    except ValueError:
        pass


def test_against_the_simulated_board(tmp_path, capsys):
    pile = PileProcess(str(tmp_path / "pile"), "http://127.0.0.1:9/x")
    pile.start()
    try:
        port = str(pile.bench_port)
        assert bench.main([port, "plug"]) == 0
        assert bench.main([port, "car", "want=false", "demand_a=16"]) == 0
        st = pile.state()
        assert st["plugged"] and not st["want"] and st["demand_a"] == 16
        assert bench.main([port, "fault", "name=nonsense", "on=true"]) == 1  # not ok
        assert bench.main([port, "status"]) == 0
        out = capsys.readouterr().out
        assert '"work_status"' in out and '"ok": false' in out
        assert bench.main(["x", "plug"]) == 2 and bench.main([port]) == 2
    finally:
        pile.stop()


def test_simulator_banner_names_the_key_it_accepts(tmp_path):
    res = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "platform_sim.py"),
                          "serve", "--http-port", "0", "--mqtt-port", "0", "--workdir",
                          str(tmp_path)], input="quit\n", capture_output=True, text=True,
                         timeout=30, cwd=ROOT)
    assert "vendor hci: secret key 'bc0e921e1132c98628197baea2edd65d)'" in res.stdout, \
        res.stdout + res.stderr
    assert "stray ')'" in res.stdout and "--vendors" in res.stdout
