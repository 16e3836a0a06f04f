"""Board file check: validate(board_cfg) -> list of errors, each naming the bad key.

One table row per key, "key kind lo hi": kind "i" is an int in lo..hi, "s" a string of
lo..hi characters; upper case marks an optional key; a key "section.*" checks every value
of an optional section.  The hardware sections (pins, cp, ntc, hw) are required only for a
real board: when the file has "pins", or on the ESP32 itself.  The "sim" section belongs
to hal/sim.py and is not checked here.  main.py runs this once at boot and drops the
module again; tools/deploy.py and tools/calibrate.py run it on the host (plain Python for
both).  The table is one string, split while checking: loaded, the module takes 4.4 KB of
heap (a table of tuples took 9.6 KB); 0.7 KB of interned names stays after it is dropped.

"adc" (optional) says what the board's ADC can really read, at the attenuation the HAL
sets: min_mv..max_mv, the input range of its calibrated reads (read_uv), and min_code,
max_code, the raw 12-bit codes it returns at and beyond those limits (a code at or past
one of them is at a rail: the input may be anywhere beyond).  The defaults are the ESP32's
at 11 dB: 150..3100 mV (Espressif's range starts at 150 mV: an input below it reads the
chip's calibrated floor, about 75..150 mV, not 0; it saturates near 3.1 V), codes 0..4095.
Its users: the ESP32 HAL (an NTC read outside min_mv..max_mv is a broken sensor),
pile.metering (a burst with a sample at a rail code is clipped: no measurement), and the
check here that the CP sense divider maps the plausible CP range (+-CP_MV, pile.pilot's
CP_MAX_MV) strictly inside the codes, so that a CP read at a rail is implausible.
"""
import sys

HW = ("pins", "cp", "ntc", "hw")
RULES = """name s 1 32,arch S 1 16,identity.stake_model s 1 32,identity.vendor_code i 0 99999999,
identity.dev_type i 10 12,identity.port_num i 1 1,identity.mea_type i 10 14,
identity.ct i 1 100000,identity.grid_type i 10 12,identity.latitude i -90000000 90000000,
identity.longitude i -180000000 180000000,identity.height i -1000 10000,
identity.hardware_ver s 1 32,identity.dev_reg_method i 10 16,ratings.ot_rate i 10 500,
ratings.ot_cur i 60 800,ratings.ot_max_vol i 1000 5000,ratings.ot_min_vol i 500 5000,
ratings.cable_a i 6 80,ratings.nominal_v i 100 480,cal.v_offset i 0 4095,
cal.i_offset i 0 4095,cal.v_uv i 1000 10000000,cal.i_ua i 100 10000000,pins.cp_pwm i 0 48,
pins.cp_adc i 0 48,pins.v_adc i 0 48,pins.i_adc i 0 48,pins.relay i 0 48,
pins.relay_fb i -1 48,pins.lock i -1 48,pins.lock_fb i -1 48,pins.ntc_adc i -1 48,
pins.estop i -1 48,pins.leak i -1 48,pins.rcd_test i -1 48,pins.button i -1 48,
active.* I 0 1,cp.offset i 0 4095,cp.uv i 100 100000,cp.reads i 8 400,
ntc.beta i 1000 10000,ntc.r25 i 100 1000000,ntc.r_fixed i 100 1000000,
ntc.vref_mv i 1000 5000,ntc.top i 0 1,hw.mains_hz i 45 65,hw.cycles i 1 4,
hw.max_pairs i 32 2000,hw.rcd_ms i 10 500,protection.* I -100000000 100000000,
adc.min_mv I 0 1000,adc.max_mv I 500 5000,adc.min_code I 0 4095,adc.max_code I 0 4095"""
CP_MV = 13500   # pile.pilot.CP_MAX_MV: the plausible CP plateaus lie within +-CP_MV


def validate(cfg):
    if type(cfg) is not dict:
        return ["board file: expected a JSON object"]
    hw = "pins" in cfg or sys.platform == "esp32"
    errors = []
    for row in RULES.split(","):
        key, kind, lo, hi = row.split()
        lo, hi = int(lo), int(hi)
        sec, _, name = key.rpartition(".")
        need = kind.islower() and (hw or sec not in HW)
        node = cfg.get(sec) if sec else cfg
        if node is None and not need:
            continue
        if type(node) is not dict:
            why = sec + (": missing" if node is None else ": expected an object")
            if why not in errors:
                errors.append(why)
            continue
        if name == "*":
            items = node.items()
        elif name in node:
            items = ((name, node[name]),)
        else:
            if need:
                errors.append(key + ": missing")
            continue
        k = kind.lower()
        for n, x in items:
            size = len(x) if k == "s" and type(x) is str else x if k == "i" and type(x) is int \
                else None
            if size is None or not lo <= size <= hi:
                errors.append("%s%s: expected %s %d..%d" % (sec + "." if sec else "", n,
                              "int" if k == "i" else "string of length", lo, hi))
    if not errors:
        r = cfg["ratings"]
        if not r["ot_min_vol"] < r["nominal_v"] * 10 < r["ot_max_vol"]:
            errors.append("ratings.ot_min_vol, ot_max_vol: must enclose nominal_v")
        used = [p for p in cfg.get("pins", {}).values() if p >= 0]
        if len(set(used)) != len(used):
            errors.append("pins: one GPIO assigned twice")
        a = cfg.get("adc", {})
        lo, hi = a.get("min_code", 0), a.get("max_code", 4095)
        if not a.get("min_mv", 150) < a.get("max_mv", 3100):
            errors.append("adc.min_mv, max_mv: min_mv must be below max_mv")
        if not lo < hi:
            errors.append("adc.min_code, max_code: min_code must be below max_code")
        cp = cfg.get("cp")
        if cp and min(cp["offset"] - lo, hi - cp["offset"]) * cp["uv"] <= CP_MV * 1000:
            errors.append("cp.offset, uv: CP -%d..+%d mV must read inside adc codes %d..%d"
                          % (CP_MV, CP_MV, lo, hi))
        ntc = cfg.get("ntc")
        if ntc and not a.get("min_mv", 150) < ntc["vref_mv"]:
            errors.append("ntc.vref_mv: must be above adc.min_mv")
    return errors
