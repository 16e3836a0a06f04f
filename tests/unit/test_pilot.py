"""pile.pilot: CP levels, duty table, debounce and diode check."""
from pile.pilot import CP_MAX_MV, Pilot, current_da, duty_for, level


def test_level_nominal():
    for mv, want in ((12000, "A"), (9000, "B"), (6000, "C"), (3000, "D"),
                     (0, "E"), (-12000, "F")):
        assert level(mv) == want, (mv, level(mv))


def test_level_thresholds():
    table = (
        (13500, "A"), (10500, "A"), (10499, "B"),
        (7500, "B"), (7499, "C"),
        (4500, "C"), (4499, "D"),
        (1500, "D"), (1499, "E"),
        (-6000, "E"), (-10499, "E"),  # between the E and F plateaus: error
        (-10500, "F"), (-13000, "F"), (-13500, "F"),
    )
    for mv, want in table:
        assert level(mv) == want, (mv, level(mv), want)


def test_duty_table():
    table = (
        (0, None), (-10, None), (59, None),   # below 6 A: cannot offer charging
        (60, 10), (100, 16), (130, 21),       # 6 A; 10 A -> 16.67 rounded down
        (160, 26), (320, 53),                 # 32 A -> 53 % as in the seed
        (509, 84), (510, 85),                 # 51 A
        (511, 85), (549, 85), (550, 86),      # 51 < A < 55: 85 % (51 A) is the best
        (630, 89), (800, 96), (1000, 96),     # 80 A and above: 96 %
    )
    for da, want in table:
        assert duty_for(da) == want, (da, duty_for(da), want)


def test_duty_never_exceeds_and_is_best():
    for da in range(60, 801):
        d = duty_for(da)
        assert current_da(d) <= da, (da, d)
        if d < 96:
            assert current_da(d + 1) > da, (da, d)


def feed(p, seq, lo=-12000, pwm=False):
    return [p.update(mv, lo, pwm) for mv in seq]


def test_starts_idle():
    p = Pilot()
    assert p.state == "A" and p.diode_ok


def test_glitch_ignored():
    p = Pilot()
    assert feed(p, [12000, 9000, 12000, 12000]) == ["A"] * 4
    # alternating glitches never settle
    assert feed(p, [9000, 12000] * 10) == ["A"] * 20


def test_change_seen_in_confirm_reads():
    for confirm in (1, 2, 3, 5):
        p = Pilot(confirm)
        got = feed(p, [9000] * confirm)
        assert got == ["A"] * (confirm - 1) + ["B"], (confirm, got)


def test_vehicle_leaves_c_within_two_reads():
    p = Pilot(2)
    feed(p, [6000, 6000])
    assert p.state == "C"
    assert feed(p, [9000, 9000]) == ["C", "B"]  # 20 ms at a 10 ms read interval


def test_fast_pass_through_levels_not_missed():
    p = Pilot(2)
    feed(p, [6000] * 3)
    # plug pulled while charging: the plateau sweeps C -> B -> A
    assert feed(p, [9000, 12000, 12000]) == ["C", "A", "A"]


def test_glitch_then_real_change():
    p = Pilot(2)
    # one odd read of E, then the vehicle really goes to B: two reads unlike A
    assert feed(p, [0, 9000, 9000]) == ["A", "B", "B"]


def test_bouncing_change_not_missed():
    p = Pilot(2)
    feed(p, [6000] * 3)
    # the plug comes out with a bouncing contact: never two equal reads in a row,
    # yet the vehicle has left C after two reads
    got = feed(p, [9000, 12000, 9000, 12000, 9000, 12000])
    assert got[0] == "C" and "C" not in got[1:], got
    feed(p, [12000] * 2)
    assert p.state == "A"
    # an alternating glitch around the state itself never changes it
    p = Pilot(2)
    feed(p, [6000] * 3)
    assert feed(p, [9000, 6000] * 5) == ["C"] * 10


def test_fault_levels_confirmed():
    p = Pilot(2)
    feed(p, [6000, 6000])
    assert feed(p, [0, 0]) == ["C", "E"]
    assert feed(p, [-12000, -12000]) == ["E", "F"]


def test_diode_check():
    p = Pilot(2)
    feed(p, [6000, 6000], lo=-12000, pwm=True)
    assert p.diode_ok
    p.update(6000, -6000, True)
    assert p.diode_ok            # one bad read is not enough
    p.update(6000, -6000, True)
    assert not p.diode_ok        # two in a row
    p.update(6000, -12000, True)
    assert p.diode_ok            # the diode is back
    p.update(6000, -6000, True)
    p.update(6000, -12000, True)
    p.update(6000, -6000, True)
    assert p.diode_ok            # not consecutive


