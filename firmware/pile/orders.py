"""The order journal: billing records of finished sessions, kept until acknowledged.

An order (the orderUpdateEvt body) is written to flash before it is first sent and
leaves the journal only when the platform acknowledges it.  One record per
pre_trade_no, ever: add() replaces, never duplicates.  Capacity is CAPACITY records;
when it is full no new session may start (the start is refused), so no unacknowledged
record is ever dropped.  Records are resent on every reconnect and at a growing
interval (ack_wait_s doubling up to ack_backoff_max_s) while unacknowledged.
"""
import time

from pile import log, store

FILE = "orders.json"
CAPACITY = 32


class Journal:
    def __init__(self, send, cfg, ticks):
        self.send = send            # send(cmd, body) -> session_id
        self.cfg = cfg
        self.ticks = ticks
        self.orders = self._load()
        self.sent = {}              # session_id -> pre_trade_no
        self.next_try = None
        self.wait_s = cfg["ack_wait_s"]

    def _load(self):
        orders = store.load(FILE, [])
        if not isinstance(orders, list):
            log.error("orders", "journal is not a list; starting empty")
            return []
        return [o for o in orders if isinstance(o, dict) and o.get("pre_trade_no")]

    def full(self):
        return len(self.orders) >= CAPACITY

    def has(self, trade):
        return any(o["pre_trade_no"] == trade for o in self.orders)

    def add(self, order):
        """Keep the record on flash, then send it."""
        self.orders = [o for o in self.orders if o["pre_trade_no"] != order["pre_trade_no"]]
        self.orders.append(order)
        store.save(FILE, self.orders)
        log.info("orders", "order %s journaled (%d pending)"
                 % (order["pre_trade_no"], len(self.orders)))
        self._send(order)

    def _send(self, order):
        sid = self.send("orderUpdateEvt", order)
        self.sent[sid] = order["pre_trade_no"]
        if self.next_try is None:
            self._arm(self.cfg["ack_wait_s"])

    def _arm(self, seconds):
        self.wait_s = seconds
        self.next_try = time.ticks_add(self.ticks(), seconds * 1000)

    def resend_all(self):
        """After a (re)connect: every pending order goes out again."""
        self.sent = {}
        for order in self.orders:
            self._send(order)

    def poll(self):
        """Resend pending orders when their acknowledgement is overdue."""
        if self.next_try is None or time.ticks_diff(self.ticks(), self.next_try) < 0:
            return
        if not self.orders:
            self.next_try = None
            return
        log.warn("orders", "%d orders unacknowledged; resending" % len(self.orders))
        wait = min(self.wait_s * 2, self.cfg["ack_backoff_max_s"])
        self.resend_all()
        self._arm(wait)

    def acked(self, session_id, result):
        trade = self.sent.pop(session_id, None)
        if trade is None:
            return
        if result != 10:
            log.warn("orders", "order %s refused by the platform (result %s); kept"
                     % (trade, result))
            return
        self.orders = [o for o in self.orders if o["pre_trade_no"] != trade]
        store.save(FILE, self.orders)
        log.info("orders", "order %s acknowledged (%d pending)" % (trade, len(self.orders)))
        if not self.orders:
            self.next_try = None
