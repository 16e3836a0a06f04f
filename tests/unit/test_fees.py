"""pile.feemodel: fee model validation; pile.fees: band lookup, money rule."""
from pile import feemodel, fees


def seed_body():
    """The body of the seed's feeModelUpdateSrv example."""
    return {
        "ele_model_id": "1223213",
        "time_num": 3,
        "time_seg": ["1023", "1230", "1430"],
        "seg_flag": [10, 11, 12],
        "charge_fee": [10000, 50000, 20000, 10000],
        "serviceFee": [20000, 20000, 20000, 10000],
    }


SEED_MODEL = {"id": "1223213", "starts": [623, 750, 870], "bands": [0, 1, 2],
              "power": [10000, 50000, 20000, 10000],
              "service": [20000, 20000, 20000, 10000]}


def test_parse_seed():
    model, why = feemodel.parse(seed_body())
    assert why is None, why
    assert model == SEED_MODEL, model
    assert feemodel.check(model) is None


def test_parse_full_day_14_segments():
    b = seed_body()
    b["time_num"] = 14
    b["time_seg"] = ["%02d00" % h for h in range(0, 24, 2)] + ["2300", "2359"]
    b["seg_flag"] = [10, 11, 12, 13] * 3 + [10, 13]
    model, why = feemodel.parse(b)
    assert why is None, why
    assert model["starts"][-1] == 1439 and model["bands"][-1] == 3


def test_parse_copies_prices():
    b = seed_body()
    model, _ = feemodel.parse(b)
    b["charge_fee"][0] = 1
    assert model["power"][0] == 10000


BAD = (
    # (field, bad value, word that must appear in the reason); None deletes the field
    ("ele_model_id", None, "ele_model_id"),
    ("ele_model_id", "", "ele_model_id"),
    ("ele_model_id", 1223213, "ele_model_id"),
    ("time_num", None, "time_num"),
    ("time_num", 0, "time_num"),
    ("time_num", 15, "time_num"),
    ("time_num", 2, "time_seg"),          # lengths no longer agree
    ("time_num", True, "time_num"),
    ("time_num", "3", "time_num"),
    ("time_num", 3.0, "time_num"),
    ("time_seg", None, "time_seg"),
    ("time_seg", "1023,1230,1430", "time_seg"),
    ("time_seg", ["1023", "1230"], "time_seg"),
    ("time_seg", ["1023", "1230", "1430", "1500"], "time_seg"),
    ("time_seg", ["1023", "1230", "2400"], "time_seg[2]"),
    ("time_seg", ["1023", "1260", "1430"], "time_seg[1]"),
    ("time_seg", ["123", "1230", "1430"], "time_seg[0]"),
    ("time_seg", ["10:3", "1230", "1430"], "time_seg[0]"),
    ("time_seg", ["1023", "12a0", "1430"], "time_seg[1]"),
    ("time_seg", ["1023", "-230", "1430"], "time_seg[1]"),
    ("time_seg", [1023, 1230, 1430], "time_seg[0]"),
    ("time_seg", ["1230", "1023", "1430"], "time_seg[1]"),   # not ascending
    ("time_seg", ["1023", "1230", "1230"], "time_seg[2]"),   # not strictly
    ("seg_flag", None, "seg_flag"),
    ("seg_flag", [10, 11], "seg_flag"),
    ("seg_flag", [10, 11, 12, 13], "seg_flag"),
    ("seg_flag", [9, 11, 12], "seg_flag[0]"),
    ("seg_flag", [10, 14, 12], "seg_flag[1]"),
    ("seg_flag", [10, 11, True], "seg_flag[2]"),
    ("seg_flag", [10, 11, "12"], "seg_flag[2]"),
    ("seg_flag", [10, 11, 12.0], "seg_flag[2]"),
    ("charge_fee", None, "charge_fee"),
    ("charge_fee", [1, 2, 3], "charge_fee"),
    ("charge_fee", [1, 2, 3, 4, 5], "charge_fee"),
    ("charge_fee", {"a": 1}, "charge_fee"),
    ("charge_fee", [1, 2, -3, 4], "charge_fee[2]"),
    ("charge_fee", [1, 2, 3, 4.5], "charge_fee[3]"),
    ("charge_fee", [True, 2, 3, 4], "charge_fee[0]"),
    ("charge_fee", [1, "2", 3, 4], "charge_fee[1]"),
    ("serviceFee", None, "serviceFee"),
    ("serviceFee", [1, 2, 3], "serviceFee"),
    ("serviceFee", [1, 2, 3, -1], "serviceFee[3]"),
    ("serviceFee", [1, None, 3, 4], "serviceFee[1]"),
)


