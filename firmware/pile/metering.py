"""Metering: ADC bursts to volts, amps, watts and energy; the cumulative register.

sample() takes one burst through the HAL, measures it (pile.meter), integrates the
power over the board time since the last sample, adds the energy to the register and
to the running session.  The register (mWh) survives reboots: it is written when it
has grown by register_save_mwh or register_save_s have passed with growth, and at every
session end; a power cut loses at most that much of the register (never of an order:
the session checkpoint carries its own energy).  It never goes backwards.
"""
import time

from pile import log, store
from pile.meter import Energy, Meter

FILE = "meter.json"


class Metering:
    def __init__(self, board, board_cfg, cfg):
        self.board = board
        self.cfg = cfg
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

    def raise_to(self, mwh):
        """Never behind what a recovered session already counted."""
        if mwh > self.energy.mwh:
            self.energy.mwh = mwh
            self.save()

    def sample(self):
        """One burst; return the new energy (mWh) since the previous sample."""
        v, i, _ = self.board.adc_burst()
        self.mv, self.ma, self.mw = self.meter.measure(v, i)
        now = self.board.ticks_ms()
        dt = time.ticks_diff(now, self.last) if self.last is not None else 0
        self.last = now
        before = self.energy.mwh
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
