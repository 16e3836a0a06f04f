"""IEC 61851-1 control pilot logic, without any I/O (PROTOCOL.md section 7).

Owns: the state letter A..F read from the CP high plateau, the PWM duty that offers
a current limit, and the debounced state and diode check of one gun's pilot.  The
caller reads the HAL (cp_read) about every 10 ms and feeds the values to Pilot.update.

Levels (millivolts, thresholds at the midpoints between nominal plateaus):
    13500 >= A >= 10500 > B >= 7500 > C >= 4500 > D >= 1500 > E > -10500 >= F >= -13500
F is only a clear -12 V (same 1.5 V margin as the others); anything between the
E and F plateaus is E (error).  Beyond the +-12 V bands (CP_MAX_MV, the same 1.5 V past
the nominal plateau) no CP can be: the pile's own generator makes at most +-12 V, so such
a reading is a broken sense circuit or an ADC at its rail (the board file's CP divider
maps +-CP_MAX_MV inside the ADC's codes, pile.boardfile), and it is E as well: a CP
error, never a valid state.  The same holds for the low plateau: Pilot.update takes a low
level beyond +-CP_MAX_MV for E whatever the high one shows.
"""

# (lowest hi_mv of the band, letter), highest band first
_BANDS = ((10500, "A"), (7500, "B"), (4500, "C"), (1500, "D"), (-10499, "E"))
DIODE_MV = -10000  # the PWM low level must be below this while a vehicle is present
CP_MAX_MV = 13500  # no real CP plateau lies beyond +-this (pile.boardfile CP_MV)


def level(hi_mv):
    """The state letter 'A'..'F' for a CP high plateau in millivolts ('E' when beyond
    the plausible +-CP_MAX_MV)."""
    if not -CP_MAX_MV <= hi_mv <= CP_MAX_MV:
        return "E"
    for low, letter in _BANDS:
        if hi_mv >= low:
            return letter
    return "F"


def duty_for(limit_da):
    """PWM duty (int %) offering at most limit_da (0.1 A); None below 6 A.

    6..51 A: duty = A / 0.6; 51..80 A: duty = A / 2.5 + 64; both rounded down so the
    current the vehicle reads from the duty never exceeds the limit.  Above 80 A the
    duty stays at 96 % (80 A).
    """
    if limit_da < 60:
        return None
    if limit_da <= 510:
        return limit_da // 6
    # 85 % already means 51 A; the second formula only pays from 55 A (86 %) on
    return min(96, max(85, limit_da // 25 + 64))


def current_da(duty):
    """The current (0.1 A) a vehicle reads from a duty: the inverse of duty_for."""
    if duty < 10 or duty > 96:
        return None
    if duty <= 85:
        return duty * 6
    return (duty - 64) * 25


class Pilot:
    """Debounced pilot state and diode check.

    update(hi_mv, lo_mv, pwm_on) -> state letter (a read is E also when lo_mv is
    beyond +-CP_MAX_MV).  The state changes once `confirm` consecutive reads differ
    from it, and takes the latest read: a single odd read changes nothing, and a real
    change is seen after `confirm` reads even while the level bounces on its way
    (C -> B/A/B/A while the plug comes out leaves C in two reads; waiting for two equal
    reads would keep the relay closed for the whole bounce).  .state starts as 'A' (no
    vehicle).  .diode_ok turns False once `confirm` consecutive reads show PWM on, a
    vehicle present (raw B/C/D) and the low level above -10 V, and True again at the
    first read that does not.
    """

    def __init__(self, confirm=2):
        self.confirm = max(1, confirm)
        self.state = "A"
        self.raw = "A"
        self.diode_ok = True
        self._seen = 0      # consecutive reads unlike .state
        self._bad = 0

    def update(self, hi_mv, lo_mv, pwm_on):
        raw = level(hi_mv) if -CP_MAX_MV <= lo_mv <= CP_MAX_MV else "E"
        self.raw = raw
        if raw == self.state:
            self._seen = 0
        else:
            self._seen += 1
            if self._seen >= self.confirm:
                self.state = raw
                self._seen = 0
        if pwm_on and raw in "BCD" and lo_mv > DIODE_MV:
            self._bad += 1
        else:
            self._bad = 0
        self.diode_ok = self._bad < self.confirm
        return self.state
