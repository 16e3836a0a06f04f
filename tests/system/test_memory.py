"""The firmware, loaded from .mpy, runs a whole session with reconnects in a bounded heap,
and its running data stays small.

DESIGN.md's target is `micropython -X heapsize=110000` on this 64-bit unix port.  It is
NOT met yet: after start-up the firmware (code loaded from .mpy, the simulated board,
asyncio and umqtt.simple, and the link's 1.5 KB transmit buffer) holds about 125 KB, and
the session with reconnects passes in a 150 KB heap (155 KB with margin); at 147.5 KB
allocations of ~550 bytes fail now and then on a fragmented heap (the largest free run is
~560 bytes with ~20 KB nominally free), in on_connect's events and the sim bench port.
This test holds the line where we are (HEAP) so the figure can only go down;
bench/bench_memory.py prints the figures.  The running data goal (growth under 32 KB above start-up) is met.
"""
import os
import subprocess
import sys
import time

from conftest import DEV, charging, give_model, online
from pile_proc import ROOT

HEAP = 155000           # the bound reached so far; DESIGN.md's target is 110000
GROWTH = 32768          # DESIGN.md: running data under 32 KB above start-up


def build_x64(out):
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_mpy.py"), "--arch",
                    "x64", "--out", str(out)], check=True, capture_output=True)
    return ".frozen:" + str(out)


def test_session_with_reconnects_in_bounded_heap(make_pile, platform, broker, tmp_path):
    path = build_x64(tmp_path / "mpy")
    pile = make_pile(speed=30, heap=HEAP, mpypath=path, keepalive_s=5)
    online(platform)
    give_model(platform)
    start = pile.bench({"cmd": "status"})["status"]["mem_alloc"]
    assert charging(platform, pile, "MEM1")["start_result"] == 10
    peak = start
    for _ in range(2):
        mark = platform.mark()
        broker.restart()
        online(platform, since=mark, timeout=30)
        time.sleep(1)
        peak = max(peak, pile.bench({"cmd": "status"})["status"]["mem_alloc"])
    mark = platform.mark()
    platform.stop_charge(DEV, "MEM1")
    order = platform.wait_for(DEV, "orderUpdateEvt", since=mark, timeout=15)["msg"]["body"]
    assert order["total_elect"] > 0
    status = pile.bench({"cmd": "status"})["status"]
    assert pile.alive(), pile.output()[-2000:]
    assert status["mem_alloc"] + status["mem_free"] <= HEAP
    assert max(peak, status["mem_alloc"]) - start < GROWTH
    assert "MemoryError" not in pile.output()
