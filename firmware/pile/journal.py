"""The event journal: what the platform must hear about its trades, kept on flash until
it is acknowledged.

Records are lists in the firmware's own units; pile.protocol makes the message:
    [START, trade, start_result, fault_code]                        startChaResEvt
    [STOP, trade, stop_result, stop_fail_reason, stop_code]         stopChaResEvt
    [ORDER, trade, start_ms, end_ms, model_id, sum_start_mWh, [mWh of each band],
     [4 power prices], [4 service prices], stop_code]               orderUpdateEvt
    [WIRE, trade, [values]]   an order journaled by firmware 0100000001: the wire body's
                              values, sent as they are
A record is on flash before it is first sent and leaves the journal only when the
platform acknowledges it (result 10; any other result keeps it).  One record of each kind
per trade: add() replaces (and logs it), never duplicates; the trades of the last DONE
acknowledged orders are remembered with their stop codes (done), so a checkpoint or a
repeated start met after a reboot is recognised.  The platform receives each record at
least once and never again after its acknowledgement; before it, copies are possible
(a resend round, a reboot).

Capacity: CAPACITY records.  full() (no room for a session's three) refuses new starts
(15/6002), so no record is ever dropped; a refused start's result that finds no room is
sent unjournaled.  The file is written twice (pile.store keeps the previous generation),
so a damaged journal.json still leaves every record in journal.json.bak; a journal that
cannot be saved stays in RAM and is saved again on every poll.

Sending: only while the link is up and the wall clock is trusted, oldest first, at most
WINDOW unacknowledged at once.
Every reconnect starts a round through all records; a round with no acknowledgement for
ack_wait_s starts another, the wait doubling up to ack_backoff_max_s.  An acknowledgement
of a copy sent in this round or the one before counts.

journal.json: {"v": 2, "r": [records], "d": [[trade, stop_code], ...], "top": highest
sum_end in mWh, "seq": the next free event id, "open": [trade, start_ms, sum_start_mWh,
model_id, power prices, service prices, band at the start] of the session charging now,
or null} (top: the meter register is never behind an order; seq: event ids never repeat
even when seq.json is lost; open: an order even when every checkpoint is lost).  Version 1
(orders.json: {"o": [wire values], "d": ..., "r": Wh}) is read and converted at boot.
"""
import time

from micropython import const

from pile import log, store

START, STOP, ORDER, WIRE = "S", "P", "O", "W"
FILE = "journal.json"
_OLD = const("orders.json")     # version 1, by firmware 0100000001
CAPACITY = const(24)
WINDOW = const(3)
DONE = const(8)
_KIND = const(0)                # record fields every kind has
_TRADE = const(1)
_O_SUM = const(5)               # ORDER fields the journal reads itself
_O_E = const(6)
_O_CODE = const(9)
_SIZES = {START: 4, STOP: 5, ORDER: 10, WIRE: 3}


def sound(r):
    """None when r is a record as written (see above), else why not."""
    if type(r) is not list or not r or _SIZES.get(r[0]) != len(r) or \
            type(r[_TRADE]) is not str or not r[_TRADE]:
        return "not a record"
    if r[0] == WIRE:
        return None if type(r[2]) is list and len(r[2]) == 26 else "not an order body"
    if r[0] != ORDER:
        return None if all(type(x) is int for x in r[2:]) else "codes must be integers"
    for x in r[2:4] + [r[_O_SUM], r[_O_CODE]] + r[_O_E] + r[7] + r[8]:
        if type(x) is not int or x < 0:
            return "order values must be non-negative integers"
    if type(r[4]) is not str or not 4 == len(r[_O_E]) == len(r[7]) == len(r[8]) or \
            r[3] < r[2]:
        return "order shape"
    return None


def _check(doc):
    """Content check of journal.json (store.load): the whole document or nothing."""
    if doc.get("v") != 2 or type(doc.get("r")) is not list or \
            type(doc.get("d")) is not list or type(doc.get("top")) is not int:
        return "not a version 2 journal"
    for r in doc["r"]:
        why = sound(r)
        if why:
            return why
    for d in doc["d"]:
        if type(d) is not list or len(d) != 2 or type(d[0]) is not str or \
                type(d[1]) is not int:
            return "done list"
    o = doc.get("open")
    if o is not None and (type(o) is not list or len(o) != 7 or type(o[0]) is not str or
                          any(type(x) is not int or x < 0 for x in o[1:3] + [o[6]]) or
                          type(o[3]) is not str or len(o[4]) != 4 or len(o[5]) != 4):
        return "open session"
    return None if type(doc.get("seq", 0)) is int else "event ids"


