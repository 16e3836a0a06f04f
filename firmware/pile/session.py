"""One charge, from the start request to its billing record: the values of a running
session, its energy per fee band, its limits, its checkpoint and its order.

Units: energy mWh, money 0.0001 yuan, times ms (wall clock Unix-epoch ms; intervals
board ticks).  The limit is in the session's own units (pile.protocol converts):
charge_mode 11 money, 12 Wh (the reported energy), 14 ms, 15 W; 10 and 13 none.

Times: durations come from the monotonic clock (`chg_ms`, from the moment charging
began, pauses included); the wall-clock start is `end - chg_ms` at the moment it is
written, so a clock step during a charge (NTP correcting a drifted RTC) keeps
end >= start and end - start the charged time, and each energy increment goes to the
fee band of the (corrected) local time it was measured at.

Checkpoint (session.json, version 2): {"v": 2, "trade", "model", "e", "chg_ms",
"start_ms", "sum_start"}, written when charging begins, every CHECK_MWH and every
CHECK_MS of charging and removed when the order is journaled.  At boot a checkpoint left
by a power cut becomes the session's order (restore()); version 1 (firmware 0100000001:
no "v", "last_ms" the end) is read too.
"""
from micropython import const

from pile import fees, journal, log, store

FILE = "session.json"
CHECK_MWH = const(50000)        # a checkpoint every 50 Wh ...
CHECK_MS = const(60000)         # ... and every 60 s of charging (flash wear: bench_flash)


class Session:
    def __init__(self, trade, mode, limit, model, now):
        self.trade, self.mode, self.limit, self.model = trade, mode, limit, model
        self.e = [0, 0, 0, 0]           # mWh per band
        self.t0 = now                   # ticks of the start request
        self.tick = now                 # ticks of the last time update
        self.chg_ms = 0                 # ms since charging began (0: not yet)
        self.start_ms = self.sum_start = 0
        self.paused = None              # ticks since the vehicle paused (not in C/D)
        self.saved_e = self.saved_ms = 0
        self.stop = None                # (stop code, ticks) of a normal stop under way
        self.ending = False             # being ended: the relay stays open (pile.gun)

    def begin(self, now, wall_ms, register):
        """Charging begins: the relay is about to close."""
        self.tick, self.start_ms, self.sum_start = now, wall_ms, register

    def advance(self, dt):
        self.chg_ms += dt

    def add(self, mwh, wall_ms, tz_min):
        """Energy measured at wall_ms goes to the band in force then; True when a
        checkpoint is due."""
        self.e[fees.band_at(self.model, fees.local_minute(wall_ms, tz_min))] += mwh
        return sum(self.e) - self.saved_e >= CHECK_MWH

    def limit_code(self):
        """The stop code of the limit this session has reached, else 0 (allocates
        nothing: checked every 50 ms)."""
        m, lim = self.mode, self.limit
        if m == 11 and fees.money(self.e, self.model["power"]) + \
                fees.money(self.e, self.model["service"]) >= lim:
            return 1005
        if m == 12 and fees.wh(self.e) >= lim:
            return 1004
        if m == 14 and self.chg_ms >= lim:
            return 1003
        return 0

    def save(self, wall_ms):
        self.saved_e, self.saved_ms = sum(self.e), self.chg_ms
        store.save(FILE, {"v": 2, "trade": self.trade, "model": self.model, "e": self.e,
                          "chg_ms": self.chg_ms, "start_ms": wall_ms - self.chg_ms,
                          "sum_start": self.sum_start})

    def record(self, code, wall_ms):
        """The journal's ORDER record of this session, ended now (wall_ms) with `code`."""
        m = self.model
        return [journal.ORDER, self.trade, wall_ms - self.chg_ms, wall_ms, m["id"],
                self.sum_start, self.e, m["power"], m["service"], code]


def _check(doc):
    """Content check of a checkpoint (store.load)."""
    from pile.tariff import vet
    e = doc.get("e")
    if type(doc.get("trade")) is not str or type(e) is not list or len(e) != 4:
        return "not a session checkpoint"
    for x in e + [doc.get("sum_start"), doc.get("start_ms"),
                  doc.get("chg_ms", 0), doc.get("last_ms", 0)]:
        if type(x) is not int or x < 0:
            return "checkpoint values must be non-negative integers"
    return vet(doc.get("model"))


def recover(code, j, metering):
    """At boot: a checkpoint left by a power cut or reset becomes an order in journal j
    (stop code `code`, the last checkpoint's end time) unless j already has that session;
    with every checkpoint lost, the session j left open is billed from the meter register
    (all its energy in the band of the start, ended at the register's last write).  The
    checkpoint goes only once the order is journaled.  Returns the order record or None."""
    rec, o = restore(code), j.open
    if rec is None and o and not j.has(o[0]):
        e = [0, 0, 0, 0]
        e[o[6]] = max(0, metering.register() - o[2])
        rec = [journal.ORDER, o[0], o[1], max(o[1], metering.saved_ms), o[3],
               o[2], e, o[4], o[5], code]
        log.warn("gun", "session %s: no checkpoint; billed from the register" % o[0])
    if rec is not None:
        if not j.has(rec[1]):
            j.add(rec)
            log.warn("gun", "session %s closed at boot, %d Wh"
                     % (rec[1], sum(rec[6]) // 1000))
        store.remove(FILE)
    return rec


def restore(code):
    """The ORDER record of a checkpoint left by a power cut or reset, ended with `code`,
    or None.  The checkpoint stays until the caller has journaled the order."""
    doc = store.load(FILE, {}, _check)
    if not doc:
        return None
    end = doc["start_ms"] + doc["chg_ms"] if doc.get("v") == 2 else doc["last_ms"]
    m = doc["model"]
    return [journal.ORDER, doc["trade"], min(doc["start_ms"], end), end, m["id"],
            doc["sum_start"], doc["e"], m["power"], m["service"], code]
