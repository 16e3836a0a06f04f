"""Board files: every file under boards/ validates; broken ones name the bad key (MicroPython).

The harness runs with the repository root as the current directory.
"""
import json
import os

from pile import boardfile


def _boards():
    out = []
    for name in sorted(os.listdir("boards")):
        try:
            with open("boards/%s/board.json" % name) as f:
                out.append((name, json.load(f)))
        except OSError:
            pass
    return out


def _copy(cfg):
    return json.loads(json.dumps(cfg))


def _errors(edit, board="pile7kw"):
    cfg = dict(_boards())[board]
    cfg = _copy(cfg)
    edit(cfg)
    return boardfile.validate(cfg)


def test_every_board_file_validates():
    boards = _boards()
    names = [n for n, _ in boards]
    assert "sim" in names and "devkitc" in names and "pile7kw" in names, names
    for name, cfg in boards:
        assert boardfile.validate(cfg) == [], (name, boardfile.validate(cfg))
        assert cfg["name"] == name
        if name != "sim":
            assert "pins" in cfg and cfg.get("arch", "xtensawin") == "xtensawin"


def test_pile7kw_is_the_seed_pile():
    cfg = dict(_boards())["pile7kw"]
    ident, rate = cfg["identity"], cfg["ratings"]
    assert ident["vendor_code"] == 17228 and ident["dev_type"] == 10
    assert ident["mea_type"] == 13 and ident["port_num"] == 1
    assert ident["stake_model"] == "CL5899"
    assert rate["ot_rate"] == 70 and rate["ot_cur"] == 320 and rate["nominal_v"] == 220
    assert rate["ot_min_vol"] < 2200 < rate["ot_max_vol"]


def _set(path, value):
    def edit(cfg):
        sec, key = path.split(".")
        cfg[sec][key] = value
    return edit


def _drop(path):
    def edit(cfg):
        sec, _, key = path.partition(".")
        if key:
            del cfg[sec][key]
        else:
            del cfg[sec]
    return edit


def test_broken_values_name_the_key():
    cases = [
        (_set("ratings.ot_cur", 900), "ratings.ot_cur: expected int 60..800"),
        (_set("ratings.ot_cur", "320"), "ratings.ot_cur: expected int 60..800"),
        (_set("ratings.ot_cur", 320.0), "ratings.ot_cur: expected int 60..800"),
        (_set("identity.dev_type", True), "identity.dev_type: expected int 10..12"),
        (_set("identity.stake_model", ""), "identity.stake_model: expected string of length"),
        (_set("cal.v_offset", 4096), "cal.v_offset: expected int 0..4095"),
        (_set("cal.i_ua", 0), "cal.i_ua:"),
        (_set("pins.relay", -1), "pins.relay: expected int 0..48"),
        (_set("pins.estop", 99), "pins.estop: expected int -1..48"),
        (_set("active.relay", 2), "active.relay: expected int 0..1"),
        (_set("cp.reads", 2), "cp.reads:"),
        (_set("ntc.top", 3), "ntc.top:"),
        (_set("hw.mains_hz", 0), "hw.mains_hz:"),
        (_set("protection.t_stop_c", 85.5), "protection.t_stop_c:"),
        (_drop("cal.v_uv"), "cal.v_uv: missing"),
        (_drop("cp"), "cp: missing"),
        (_drop("identity"), "identity: missing"),
        (_set("pins.lock", 26), "pins: one GPIO assigned twice"),
        (_set("ratings.ot_max_vol", 2100), "ratings.ot_min_vol, ot_max_vol"),
    ]
    for edit, want in cases:
        if want.startswith("protection"):
            errs = _errors(lambda c: c.update(protection={"t_stop_c": 85.5}))
        else:
            errs = _errors(edit)
        assert errs and any(e.startswith(want) for e in errs), (want, errs)