def test_diode_check_needs_pwm_and_vehicle():
    p = Pilot(2)
    feed(p, [6000] * 4, lo=6000, pwm=False)      # no PWM: lo == hi, fine
    assert p.diode_ok
    p = Pilot(2)
    feed(p, [12000] * 4, lo=-5000, pwm=True)     # no vehicle (A)
    assert p.diode_ok
    p = Pilot(2)
    feed(p, [0] * 4, lo=-5000, pwm=True)         # E is no vehicle reading
    assert p.diode_ok
    for mv in (9000, 6000, 3000):
        p = Pilot(2)
        feed(p, [mv] * 2, lo=-9999, pwm=True)
        assert not p.diode_ok, mv
        p = Pilot(2)
        feed(p, [mv] * 2, lo=-10000, pwm=True)   # exactly -10 V passes
        assert p.diode_ok, mv


def test_level_beyond_the_12_v_bands_is_an_error():
    """No CP plateau lies beyond +-13.5 V (the +-12 V plateaus and the bands' 1.5 V): such
    a reading is a sense circuit or an ADC at its rail, an error, never A or F."""
    assert CP_MAX_MV == 13500
    for mv in (13501, 14000, 21816, 32767, -13501, -14179, -30000):
        assert level(mv) == "E", (mv, level(mv))


def test_cp_at_the_rail_settles_as_error():
    """The ESP32 board reads code 4095 (the ADC's top rail) as +21.8 V and code 0 as
    -14.2 V through the devkitc divider: both settle as E (a CP fault), not as A / F."""
    import json
    with open("boards/devkitc/board.json") as f:
        cp = json.load(f)["cp"]
    top = (4095 - cp["offset"]) * cp["uv"] // 1000
    bottom = (0 - cp["offset"]) * cp["uv"] // 1000
    assert top == 21816 and bottom == -14179, (top, bottom)
    for hi, lo in ((top, top), (bottom, bottom), (top, -12000)):
        p = Pilot(2)
        assert feed(p, [hi, hi], lo=lo) == ["A", "E"], (hi, lo)
    # the high plateau is a sound C, the low one beyond the rail: E too, while PWM runs
    p = Pilot(2)
    feed(p, [6000, 6000], lo=-12000, pwm=True)
    assert p.state == "C"
    assert feed(p, [6000, 6000], lo=bottom, pwm=True) == ["C", "E"]
    assert p.raw == "E" and p.diode_ok
    assert feed(p, [6000, 6000], lo=-12000, pwm=True) == ["E", "C"]
    # up to the edge of the bands it is still a valid state
    p = Pilot(2)
    assert feed(p, [13500, 13500], lo=-13500) == ["A", "A"] and p.raw == "A"


def test_cp_at_the_rail_during_a_charge_is_a_cp_fault():
    """The whole pile on the simulated board: the CP sense input goes to the ADC's top
    rail while charging (+21.8 V read, the vehicle still in C).  Read as A it would end
    the session as "gun pulled out" (1008) with a vehicle still drawing; it is a CP fault
    (3012): relay open, the session ended with 3012; it clears once the CP reads again."""
    from pile.gun import CHARGING
    from kit import Pile
    p = Pile(relay_min_open_s=0)
    p.bench("plug")
    p.step(100)
    p.deliver("startChargeSrv", {"gun_no": 1, "pre_trade_no": "R1", "charge_mode": 10})
    p.until(lambda: p.gun.state == CHARGING and p.board.contacts, 3000, "charging")
    p.step(100)
    p.bench("fault", name="cp_rail", on=True)
    assert p.board.cp_level() == "C"            # the line and the vehicle are sound
    p.step(10)
    assert not p.board.relay_cmd                # the first read unlike C/D opens it
    p.until(lambda: p.prot.codes() == [3012], 200, "the CP fault")   # cp_hold_ms
    assert p.gun.s is None and p.gun.pilot.state == "E" and p.gun.work_status() == 16
    reasons = [b["reason"] for _, b in p.events("orderUpdateEvt")]
    assert reasons and set(reasons) == {3012}, reasons
    assert p.board.violation_count == 0, p.board.violations
    p.bench("fault", name="cp_rail", on=False)
    p.until(lambda: not p.prot.active, 2000, "cleared")
    assert p.gun.pilot.state in "BC"
    p.close()
