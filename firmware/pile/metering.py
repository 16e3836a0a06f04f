"""Metering: ADC bursts to volts, amps, watts and energy; the cumulative register.

sample() takes one burst through the HAL, measures it (pile.meter), integrates the
power over the board time since the last sample, adds the energy to the register and
to the running session.  Power under meter_creep_mw (the no-load threshold: ADC noise
and offset errors read about 0.2 W on an idle pile) counts no energy, so an idle
register stands still and is not rewritten.

The register (mWh) survives reboots: it is written when it has grown by
register_save_mwh (0.1 kWh) or register_save_s (60 s) have passed with growth, and at
every session end (raise_to(sum_end, True), called by the order journal whenever it takes
a new order); a power cut loses at most the growth since the last write (at most
0.1 kWh, and never any of an order: the session checkpoint carries its own energy, and
the order of a session cut short raises the register to its end).  It never goes
backwards: at boot it is raised to the highest sum_end the journal has seen, in case
meter.json and its previous generation were both lost.
"""
import time

from pile import log, store
from pile.meter import Energy, Meter

FILE = "meter.json"


class Metering:
    def __init__(self, board, board_cfg, cfg):
        self.board = board
        self.cfg = cfg
        self.creep = cfg.get("meter_creep_mw", 5000)
        self.meter = Meter(board_cfg["cal"])
        saved = store.load(FILE, {})
        mwh = saved.get("mwh", 0) if isinstance(saved, dict) else 0
        if not isinstance(mwh, int) or mwh < 0:
            log.error("meter", "stored register unusable; starting at 0")
            mwh = 0
        self.energy = Energy(mwh)
        self.saved_mwh = mwh
        self.saved_t = board.ticks_ms()
        self.last = None
        self.mv = self.ma = self.mw = 0

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

    def sample(self):
        """One burst; return the new energy (mWh) since the previous sample."""
        v, i, _ = self.board.adc_burst()
        self.bv, self.bi = v, i       # protection judges the raw burst (meter failure)
        self.mv, self.ma, self.mw = self.meter.measure(v, i)
        now = self.board.ticks_ms()
        dt = time.ticks_diff(now, self.last) if self.last is not None else 0
        self.last = now
        before = self.energy.mwh
        if self.mw >= self.creep:
            self.energy.add(self.mw, dt)
        grown = self.energy.mwh - self.saved_mwh
        if grown >= self.cfg["register_save_mwh"] or (grown and time.ticks_diff(
                now, self.saved_t) >= self.cfg["register_save_s"] * 1000):
            self.save()
        return self.energy.mwh - before

    def save(self):
        store.save(FILE, {"mwh": self.energy.mwh})
        self.saved_mwh = self.energy.mwh
        self.saved_t = self.board.ticks_ms()
