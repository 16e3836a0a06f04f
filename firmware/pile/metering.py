"""Metering: ADC bursts to volts, amps, watts and energy; the cumulative register.

sample(closed) takes one burst through the HAL (cooperative: the board samples in slices
with awaits between), measures it (pile.meter) and judges whether it can be true: a
burst whose voltage samples are all equal (no AC at all), whose voltage or current
mean is more than dc_counts from the calibrated offset (a dead, stuck or railed ADC), or
with any sample at a rail of the ADC (at or beyond the board file's adc min_code or
max_code, defaults 0 and 4095: clipped, so its RMS reads low by an unknown amount: mains
or current beyond the front end's range, or a broken channel) is `bad` -- but for the
current channel at its rails while the relay is closed, which is `over` (more current
than it can read: pile.gun hands protection a current beyond every limit).  The judgement
allocates nothing: at most six passes of built-ins over the arrays.  A bad burst reads
as no measurement at all (mv, ma, mw 0, `valid` False): it is neither reported nor
billed, and protection holds it as a meter failure.  Energy counts
only while the relay is closed (`closed`), from a plausible burst whose power is at
least meter_creep_mw (the no-load threshold: ADC noise and offset errors read about
0.2 W on an idle pile), so an idle register stands still and is not rewritten; sample()
returns the energy (mWh) it added, for the running session.

The register (mWh) survives reboots (meter.json: {"mwh", "ms": wall clock of the write}):
it is written when it has grown by register_save_mwh (0.1 kWh) or register_save_s (60 s)
have passed with growth, and at every session end (raise_to(sum_end, True), called by
the journal whenever it takes an order); a power cut loses at most the growth since the
last write (at most 0.1 kWh, and never any of an order: the session checkpoint carries
its own energy, and the order of a session cut short raises the register to its end).
It never goes backwards: at boot it is raised to the highest order end the journal has
seen, in case meter.json and its previous generation were both lost.
"""
import time

from pile import log, store
from pile.meter import Energy, Meter

FILE = "meter.json"


def _check(doc):
    mwh = doc.get("mwh")
    return None if type(mwh) is int and mwh >= 0 else "register must be an integer >= 0"


class Metering:
    def __init__(self, board, board_cfg, cfg, dc_counts):
        self.board = board
        self.cfg = cfg
        self.dc = dc_counts
        self.creep = cfg.get("meter_creep_mw", 5000)
        self.meter = Meter(board_cfg["cal"])
        adc = board_cfg.get("adc") or {}
        self.lo, self.hi = adc.get("min_code", 0), adc.get("max_code", 4095)    # rails
        saved = store.load(FILE, {}, _check)
        self.saved_ms = saved.get("ms", 0)      # wall clock of the last write (0: unknown)
        self.energy = Energy(saved.get("mwh", 0))
        self.saved_mwh = self.energy.mwh
        self.saved_t = board.ticks_ms()
        self.last = None            # ticks of the last burst
        self.mv = self.ma = self.mw = 0
        self.valid = self.bad = self.over = False

    def register(self):
        return self.energy.mwh

    def raise_to(self, mwh, save=False):
        """Never behind what an order already counted; saved when raised or asked to."""
        if mwh > self.energy.mwh:
            log.warn("meter", "register raised from %d to %d mWh" % (self.energy.mwh, mwh))
            self.energy.mwh = mwh
            save = True
        if save:
            self.save()

    async def sample(self, closed):
        """One burst; return the energy (mWh) it added to the register (see above)."""
        v, i, _ = await self.board.adc_burst()
        c = self.meter
        n = len(v)
        bad = clip = not n
        if n:
            top, bot, lo, hi = max(v), min(v), self.lo, self.hi
            clip = max(i) >= hi or min(i) <= lo     # the current beyond the front end
            bad = top == bot or top >= hi or bot <= lo or clip and not closed or \
                abs(sum(v) // n - c.voff) > self.dc or abs(sum(i) // n - c.ioff) > self.dc
        # a current channel at its rails with the relay closed is a current beyond what
        # it can read (a fault the hard over-current row trips at once, not a broken
        # meter); with the relay open, where no current can flow, it is a broken channel
        self.bad, self.over = bad, clip and not bad
        self.valid = not self.bad
        self.mv, self.ma, self.mw = (0, 0, 0) if self.bad else c.measure(v, i)
        now = self.board.ticks_ms()
        dt = time.ticks_diff(now, self.last) if self.last is not None else 0
        self.last = now
        before = self.energy.mwh
        if closed and self.valid and self.mw >= self.creep:
            self.energy.add(self.mw, dt)
        grown = self.energy.mwh - self.saved_mwh
        if grown >= self.cfg["register_save_mwh"] or (grown and time.ticks_diff(
                now, self.saved_t) >= self.cfg["register_save_s"] * 1000):
            self.save()
        return self.energy.mwh - before

    def save(self):
        self.saved_ms = self.board.now_ms() if self.board.time_trusted() else 0
        store.save(FILE, {"mwh": self.energy.mwh, "ms": self.saved_ms})
        self.saved_mwh = self.energy.mwh
        self.saved_t = self.board.ticks_ms()
