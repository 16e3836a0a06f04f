"""Shared fixtures of the MicroPython unit tests (imported by them, not a test module).

fresh_dir() gives each test its own storage directory under /tmp (directories of runs
more than an hour old are removed); BOARD is the simulated board file; MODEL a valid
feeModelUpdateSrv body; cfg() the firmware defaults with overrides.
"""
import json
import os
import random
import time

TOP = "/tmp/pile-unit"

with open("boards/sim/board.json") as _f:
    BOARD = json.load(_f)

MODEL = {"ele_model_id": "M1", "time_num": 3, "time_seg": ["0000", "0800", "1200"],
         "seg_flag": [13, 11, 12], "charge_fee": [10000, 50000, 20000, 10000],
         "serviceFee": [20000, 20000, 20000, 10000]}


def rm_tree(d):
    for name in os.listdir(d):
        try:
            os.remove(d + "/" + name)
        except OSError:
            rm_tree(d + "/" + name)
    os.rmdir(d)


def fresh_dir():
    """A new empty directory; also sweeps away those older than an hour."""
    try:
        os.mkdir(TOP)
    except OSError:
        pass
    for name in os.listdir(TOP):
        try:
            if os.stat(TOP + "/" + name)[8] < time.time() - 3600:
                rm_tree(TOP + "/" + name)
        except OSError:
            pass
    d = TOP + "/%d" % random.getrandbits(30)
    os.mkdir(d)
    return d


def cfg(**over):
    from pile import config
    out = dict(config.DEFAULTS)
    out.update(over)
    return out