def test_parse_rejects_every_bad_field():
    for field, value, word in BAD:
        b = seed_body()
        if value is None:
            del b[field]
        else:
            b[field] = value
        model, why = feemodel.parse(b)
        assert model is None, (field, value)
        assert type(why) is str and word in why, (field, value, why)


def test_parse_rejects_non_object():
    for body in (None, [], "x", 3):
        model, why = feemodel.parse(body)
        assert model is None and "body" in why


def test_reason_is_short_for_huge_values():
    b = seed_body()
    b["time_seg"] = ["x" * 5000, "1230", "1430"]
    _, why = feemodel.parse(b)
    assert "time_seg[0]" in why and len(why) < 80, why


def corrupt(key, value):
    m = dict(SEED_MODEL)
    if value is None:
        del m[key]
    else:
        m[key] = value
    return m


def test_check_corrupted_models():
    cases = (
        None, [], "model",
        corrupt("id", None), corrupt("id", ""), corrupt("id", 5),
        corrupt("starts", None), corrupt("starts", []), corrupt("starts", list(range(15))),
        corrupt("starts", [623, 623, 870]), corrupt("starts", [750, 623, 870]),
        corrupt("starts", [623, 750, 1440]), corrupt("starts", [-1, 750, 870]),
        corrupt("starts", [623, 750, "870"]), corrupt("starts", [623, 750, True]),
        corrupt("bands", None), corrupt("bands", [0, 1]), corrupt("bands", [0, 1, 4]),
        corrupt("bands", [0, 1, -1]), corrupt("bands", [0, 1, False]),
        corrupt("power", None), corrupt("power", [1, 2, 3]), corrupt("power", [1, 2, 3, -4]),
        corrupt("service", None), corrupt("service", [1, 2, 3, 4.0]),
        corrupt("service", (1, 2, 3, 4)),
    )
    for m in cases:
        why = feemodel.check(m)
        assert type(why) is str and why, m


def test_band_at_seed_model():
    m = SEED_MODEL  # 10:23 sharp, 12:30 peak, 14:30 flat (till 10:23 next day)
    table = (
        (0, 2), (622, 2),        # before the first start: the last segment (wraps)
        (623, 0), (749, 0),      # exact boundary starts the segment
        (750, 1), (869, 1),
        (870, 2), (1439, 2),
        (1440, 2), (1440 + 623, 0), (-1, 2),   # any minute is taken modulo a day
    )
    for minute, want in table:
        assert fees.band_at(m, minute) == want, (minute, fees.band_at(m, minute))


def test_band_at_single_segment_and_midnight_start():
    one = {"id": "x", "starts": [600], "bands": [3], "power": [0] * 4, "service": [0] * 4}
    for minute in (0, 599, 600, 1439):
        assert fees.band_at(one, minute) == 3
    m = {"id": "x", "starts": [0, 480, 1320], "bands": [3, 1, 2],
         "power": [0] * 4, "service": [0] * 4}
    for minute, want in ((0, 3), (479, 3), (480, 1), (1319, 1), (1320, 2), (1439, 2)):
        assert fees.band_at(m, minute) == want, minute


def test_local_minute():
    table = (
        (0, 480, 480),                    # 1970-01-01 00:00 UTC = 08:00 UTC+8
        (0, 0, 0),
        (59999, 0, 0), (60000, 0, 1),
        (1662649016130, 480, 1376),       # 2022-09-08 14:56:56 UTC = 22:56 local
        (1662649016130, 0, 896),
        (16 * 3600000, 480, 0),           # 16:00 UTC is local midnight
        (16 * 3600000 - 1, 480, 1439),
        (0, -300, 1140),                  # UTC-5
    )
    for ms, tz, want in table:
        assert fees.local_minute(ms, tz) == want, (ms, tz, fees.local_minute(ms, tz))
    assert fees.local_minute(1662649016130) == 1376


