"""pile.feemodel: vetting a compact fee model; pile.fees: band lookup, local minute and the
money rule (PROTOCOL.md section 5: integers, a band's cost from its whole energy,
truncated; totals are sums of the bands).  Runs inside MicroPython.  The wire body's
checks (feeModelUpdateSrv) are pile.protocol's: tests/unit/test_protocol.py."""
from pile import feemodel, fees

SEED_MODEL = {"id": "1223213", "starts": [623, 750, 870], "bands": [0, 1, 2],
              "power": [10000, 50000, 20000, 10000],
              "service": [20000, 20000, 20000, 10000]}


def test_seed_model_is_sound():
    assert feemodel.check(SEED_MODEL) is None
    one = {"id": "x" * 64, "starts": [0], "bands": [3], "power": [0] * 4, "service": [0] * 4}
    assert feemodel.check(one) is None
    full = {"id": "x", "starts": [0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100,
                                  1200, 1439], "bands": [0, 1, 2, 3] * 3 + [0, 3],
            "power": [0, 1, 2, 1 << 30], "service": [0] * 4}
    assert feemodel.check(full) is None


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
        corrupt("id", None), corrupt("id", ""), corrupt("id", 5), corrupt("id", "x" * 65),
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


def test_seed_order_by_hand():
    # the seed's orderUpdateEvt: sharp 21 (0.021 kWh), 1085 power and 1085 service,
    # consistent with 21.7 Wh at 5.0000 yuan/kWh for both
    e, power, service = [21700, 0, 0, 0], [50000, 0, 0, 0], [50000, 0, 0, 0]
    assert [fees.cost(e[b], power[b]) for b in range(4)] == [1085, 0, 0, 0]
    assert fees.wh(e) == 21
    assert fees.money(e, power) == 1085 and fees.money(e, service) == 1085
    assert fees.money(e, power) + fees.money(e, service) == 2170      # total_cost


def test_mixed_bands_by_hand():
    # seed model prices: power 1.0/5.0/2.0/1.0, service 2.0/2.0/2.0/1.0 yuan/kWh
    e = [1234567, 2000999, 0, 5555555]   # mWh: 1.234567, 2.000999, 0, 5.555555 kWh
    m = SEED_MODEL
    # 1234567 * 10000 // 10**6 = 12345 ; * 20000 -> 24691
    assert (fees.cost(e[0], m["power"][0]), fees.cost(e[0], m["service"][0])) == (12345, 24691)
    # 2000999 * 50000 // 10**6 = 100049 ; * 20000 -> 40019
    assert (fees.cost(e[1], m["power"][1]), fees.cost(e[1], m["service"][1])) == (100049, 40019)
    assert (fees.cost(e[2], m["power"][2]), fees.cost(e[2], m["service"][2])) == (0, 0)
    # 5555555 * 10000 // 10**6 = 55555 (both)
    assert (fees.cost(e[3], m["power"][3]), fees.cost(e[3], m["service"][3])) == (55555, 55555)
    assert fees.wh(e) == 1234 + 2000 + 0 + 5555
    assert fees.money(e, m["power"]) == 12345 + 100049 + 55555
    assert fees.money(e, m["service"]) == 24691 + 40019 + 55555


def test_band_cost_uses_full_energy():
    # 999 mWh reports 0 Wh, yet costs 0.0009 yuan at 1 yuan/kWh
    e = [999, 999, 999, 999]
    assert fees.cost(999, 10000) == 9 and 999 // 1000 == 0
    assert fees.money(e, [10000] * 4) == 36
    # the energy total is the sum of the truncated bands (0), not 3996 // 1000 (3)
    assert fees.wh(e) == 0
    assert fees.wh([1999, 999, 0, 2500]) == 3       # 1 + 0 + 0 + 2, not 5498 // 1000 = 5


def test_money_without_prices_is_zero():
    assert fees.money([10 ** 9, 1, 2, 3], None) == 0
    assert fees.money([0, 0, 0, 0], [50000] * 4) == 0


def test_large_session_integers():
    e = [10 ** 9, 2 * 10 ** 9, 3 * 10 ** 9, 4 * 10 ** 9]   # 1000..4000 kWh
    m = SEED_MODEL
    assert fees.wh(e) == 10 ** 7 and type(fees.wh(e)) is int
    p, s = fees.money(e, m["power"]), fees.money(e, m["service"])
    assert type(p) is int and type(s) is int
    assert p == (10000 + 100000 + 60000 + 40000) * 1000
    assert s == (20000 + 40000 + 60000 + 40000) * 1000