def test_sections_must_be_objects():
    errs = _errors(lambda c: c.update(ratings=[1, 2]))
    assert errs == ["ratings: expected an object"], errs
    assert boardfile.validate([]) == ["board file: expected a JSON object"]
    assert boardfile.validate(None) == ["board file: expected a JSON object"]


def test_hardware_sections_only_for_hardware():
    # the simulated board needs no pins; a board with pins needs all of them
    assert _errors(lambda c: None, "sim") == []
    errs = _errors(lambda c: c.update(pins={"relay": 5}), "sim")
    assert "pins.cp_pwm: missing" in errs and "ntc: missing" in errs, errs
    errs = _errors(lambda c: c.update(arch=7), "sim")
    assert errs == ["arch: expected string of length 1..16"], errs


def test_main_refuses_a_broken_board_file():
    import main
    cfg = _copy(dict(_boards())["pile7kw"])
    cfg["ratings"]["ot_cur"] = 5
    path = "/tmp/test_boardfile_%d.json" % os.getpid() if hasattr(os, "getpid") else \
        "/tmp/test_boardfile.json"
    with open(path, "w") as f:
        json.dump(cfg, f)
    try:
        assert main.main(["main.py", "--board", path, "--config", "/nonexistent"]) is None
        import sys
        assert "pile.boardfile" not in sys.modules       # dropped after the check
    finally:
        os.remove(path)


ESP32_11DB = {"min_mv": 150, "max_mv": 3100, "min_code": 0, "max_code": 4095}


def test_adc_section_is_the_esp32_at_11_db():
    """Every ESP32 board file says what its ADC reads: the ESP32's defaults at 11 dB.  The
    section may be left out, for the same values: the sim's board file does (its 12-bit
    ADC clips at the default codes; its 0.4 KB of heap is spared)."""
    for name, cfg in _boards():
        assert cfg.get("adc") == (None if name == "sim" else ESP32_11DB), (name, cfg)
    assert _errors(_drop("adc")) == []
    assert boardfile.CP_MV == __import__("pile.pilot").pilot.CP_MAX_MV == 13500


def test_adc_section_checked():
    cases = [
        (_set("adc.min_mv", -1), "adc.min_mv: expected int 0..1000"),
        (_set("adc.max_mv", 3100.0), "adc.max_mv: expected int 500..5000"),
        (_set("adc.max_code", 4096), "adc.max_code: expected int 0..4095"),
        (_set("adc.min_mv", 900), None),
        (lambda c: c["adc"].update(min_mv=1000, max_mv=900),
         "adc.min_mv, max_mv: min_mv must be below max_mv"),
        (_set("adc.min_code", 4095), "adc.min_code, max_code: min_code must be below"),
        # the +-13.5 V a CP can plausibly show must read inside the codes: a divider of
        # 6 mV a count puts -13.5 V at code 1613 - 2250 < 0, where the ADC reads nothing
        (_set("cp.uv", 6000), "cp.offset, uv: CP -13500..+13500 mV must read inside adc "
                              "codes 0..4095"),
        (_set("adc.min_code", 100), "cp.offset, uv: CP -13500..+13500 mV must read inside "
                                    "adc codes 100..4095"),
        (_set("cp.offset", 2600), "cp.offset, uv: "),
        (_set("ntc.vref_mv", 1000), None),
        (lambda c: c["adc"].update(min_mv=1000, max_mv=2000) or c["ntc"].update(vref_mv=1000),
         "ntc.vref_mv: must be above adc.min_mv"),
    ]
    for edit, want in cases:
        errs = _errors(edit)
        if want is None:
            assert errs == [], errs
        else:
            assert errs and errs[0].startswith(want), (want, errs)
    errs = _errors(lambda c: c.update(adc=[150, 3100]))
    assert errs == ["adc: expected an object"], errs
    # the reference divider: -13.5 V reads at about code 78, +13.5 V at 3148
    cp = dict(_boards())["pile7kw"]["cp"]
    assert cp["offset"] - 13500000 // cp["uv"] == 78 and \
        cp["offset"] + 13500000 // cp["uv"] == 3148
