"""System-test fixtures: a real mosquitto, the platform simulator, the firmware process.

Every test gets its own broker and platform (so restarts and revocations never leak
between tests) and starts piles with make_pile(); a failing test prints the pile's
console.  Helpers here drive a pile through its real interfaces only: MQTT through the
platform simulator, hardware through the bench port.
"""
import os
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

from broker import Broker  # noqa: E402
from pile_proc import PileProcess  # noqa: E402
from platform_sim import PlatformSim  # noqa: E402

DEV = "HCS220922001000"
MODEL = dict(ele_model_id="M1", time_seg=["0000", "0800", "1200"], seg_flag=[13, 11, 12],
             charge_fee=[10000, 50000, 20000, 10000], serviceFee=[20000, 20000, 20000, 10000])


@pytest.fixture
def broker(tmp_path):
    b = Broker(str(tmp_path / "broker"))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def platform(broker):
    sim = PlatformSim(broker).start()
    yield sim
    sim.stop()


@pytest.fixture
def make_pile(tmp_path, platform, request):
    piles = []

    def make(name="pile", start=True, provision_url=None, **kw):
        kw.setdefault("provision_url", provision_url or platform.provision_url)
        p = PileProcess(str(tmp_path / name), **kw)
        piles.append(p)
        if start:
            p.start()
        return p

    yield make
    failed = getattr(request.node, "rep_call", None)
    for p in piles:
        p.stop()
        if failed is not None and failed.failed:
            print("\n--- console of %s ---\n%s" % (p.dir, p.output()[-8000:]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call = rep


def online(platform, pile=None, dev=DEV, timeout=20, since=None):
    """Wait until the pile has announced itself (verInfoEvt); return that record."""
    return platform.wait_for(dev, "verInfoEvt", timeout=timeout, since=since)


def give_model(platform, dev=DEV, **over):
    model = dict(MODEL, **over)
    mark = platform.mark()
    platform.set_fee_model(dev, model["ele_model_id"], model["time_seg"], model["seg_flag"],
                           model["charge_fee"], model["serviceFee"])
    return platform.wait_for(dev, "feeModelUpdateSrv_reply", since=mark)


def charging(platform, pile, trade="T1", dev=DEV, **start):
    """Plug in, start from the platform, wait for charging; return startChaResEvt body."""
    pile.bench({"cmd": "plug"})
    pile.wait_state(lambda s: s["cp_level"] == "B" or s["cp_level"] == "C")
    time.sleep(0.1)
    mark = platform.mark()
    platform.start_charge(dev, trade, **start)
    res = platform.wait_for(dev, "startChaResEvt", since=mark, timeout=15)
    return res["msg"]["body"]
