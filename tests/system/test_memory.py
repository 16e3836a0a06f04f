"""The firmware, loaded from .mpy, runs a whole session with reconnects in the heap an
ESP32 without PSRAM leaves to Python (DESIGN.md: micropython -X heapsize=110000)."""
import os
import subprocess
import sys
import time

from conftest import DEV, charging, give_model, online
from pile_proc import ROOT

HEAP = 110000


def build_x64(out):
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_mpy.py"), "--arch",
                    "x64", "--out", str(out)], check=True, capture_output=True)
    return ".frozen:" + str(out)


def test_session_with_reconnects_in_110k_heap(make_pile, platform, broker, tmp_path):
    path = build_x64(tmp_path / "mpy")
    pile = make_pile(speed=30, heap=HEAP, mpypath=path, keepalive_s=5)
    online(platform)
    give_model(platform)
    assert charging(platform, pile, "MEM1")["start_result"] == 10
    for _ in range(2):
        mark = platform.mark()
        broker.restart()
        online(platform, since=mark, timeout=30)
        time.sleep(1)
    mark = platform.mark()
    platform.stop_charge(DEV, "MEM1")
    order = platform.wait_for(DEV, "orderUpdateEvt", since=mark, timeout=15)["msg"]["body"]
    assert order["total_elect"] > 0
    status = pile.bench({"cmd": "status"})["status"]
    assert pile.alive(), pile.output()[-2000:]
    assert status["mem_alloc"] + status["mem_free"] <= HEAP
    assert "MemoryError" not in pile.output()
