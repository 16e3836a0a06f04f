"""The order journal: billing records of finished sessions, kept until acknowledged.

An order (the orderUpdateEvt body: every field of the seed's record) is written to
flash before it is first sent and leaves the journal only when the platform
acknowledges it.  One record per pre_trade_no, ever: add() replaces (and logs it), never
duplicates, and the last DONE acknowledged pre_trade_no are remembered (has()), so a
checkpoint or a repeated start met after a reboot is recognised.  Capacity is CAPACITY
records: when it is full no new session may start (start refused with 15/6002), so no
unacknowledged record is ever dropped.  The journal is written twice (pile.store keeps
the previous generation), so a corrupt orders.json still leaves every record in
orders.json.bak.  A journal that cannot be saved stays in RAM and is saved again on
every poll.

Sending: only while the link is up (the outbox is never stuffed with copies while
offline) and at most WINDOW records unacknowledged at once, each acknowledgement
letting the next go, so a full journal floods neither the outbox nor the heap.  Every
reconnect starts a round through all pending records; a round with no acknowledgement
for ack_wait_s starts another, the wait doubling up to ack_backoff_max_s.  An
acknowledgement of a copy sent in this round or the one before removes the record.

orders.json: {"o": [records], "d": [[pre_trade_no, reason] of the last DONE acknowledged],
"r": highest sum_end seen (0.001 kWh), for the meter register}.  A record on flash is the
list of the body's values in FIELDS order (230 bytes of JSON; the dict's JSON is 650),
read back into a dict whose keys are the FIELDS strings, shared: about 960 bytes of heap
per pending order on the 64-bit port (a dict straight from JSON text owns a copy of
every key: 2.2 KB).
"""
import time

from pile import log, store
from pile.fees import KEYS

FILE = "orders.json"
CAPACITY = 16
WINDOW = 4
DONE = 8
# the body's fields in the order orders.json keeps them: a list built from names (interned,
# shared with pile.session) and fees.KEYS (shared), not a constant tuple of string objects
FIELDS = ["gun_no", "pre_trade_no", "charge_start_time", "charge_endTime", "ele_model_id",
          "time_div_type", "sum_start", "sum_end", "start_soc", "end_soc"] + KEYS + \
    ["total_elect", "total_power_cost", "total_serv_cost", "reason"]


class Journal:
    def __init__(self, send, cfg, ticks):
        self.send, self.cfg, self.ticks = send, cfg, ticks   # send(cmd, body) -> session_id
        self.link = None            # set by the app: sends only while link.connected
        self.settle = None          # set by the app: settle(sum_end in mWh, True)
        self.orders, self.todo, self.flying = [], [], 0
        self.sent, self.old = {}, {}   # session_id -> pre_trade_no: this round, the last
        self.dirty, self.next_try, self.wait_s = False, None, cfg["ack_wait_s"]
        doc = store.load(FILE, {})
        self.top, self.done = doc.get("r"), doc.get("d")
        if type(self.top) is not int:
            self.top = 0
        self.done = [d for d in self.done if type(d) is list and len(d) == 2] \
            if type(self.done) is list else []
        recs = doc.get("o")
        for x in recs if type(recs) is list else ():
            try:                    # one bad entry costs that entry only, loudly
                x = dict(zip(FIELDS, x))
                if len(x) != len(FIELDS) or self.has(x["pre_trade_no"]):
                    raise ValueError("not a record, or a second one for its pre_trade_no")
                self.top = max(self.top, int(x["sum_end"]))
                self.orders.append(x)
            except Exception as e:
                log.error("orders", "journal entry skipped (%r): %s" % (e, repr(x)[:80]))

    def _save(self):
        """Written twice: both generations on flash (orders.json and .bak) hold it."""
        doc = {"o": [[o[k] for k in FIELDS] for o in self.orders], "d": self.done,
               "r": self.top}
        self.dirty = not (store.save(FILE, doc) and store.save(FILE, doc))

    def full(self):
        return len(self.orders) >= CAPACITY

    def has(self, trade):
        """Whether pre_trade_no has a record, pending or lately acknowledged."""
        for o in self.orders + self.done:
            if (o["pre_trade_no"] if type(o) is dict else o[0]) == trade:
                return True
        return False

    def add(self, order):
        """Keep the record on flash (and the register with it), then send it."""
        trade = order["pre_trade_no"]
        self._drop(trade, "replaced")
        self.orders.append(order)
        self.top = max(self.top, int(order["sum_end"]))
        self._save()
        if self.settle:
            self.settle(int(order["sum_end"]) * 1000, True)
        log.info("orders", "order %s journaled (%d pending)" % (trade, len(self.orders)))
        if trade not in self.todo:
            self.todo.append(trade)
        self._pump()

    def _drop(self, trade, why):
        """Take the record of trade out of the journal (in RAM); return it or None."""
        for o in self.orders:
            if o["pre_trade_no"] == trade:
                self.orders.remove(o)
                log.info("orders", "order %s %s (%d pending)" % (trade, why, len(self.orders)))
                return o
        return None

    def _pump(self):
        """Send what this round still has to, up to WINDOW unacknowledged."""
        if self.link and not self.link.connected:
            return
        while self.todo and self.flying < WINDOW:
            trade = self.todo.pop(0)
            for o in self.orders:
                if o["pre_trade_no"] == trade:
                    self.sent[self.send("orderUpdateEvt", o, again=False)] = trade
                    self.flying += 1
            if self.next_try is None:
                self._arm(self.cfg["ack_wait_s"])

    def _arm(self, seconds):
        self.wait_s = seconds
        self.next_try = time.ticks_add(self.ticks(), seconds * 1000)

    def resend_all(self, wait=0):
        """After a (re)connect, or when a round stalled: a new round through them all."""
        self.old, self.sent = self.sent, {}
        self.todo = [o["pre_trade_no"] for o in self.orders]
        self.flying = 0
        self.next_try = None
        self._pump()
        if self.orders:
            self._arm(wait or self.cfg["ack_wait_s"])

    def poll(self):
        """Start a new round when acknowledgements are overdue; retry a failed save."""
        if self.dirty:
            self._save()
        if self.next_try is None or time.ticks_diff(self.ticks(), self.next_try) < 0:
            return
        if not self.orders:
            self.next_try = None
        elif not self.link or self.link.connected:
            log.warn("orders", "%d orders unacknowledged; resending" % len(self.orders))
            self.resend_all(min(self.wait_s * 2, self.cfg["ack_backoff_max_s"]))

    def acked(self, session_id, result):
        trade = self.sent.pop(session_id, None)
        if trade is None:
            trade = self.old.pop(session_id, None)
            if trade is None:
                return              # not an order of this round or the last
        else:
            self.flying -= 1
        if result != 10:
            log.warn("orders", "order %s refused (result %s); kept" % (trade, result))
        else:
            o = self._drop(trade, "acknowledged")
            if o:
                self.done = (self.done + [[trade, o["reason"]]])[-DONE:]
                self._save()
                self._arm(self.cfg["ack_wait_s"])     # progress: wait afresh
            if not self.orders:
                self.next_try = None
        self._pump()