def test_cost_truncates():
    table = (
        (0, 50000, 0),
        (21700, 50000, 1085),        # 0.0217 kWh at 5 yuan/kWh = 0.1085 yuan
        (21719, 50000, 1085),        # 1085.95 truncated
        (999, 10000, 9),             # 0.000999 kWh at 1 yuan: 0.000999 -> 0.0009
        (56000000, 12345, 691320),   # 56 kWh at 1.2345 yuan/kWh = 69.132 yuan
        (1, 999999, 0),
    )
    for e, price, want in table:
        assert fees.cost(e, price) == want, (e, price, fees.cost(e, price))


FIELDS = ["total_elect", "total_power_cost", "total_serv_cost", "total_cost"]
for _b in ("sharp", "peak", "flat", "valley"):
    FIELDS += [_b + "_elect", _b + "_power_cost", _b + "_serv_cost"]


def test_bill_reproduces_seed_order():
    # the seed's orderUpdateEvt: sharp 21 (0.021 kWh), 1085 power and 1085 service,
    # consistent with 21.7 Wh at 5.0000 yuan/kWh for both
    m = {"id": "130882763317428226", "starts": [0], "bands": [0],
         "power": [50000, 0, 0, 0], "service": [50000, 0, 0, 0]}
    r = fees.bill([21700, 0, 0, 0], m)
    assert sorted(r) == sorted(FIELDS), sorted(r)
    want = {"sharp_elect": 21, "sharp_power_cost": 1085, "sharp_serv_cost": 1085,
            "peak_elect": 0, "peak_power_cost": 0, "peak_serv_cost": 0,
            "flat_elect": 0, "flat_power_cost": 0, "flat_serv_cost": 0,
            "valley_elect": 0, "valley_power_cost": 0, "valley_serv_cost": 0,
            "total_elect": 21, "total_power_cost": 1085, "total_serv_cost": 1085,
            "total_cost": 2170}
    assert r == want, r


def test_bill_mixed_bands_by_hand():
    # seed model prices: power 1.0/5.0/2.0/1.0, service 2.0/2.0/2.0/1.0 yuan/kWh
    e = [1234567, 2000999, 0, 5555555]   # mWh: 1.234567, 2.000999, 0, 5.555555 kWh
    r = fees.bill(e, SEED_MODEL)
    assert (r["sharp_elect"], r["peak_elect"], r["flat_elect"], r["valley_elect"]) == \
        (1234, 2000, 0, 5555)
    # 1234567 * 10000 // 10**6 = 12345 ; * 20000 -> 24691
    assert (r["sharp_power_cost"], r["sharp_serv_cost"]) == (12345, 24691)
    # 2000999 * 50000 // 10**6 = 100049 ; * 20000 -> 40019
    assert (r["peak_power_cost"], r["peak_serv_cost"]) == (100049, 40019)
    assert (r["flat_power_cost"], r["flat_serv_cost"]) == (0, 0)
    # 5555555 * 10000 // 10**6 = 55555 (both)
    assert (r["valley_power_cost"], r["valley_serv_cost"]) == (55555, 55555)
    assert r["total_elect"] == 1234 + 2000 + 5555
    assert r["total_power_cost"] == 12345 + 100049 + 55555
    assert r["total_serv_cost"] == 24691 + 40019 + 55555
    assert r["total_cost"] == r["total_power_cost"] + r["total_serv_cost"]


def test_band_cost_uses_full_energy():
    # 999 mWh reports 0 Wh, yet costs 0.0009 yuan at 1 yuan/kWh
    m = {"id": "x", "starts": [0], "bands": [2], "power": [10000] * 4,
         "service": [0] * 4}
    r = fees.bill([999, 999, 999, 999], m)
    assert r["flat_elect"] == 0 and r["flat_power_cost"] == 9
    assert r["total_power_cost"] == 36
    # total_elect is the sum of the reported band values (0), not 3996 // 1000 (3)
    assert r["total_elect"] == 0


def test_bill_large_session_integers():
    e = [10 ** 9, 2 * 10 ** 9, 3 * 10 ** 9, 4 * 10 ** 9]   # 1000..4000 kWh
    r = fees.bill(e, SEED_MODEL)
    assert r["total_elect"] == 10 ** 7
    for k in FIELDS:
        assert type(r[k]) is int, k
    assert r["total_power_cost"] == (10000 + 100000 + 60000 + 40000) * 1000
