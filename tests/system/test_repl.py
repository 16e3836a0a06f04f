"""Field diagnostics: Ctrl-C during a charge leaves the pile safe at the REPL, and every
pile.diag helper answers there (docs/field-guide.md).

The firmware runs as on the board: compiled to .mpy and started by ``micropython -i main.py``
(``-i``: the REPL opens when main.py ends, as on the board).  The heap is the unix port's
default: whether the firmware fits an ESP32's heap is test_memory's question; what diag
adds at the REPL is printed (OUT mem) and checked against the heap the process has.
SIGINT is the Ctrl-C; the test then types at the REPL through stdin.  Lines the test wants
back are printed as ``OUT <tag> <json>``.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

from conftest import DEV, charging, give_model, online
from pile_proc import MICROPYTHON, ROOT, VENDOR_KEY

REPL = r'''import json
from pile import diag
out = lambda tag, x: print("OUT " + tag + " " + json.dumps(x))
b = diag._app().board
out("hw", b.state())
out("status", diag.status())
out("fee", diag.fee())
out("orders0", diag.orders())
diag.logs(12)
out("stop", diag.stop())
out("orders1", diag.orders())
out("hw2", b.state())
out("adc", diag.adc(3))
out("prov", diag.provision())
out("cfg", diag.config())
out("set", diag.set_config("heartbeat_s", 60))
diag.set_config("heartbeat_s", "sixty")
diag.set_config("no_such_key", 1)
print("OUT help"); diag.help()
import gc
gc.collect()
out("mem", [gc.mem_alloc(), gc.mem_free()])
print("OUT restarting")
diag.run()
'''


def build_x64(out):
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_mpy.py"), "--arch",
                    "x64", "--out", str(out)], check=True, capture_output=True)
    return ".frozen:" + str(out)


def outs(text):
    found = {}
    for m in re.finditer(r"^OUT (\w+) (.*)$", text, re.M):
        found[m.group(1)] = json.loads(m.group(2)) if m.group(2) else None
    return found


def test_ctrl_c_then_every_diag_helper(make_pile, platform, tmp_path):
    path = build_x64(tmp_path / "mpy")
    pile = make_pile(start=False, mpypath=path)
    pile.write_config()
    cmd = [MICROPYTHON, "-i", os.path.join(pile.image(), "main.py"),
           "--board", pile.board, "--config", os.path.join(pile.dir, "config.json"),
           "--storage", pile.dir, "--bench", str(pile.bench_port), "--cpu-id", pile.cpu_id]
    log = open(pile.log_path, "a")
    pile.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log,
                                 stderr=subprocess.STDOUT, cwd=pile.dir,
                                 env=dict(os.environ, MICROPYPATH=path))
    log.close()
    try:
        pile.wait_bench()
        online(platform)
        give_model(platform)
        assert charging(platform, pile, "R1")["start_result"] == 10
        pile.wait_state(lambda s: s["relay_closed"])
        time.sleep(1.5)                                        # about 3 Wh

        pile.proc.send_signal(signal.SIGINT)                  # Ctrl-C
        pile.wait_output(r"stopped at the console")
        assert not os.path.exists(os.path.join(pile.dir, "config.json.tmp"))
        mark = platform.mark()
        provisions = platform.provision_count[DEV]
        pile.proc.stdin.write(REPL.encode())
        pile.proc.stdin.flush()
        pile.wait_output(r"OUT restarting", timeout=20)
        got = outs(pile.output())

        # Ctrl-C opened the relay and stopped the PWM at once; the session is suspended
        hw = got["hw"]
        assert not hw["relay_cmd"] and not hw["relay_closed"] and hw["cp_duty"] == 100, hw
        assert hw["violation_count"] == 0, hw["violations"]
        st = got["status"]
        assert st["relay"] is False and st["session"] == "R1" and st["dev_id"] == DEV
        for key in ("cp", "lock", "v_mv", "i_ma", "temp_c", "faults", "link", "cp_hi_mv",
                    "estop", "leakage", "time_trusted", "reset_cause"):
            assert key in st, key
        assert st["temp_c"] == 25.0 and st["v_mv"] > 200000 and st["faults"] == []
        assert got["fee"]["id"] == "M1"
        assert got["orders0"] == []
        assert "[gun]" in pile.output().split("OUT orders0")[1]      # logs() printed
        # diag.stop() closed the session: relay open, lock released, order journaled
        assert got["stop"]["relay"] is False and got["stop"]["orders_pending"] == 1
        (order,) = got["orders1"]
        assert order["pre_trade_no"] == "R1" and order["reason"] == 1001
        assert order["total_elect"] >= 1                       # the energy up to Ctrl-C
        assert not got["hw2"]["lock_cmd"] and not got["hw2"]["relay_cmd"]
        adc = got["adc"]
        assert 2000 < adc["v_mean"] < 2100 and adc["samples"] == 128 and adc["v_mv"] > 200000
        assert "provision" in got["prov"]
        assert "dropping stored credentials: asked at the console" in pile.output()
        assert got["cfg"]["secret_key"] == "***" and got["cfg"]["cpu_id"] == DEV
        assert got["set"]["heartbeat_s"] == 60
        with open(os.path.join(pile.dir, "config.json")) as f:
            saved = json.load(f)
        assert saved["heartbeat_s"] == 60 and saved["secret_key"] == VENDOR_KEY
        text = pile.output()
        assert "heartbeat_s: expected int" in text and "unknown config key no_such_key" in text
        assert "diag.run()" in text.split("\nOUT help\n")[1]         # help() printed
        assert got["mem"][1] > 0
        assert VENDOR_KEY not in text                                 # never echoed

        # diag.run(): the application again, provisioning anew, the order delivered
        platform.wait_for(DEV, "verInfoEvt", since=mark, timeout=30)
        assert platform.provision_count[DEV] == provisions + 1
        rec = platform.wait_for(DEV, "orderUpdateEvt", since=mark, timeout=15)
        assert rec["msg"]["body"]["pre_trade_no"] == "R1"
        assert pile.alive()
        assert "MemoryError" not in pile.output()
    finally:
        pile.proc.stdin.close()
        pile.stop()
