"""tools/deploy.py against a stand-in for mpremote (MPREMOTE=...).

The stand-in records its argv (one JSON line per run) and plays the board: it runs the
`exec` script's effects it understands (nothing), copies each `fs cp SRC :DST` into a
directory that is the board's filesystem, and notes `reset`.  It exits with
FAKE_MPREMOTE_EXIT (default 0).
"""
import json
import os
import stat
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECRET = "bc0e921e1132c98628197baea2edd65d)"
WIFI_PW = "hunter2-wifi"

STAND_IN = r'''#!%s
import json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_MPREMOTE_LOG"], "a") as f:
    f.write(json.dumps(args) + "\n")
board = os.environ["FAKE_BOARD"]
for i, a in enumerate(args):
    if a == "cp" and args[i - 1] == "fs":
        src, dst = args[i + 1], args[i + 2]
        assert dst.startswith(":"), dst
        dst = os.path.join(board, dst[1:])
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(src, dst)
print("(stand-in mpremote ran %%d args)" %% len(args))
sys.exit(int(os.environ.get("FAKE_MPREMOTE_EXIT", "0")))
''' % sys.executable


@pytest.fixture
def env(tmp_path):
    fake = tmp_path / "mpremote"
    fake.write_text(STAND_IN)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "board").mkdir()
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"app_id": "hci", "cpu_id": "HCS220922001000",
                               "product_type": "HCI-EVA7", "secret_key": SECRET,
                               "provision_url": "http://10.0.0.1:8779/x",
                               "wifi_ssid": "site", "wifi_password": WIFI_PW}))
    e = dict(os.environ, MPREMOTE=str(fake), FAKE_MPREMOTE_LOG=str(tmp_path / "argv.log"),
             FAKE_BOARD=str(tmp_path / "board"))
    return tmp_path, e


def deploy(tmp_path, env, *extra, port="/dev/ttyUSB7"):
    cmd = [sys.executable, os.path.join(ROOT, "tools", "deploy.py"), "--port", port,
           "--board", "pile7kw", "--build", str(tmp_path / "build")] + list(extra)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)


def runs(tmp_path):
    with open(tmp_path / "argv.log") as f:
        return [json.loads(line) for line in f]


def copies(argv):
    return {argv[i + 2][1:]: argv[i + 1] for i, a in enumerate(argv)
            if a == "cp" and argv[i - 1] == "fs"}


def test_first_deploy_writes_the_whole_compiled_image(env):
    tmp_path, e = env
    res = deploy(tmp_path, e, "--config", str(tmp_path / "config.json"))
    assert res.returncode == 0, res.stderr + res.stdout
    (argv,) = runs(tmp_path)
    assert argv[:3] == ["connect", "/dev/ttyUSB7", "exec"] and argv[-2:] == ["+", "reset"]
    got = copies(argv)
    board = tmp_path / "board"
    want = {"main.py", "board.json", "config.json", "hal/__init__.mpy", "hal/esp32.mpy",
            "pile/app.mpy", "pile/boardfile.mpy", "pile/diag.mpy", "umqtt/simple.mpy"}
    assert want <= set(got), sorted(got)
    assert "hal/sim.mpy" not in got and "hal/simbench.mpy" not in got
    assert not any(k.endswith(".py") and k != "main.py" for k in got)
    for rel in got:
        if rel.endswith(".mpy"):
            head = (board / rel).read_bytes()[:4]
            assert head[0:1] == b"M" and head[1] == 6, (rel, head)   # .mpy version 6
            assert head[2] >> 2 in (0, 10), (rel, head)  # bytecode only, or xtensawin code
    assert (board / "main.py").read_text() == open(os.path.join(ROOT, "firmware",
                                                                "main.py")).read()
    assert json.loads((board / "board.json").read_text())["name"] == "pile7kw"
    assert json.loads((board / "config.json").read_text())["secret_key"] == SECRET
    # the board-side script makes the directories and drops stray sources
    script = argv[3]
    assert "os.mkdir" in script and "'pile'" in script and "'umqtt'" in script
    compile(script, "board_script", "exec")
    # secrets are never echoed, and never recorded
    out = res.stdout + res.stderr
    assert SECRET not in out and WIFI_PW not in out and "not shown" in out
    record = (tmp_path / "build" / "deployed-ttyUSB7.json").read_text()
    assert SECRET not in record and "config.json" not in json.loads(record)["files"]


