"""pile.metering against the real simulated board (hal.sim.Board, run in MicroPython).

The board's ADC has a TRUE scale and offsets (boards/sim/board.json "sim") unlike the
nominal calibration "cal" the firmware starts with.  The sim's mains voltage, current
and power factor play the reference meter: calibration sets gain = old x reference /
reading, as tools/calibrate.py does on the bench.  Ground truth energy is V x I x pf
over the same board time the firmware integrated.
"""
import json
import os
import random
import time

from hal import sim
from pile import config, log, store
from pile.metering import FILE, Metering
from kit import fresh_dir

log.echo = False
with open("boards/sim/board.json") as f:
    BOARD = json.load(f)


def _dir():
    """A fresh storage dir, made the firmware's storage root."""
    store.root = fresh_dir()
    return store.root

def _cfg(**over):
    cfg = dict(config.DEFAULTS)
    cfg.update(over)
    return cfg


def _board(speed=1000):
    """The sim board charging: plugged, locked, PWM on, relay closed."""
    b = sim.Board(BOARD, {"storage": _dir(), "speed": speed})
    b.bench({"cmd": "plug"})
    b.bench({"cmd": "car", "greedy": True})
    b.cp_set(53)
    b.lock_set(True)
    t = time.ticks_ms()
    while not b.lock_feedback():
        assert time.ticks_diff(time.ticks_ms(), t) < 2000
        time.sleep_ms(1)
    b.relay_set(True)
    assert b.violation_count == 0, b.violations
    return b


def _set(b, amps, pf, volts=230):
    b.bench({"cmd": "car", "demand_a": amps})
    b.bench({"cmd": "mains", "v": volts, "pf": pf})
    assert b.current_a() == amps


def _board_cfg(cal):
    bc = dict(BOARD)
    bc["cal"] = cal
    return bc


def _energy_error(b, cal, n=1000):
    """Relative error of the metered energy against V x I x pf over the same board time."""
    m = Metering(b, _board_cfg(cal), _cfg())
    m.sample()                       # the first sample only starts the clock
    t0, e0 = m.last, m.register()    # (the register goes on from earlier runs' file)
    for _ in range(n):
        m.sample()
    ms = time.ticks_diff(m.last, t0)
    w = b.w
    truth = w["v"] * b.current_a() * w["pf"] * ms / 3600.0     # mWh
    got = m.register() - e0 + m.energy.rem / 3600000.0
    return (got - truth) / truth, got, ms


