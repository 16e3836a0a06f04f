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