def _name(r):
    """What a record is, for the log."""
    k = r[_KIND]
    return ("start result " if k == START else "stop result " if k == STOP else "order ") + \
        r[_TRADE]


def sum_end(r):
    """The meter register (mWh) at the end of an order record."""
    if r[_KIND] == WIRE:
        return int(r[2][7]) * 1000         # the wire body's sum_end, Wh
    return r[_O_SUM] + sum(r[_O_E])


def stop_code(r):
    return r[2][25] if r[_KIND] == WIRE else r[_O_CODE]


class Journal:
    def __init__(self, cfg, link, proto, metering, ticks):
        self.cfg, self.link, self.proto, self.ticks = cfg, link, proto, ticks
        self.metering = metering    # raised to every order's end (never behind an order)
        self.todo, self.flying = [], 0
        self.sent, self.old = {}, {}    # session_id -> record: this round, the one before
        self.dirty, self.next_try, self.wait_s = False, None, cfg["ack_wait_s"]
        doc = store.load(FILE, {}, _check)
        old = self._convert() if not doc else None
        doc = old or doc
        self.recs, self.done, self.top = doc.get("r", []), doc.get("d", []), doc.get("top", 0)
        self.open = doc.get("open")     # the session charging now (see add()), or None
        proto.reserve(doc.get("seq", 0))
        for r in self.recs:
            if r[_KIND] in (ORDER, WIRE):
                self.top = max(self.top, sum_end(r))
        metering.raise_to(self.top)
        if old:                     # both generations hold the old records before they go
            self._save()
        if not self.dirty:
            store.remove(_OLD)

    def _convert(self):
        """Version 1 (orders.json) read as version 2: each whole record kept as it was."""
        old = store.load(_OLD, {})
        if not old:
            return None
        recs, done = [], []
        for x in old.get("o") if type(old.get("o")) is list else ():
            r = [WIRE, x[1], x] if type(x) is list and len(x) == 26 and \
                type(x[1]) is str else None
            if r is None or sound(r):
                log.error("journal", "old entry skipped: %s" % repr(x)[:80])
            else:
                recs.append(r)
        for d in old.get("d") if type(old.get("d")) is list else ():
            if type(d) is list and len(d) == 2 and type(d[0]) is str and type(d[1]) is int:
                done.append(d)
        r = old.get("r")
        log.warn("journal", "orders.json converted: %d records" % len(recs))
        return {"v": 2, "r": recs, "d": done, "top": r * 1000 if type(r) is int else 0}

    def _save(self):
        """Written twice: both generations on flash (journal.json and .bak) hold it."""
        doc = {"v": 2, "r": self.recs, "d": self.done, "top": self.top,
               "seq": self.proto.seq + 1, "open": self.open}
        self.dirty = not (store.save(FILE, doc) and store.save(FILE, doc))

    # --- what the gun asks -----------------------------------------------------------------
    def full(self):
        """No room for a session's records (start and stop results, order)."""
        return len(self.recs) > CAPACITY - 3

    def orders(self):
        """How many orders wait for their acknowledgement."""
        return len([r for r in self.recs if r[_KIND] in (ORDER, WIRE)])

    def find(self, trade, kind=ORDER):
        for r in self.recs:
            if r[_TRADE] == trade and (r[_KIND] == kind or kind == ORDER and r[_KIND] == WIRE):
                return r
        return None

    def has(self, trade):
        """Whether trade has an order, pending or lately acknowledged."""
        if self.find(trade):
            return True
        for d in self.done:
            if d[0] == trade:
                return True
        return False

    def add(self, rec, opened=None):
        """Keep the record on flash (an order: the register with it), then send it.
        opened: with the START record of a session that begins charging, what its order
        needs should its checkpoints all be lost (kept until its order comes: see
        pile.gun.recover)."""
        kind, trade = rec[_KIND], rec[_TRADE]
        if opened is not None or kind == ORDER and self.open and self.open[0] == trade:
            self.open = opened
        old = self.find(trade, kind)
        if old is not None and kind != ORDER and old[2] == 10 and rec[2] != 10:
            # a repeat refused ("already ...") never replaces the result that says what
            # happened: it goes out once, unjournaled
            if self.link.connected and self.proto.trusted():
                self._send(rec)
            return
        if old is not None:
            self.recs.remove(old)
            if old in self.todo:
                self.todo.remove(old)
            log.info("journal", "%s replaced" % _name(rec))
        elif kind != ORDER and rec[2] != 10 and self.full():
            # a refusal finds no room: sent all the same, once (the records of sessions
            # that run always have room: a start is refused while the journal is full)
            log.warn("journal", "full: %s sent unjournaled" % _name(rec))
            if self.link.connected:
                self._send(rec)
            return
        self.recs.append(rec)
        if kind == ORDER:
            self.top = max(self.top, sum_end(rec))
        self._save()
        if kind == ORDER:
            self.metering.raise_to(sum_end(rec), True)
        try:                            # on flash: sending can wait for the next round
            self.todo.append(rec)
            self._pump()
        except Exception:
            pass

    # --- sending ---------------------------------------------------------------------------
    def _send(self, r):
        """Send record r; return its session_id (the key of its acknowledgement)."""
        sid, topic, payload = self.message(r)
        self.link.publish(topic, payload, 1, False)
        log.info("up", "%s %s #%d" % (self.proto.cmd, r[_TRADE], sid))
        return sid

    def message(self, r):
        """(session_id, topic, payload) of record r (pile.protocol)."""
        p, k = self.proto, r[_KIND]
        if k == START:
            return p.start_result(r[1], r[2], r[3])
        if k == STOP:
            return p.stop_result(r[1], r[2], r[3], r[4])
        if k == ORDER:
            return p.order(r[1], r[2], r[3], r[4], r[7], r[8], r[5], r[6], r[9])
        return p.wire_order(r[2])

    def _pump(self):
        """Send what this round still has to, up to WINDOW unacknowledged (only while the
        link is up and the clock is known: no record goes out with a time stamp of 0)."""
        if not self.link.connected or not self.proto.trusted():
            return
        while self.todo and self.flying < WINDOW:
            r = self.todo.pop(0)
            if r in self.recs:
                self.sent[self._send(r)] = r
                self.flying += 1
            if self.next_try is None:
                self._arm(self.cfg["ack_wait_s"])

    def _arm(self, seconds):
        self.wait_s = seconds
        self.next_try = time.ticks_add(self.ticks(), seconds * 1000)

    def resend_all(self, wait=0, now=True):
        """After a (re)connect, or when a round stalled: a new round through them all
        (now=False: from the next poll() on; after a connect the announcements go first
        and the outbox takes them one burst at a time)."""
        self.old, self.sent = self.sent, {}
        self.todo = list(self.recs)
        self.flying = 0
        self.next_try = None
        if now:
            self._pump()
        if self.recs:
            self._arm(wait or self.cfg["ack_wait_s"])

    def poll(self):
        """Start a new round when acknowledgements are overdue; retry a failed save."""
        if self.dirty:
            self._save()
        if self.todo:
            self._pump()                # e.g. the clock has just become known
        if self.next_try is None or time.ticks_diff(self.ticks(), self.next_try) < 0:
            return
        if not self.recs:
            self.next_try = None
        elif self.link.connected:
            log.warn("journal", "%d records unacknowledged; resending" % len(self.recs))
            self.resend_all(min(self.wait_s * 2, self.cfg["ack_backoff_max_s"]))

    def acked(self, session_id, ok):
        """The platform's acknowledgement of event session_id (ok: result 10).  What it
        needs is made before anything changes: out of memory midway, the record and its
        id stay, and the platform's next acknowledgement (or a resend) finishes it."""
        mine = session_id in self.sent
        r = self.sent.get(session_id) if mine else self.old.get(session_id)
        if r is None:
            return                  # not a record of this round or the last
        if ok and r in self.recs:
            done = self.done
            if r[_KIND] in (ORDER, WIRE):
                done = (done + [[r[_TRADE], stop_code(r)]])[-DONE:]
            self.recs.remove(r)
            self.done = done
            log.info("journal", "%s acknowledged (%d pending)" % (_name(r), len(self.recs)))
            self._save()
            self._arm(self.cfg["ack_wait_s"])     # progress: wait afresh
        elif not ok:
            log.warn("journal", "%s refused by the platform; kept" % _name(r))
        (self.sent if mine else self.old).pop(session_id)
        if mine:
            self.flying -= 1
        if not self.recs:
            self.next_try = None
        self._pump()