def _calibrated(b):
    """Gains from the reference (the sim's own V and I): new = old x reference / reading."""
    cal = dict(BOARD["cal"])
    _set(b, 16, 1.0)
    m = Metering(b, _board_cfg(cal), _cfg())
    sv = si = 0
    for _ in range(200):
        m.sample()
        sv += m.mv
        si += m.ma
    cal["v_uv"] = (cal["v_uv"] * 230000 * 200 + sv // 2) // sv
    cal["i_ua"] = (cal["i_ua"] * 16000 * 200 + si // 2) // si
    return cal


def test_energy_within_half_percent_after_calibration():
    b = _board()
    nominal = dict(BOARD["cal"])
    _set(b, 32, 1.0)
    before, _, _ = _energy_error(b, nominal)
    # the nominal gains read 1.5 % low on volts and 2 % high on amps: about +0.53 % energy
    assert 0.004 < before < 0.007, before
    cal = _calibrated(b)
    sim_cfg = BOARD["sim"]
    assert abs(cal["v_uv"] - sim_cfg["v_uv"]) < sim_cfg["v_uv"] * 0.002, cal
    assert abs(cal["i_ua"] - sim_cfg["i_ua"]) < sim_cfg["i_ua"] * 0.002, cal
    worst = 0
    for amps in (6, 8, 10, 13, 16, 20, 25, 32):
        for pf in (1.0, 0.9):
            _set(b, amps, pf)
            err, got, ms = _energy_error(b, cal)
            assert got > 5000, (got, ms)     # 1 mWh of truncation is under 0.02 %
            assert abs(err) < 0.005, (amps, pf, err)
            worst = max(worst, abs(err))
    print("worst energy error after calibration: %.3f %%" % (worst * 100))


def test_rms_and_power_after_calibration():
    b = _board()
    cal = _calibrated(b)
    m = Metering(b, _board_cfg(cal), _cfg())
    for amps, pf, volts in ((6, 0.9, 207), (32, 1.0, 253), (20, 0.9, 230)):
        _set(b, amps, pf, volts)
        sv = si = sp = 0
        for _ in range(50):
            m.sample()
            sv += m.mv
            si += m.ma
            sp += m.mw
        assert abs(sv / 50 - volts * 1000) < volts * 1000 * 0.005, (sv / 50, volts)
        assert abs(si / 50 - amps * 1000) < amps * 1000 * 0.005, (si / 50, amps)
        p = volts * amps * pf * 1000
        assert abs(sp / 50 - p) < p * 0.005, (sp / 50, p)


def test_idle_pile_counts_no_energy_and_writes_nothing():
    b = _board()
    b.relay_set(False)                  # mains on, no current: noise and offset errors
    m = Metering(b, BOARD, _cfg(register_save_s=0))
    for _ in range(300):
        assert m.sample() == 0
    assert m.register() == 0
    assert FILE not in os.listdir(store.root)


def test_register_survives_reboot_and_is_saved_rarely():
    b = _board(speed=1000)
    _set(b, 32, 1.0)
    cfg = _cfg()
    m = Metering(b, BOARD, cfg)
    saves = []
    real = store.save

    def spy(name, obj):
        saves.append(obj["mwh"])
        return real(name, obj)
    store.save = spy
    try:
        while m.register() < 1000000:   # 1 kWh at 7.4 kW
            m.sample()
    finally:
        store.save = real
    # every 0.1 kWh or 60 s of board time, whichever first: 7.4 kW makes 0.1 kWh in 49 s
    assert 9 <= len(saves) <= 11, saves
    for a, c in zip(saves, saves[1:]):
        assert 100000 <= c - a < 110000, saves
    last = saves[-1]
    m2 = Metering(b, BOARD, cfg)        # a reboot: the register goes on from the file
    assert m2.register() == last
    assert m.register() - last < 110000     # lost by a power cut: under 0.1 kWh + a step
    m2.raise_to(last - 5)               # never backwards
    assert m2.register() == last
    m2.raise_to(last + 7)               # an order that ended later raises it, saved
    assert Metering(b, BOARD, cfg).register() == last + 7
    m2.raise_to(0, True)                # a session end saves it in any case
    assert store.load(FILE) == {"mwh": last + 7}


def test_register_saved_after_60_s_of_slow_growth():
    b = _board(speed=1000)
    _set(b, 6, 1.0)
    m = Metering(b, BOARD, _cfg())
    t0 = b.ticks_ms()
    while time.ticks_diff(b.ticks_ms(), t0) < 61000:
        m.sample()
    saved = store.load(FILE)
    assert saved and 0 < saved["mwh"] < 100000, saved


def test_torn_register_file_falls_back_then_starts_at_zero():
    b = _board()
    cfg = _cfg()
    store.save(FILE, {"mwh": 1000})
    store.save(FILE, {"mwh": 2000})
    path = store.path(FILE)
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text[:len(text) // 2])          # torn: the previous generation is used
    assert Metering(b, BOARD, cfg).register() == 1000
    for bad in ("", "garbage\n", '00000000\n{"mwh": 5}', '%08x\n[1]'):
        store.remove(FILE)
        with open(path, "w") as f:
            f.write(bad)
        assert Metering(b, BOARD, cfg).register() == 0, bad
    store.save(FILE, {"mwh": -4})               # whole but unusable
    assert Metering(b, BOARD, cfg).register() == 0