def test_second_deploy_copies_only_changes(env):
    tmp_path, e = env
    assert deploy(tmp_path, e).returncode == 0
    res = deploy(tmp_path, e, "--config", str(tmp_path / "config.json"))
    assert res.returncode == 0, res.stderr
    argv = runs(tmp_path)[-1]
    assert set(copies(argv)) == {"config.json"}, copies(argv)
    assert "0 of" in res.stdout
    # a file that differs from the record goes again, alone
    rec_path = tmp_path / "build" / "deployed-ttyUSB7.json"
    rec = json.loads(rec_path.read_text())
    rec["files"]["pile/session.mpy"] = "0" * 64
    rec["files"]["pile/old_module.mpy"] = "1" * 64      # no longer in the image
    rec_path.write_text(json.dumps(rec))
    assert deploy(tmp_path, e).returncode == 0
    argv = runs(tmp_path)[-1]
    assert set(copies(argv)) == {"pile/session.mpy"}, copies(argv)
    assert "pile/old_module.mpy" in argv[3]             # removed on the board
    assert "pile/old_module.mpy" not in json.loads(rec_path.read_text())["files"]
    # --full, another port, or another board: everything again
    assert deploy(tmp_path, e, "--full").returncode == 0
    assert len(copies(runs(tmp_path)[-1])) > 20
    assert deploy(tmp_path, e, port="/dev/ttyUSB8").returncode == 0
    assert len(copies(runs(tmp_path)[-1])) > 20


def test_failed_mpremote_keeps_the_record(env):
    tmp_path, e = env
    assert deploy(tmp_path, e).returncode == 0
    rec_path = tmp_path / "build" / "deployed-ttyUSB7.json"
    rec = json.loads(rec_path.read_text())
    rec["files"]["pile/app.mpy"] = "0" * 64
    rec_path.write_text(json.dumps(rec))
    res = deploy(tmp_path, dict(e, FAKE_MPREMOTE_EXIT="1"))
    assert res.returncode == 1 and "mpremote failed" in res.stderr
    assert json.loads(rec_path.read_text())["files"]["pile/app.mpy"] == "0" * 64
    assert deploy(tmp_path, e).returncode == 0
    assert set(copies(runs(tmp_path)[-1])) == {"pile/app.mpy"}


def test_broken_board_file_is_never_deployed(env):
    tmp_path, e = env
    board = json.load(open(os.path.join(ROOT, "boards", "pile7kw", "board.json")))
    board["ratings"]["ot_cur"] = 9000
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(board))
    cmd = [sys.executable, os.path.join(ROOT, "tools", "deploy.py"), "--port", "/dev/x",
           "--board", str(path), "--build", str(tmp_path / "build")]
    res = subprocess.run(cmd, env=e, capture_output=True, text=True)
    assert res.returncode != 0 and "ratings.ot_cur: expected int 60..800" in res.stderr
    assert not (tmp_path / "argv.log").exists()
    res = deploy(tmp_path, e, "--config", str(tmp_path / "missing.json"))
    assert res.returncode != 0 and "no configuration file" in res.stderr


def test_dry_run_and_sim_board_refused(env):
    tmp_path, e = env
    res = deploy(tmp_path, e, "--dry-run")
    assert res.returncode == 0 and "pile/app.mpy" in res.stdout
    assert not (tmp_path / "argv.log").exists()
    cmd = [sys.executable, os.path.join(ROOT, "tools", "deploy.py"), "--port", "/dev/x",
           "--board", "sim", "--build", str(tmp_path / "build")]
    res = subprocess.run(cmd, env=e, capture_output=True, text=True)
    assert res.returncode != 0 and "not a hardware board" in res.stderr


def test_the_ca_file_the_configuration_names_goes_with_it(env):
    tmp_path, e = env
    cfg_path = tmp_path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["ca_file"] = "HCS220922001000.ca.der"
    cfg_path.write_text(json.dumps(cfg))
    res = deploy(tmp_path, e, "--config", str(cfg_path))
    assert res.returncode != 0 and "HCS220922001000.ca.der is missing" in res.stderr
    assert not (tmp_path / "argv.log").exists()
    (tmp_path / "HCS220922001000.ca.der").write_bytes(b"\x30\x03\x02\x01\x05")
    res = deploy(tmp_path, e, "--config", str(cfg_path))
    assert res.returncode == 0, res.stderr
    got = copies(runs(tmp_path)[-1])
    assert got["HCS220922001000.ca.der"] == str(tmp_path / "HCS220922001000.ca.der")
    assert got["config.json"] == str(cfg_path) and "CA file HCS220922001000.ca.der" in res.stdout
    assert (tmp_path / "board" / "HCS220922001000.ca.der").read_bytes() == b"\x30\x03\x02\x01\x05"
    # every deploy with a configuration takes it along, like config.json
    assert deploy(tmp_path, e, "--config", str(cfg_path)).returncode == 0
    assert "HCS220922001000.ca.der" in copies(runs(tmp_path)[-1])
    for bad in ("../ca.der", "/ca.der", "config.json"):
        cfg["ca_file"] = bad
        cfg_path.write_text(json.dumps(cfg))
        res = deploy(tmp_path, e, "--config", str(cfg_path))
        assert res.returncode != 0 and "expected a file name beside" in res.stderr, bad
