"""pile.journal (the event journal), the session checkpoint and its recovery at boot, and
every file the firmware keeps read back torn or corrupt (run in MicroPython).

The journal is tested directly against a platform in miniature (Pf): a fake link whose
publish() decodes what goes out (with what journal.json held at that moment), the real
pile.protocol.Protocol building every message and decoding every acknowledgement, a
fake metering that records raise_to(), and a clock the test steps.  The checkpoint and
the recovery run through the real app (kit.Pile): a reboot is a new kit.Pile on the same
storage directory.  Files from the previous firmware (0100000001): orders.json
(version 1 journal) and a session.json without "v" are read and converted at boot.

Files: journal.json and orders.json (journal), session.json (checkpoint), feemodel.json
(pile.tariff), creds.json (pile.provision), seq.json (pile.protocol); meter.json is
test_metering's.
"""
import json
import os

from pile import journal, log, provision, store
from pile.journal import CAPACITY, DONE, FILE, ORDER, START, STOP, WINDOW, WIRE, Journal
from pile.protocol import Protocol
from pile.tariff import Tariff
import kit
from kit import BOARD, COMPACT, Pile, fresh_dir

log.echo = False

# every line logged (the firmware's ring keeps only the last 16)
LOG = []


def _keep(f):
    def g(tag, msg):
        LOG.append("[%s] %s" % (tag, msg))
        f(tag, msg)
    return g


log.info, log.warn, log.error = _keep(log.info), _keep(log.warn), _keep(log.error)


def logged(text):
    return text in "\n".join(LOG)


T0 = 1652435604000          # 17:53:24 local time (UTC+8): the flat band of COMPACT
POWER, SERVICE = COMPACT["power"], COMPACT["service"]
# orders.json of firmware 0100000001 kept an order as its body's values in this order
OLD_FIELDS = ["gun_no", "pre_trade_no", "charge_start_time", "charge_endTime",
              "ele_model_id", "time_div_type", "sum_start", "sum_end", "start_soc",
              "end_soc", "sharp_elect", "sharp_power_cost", "sharp_serv_cost",
              "peak_elect", "peak_power_cost", "peak_serv_cost", "flat_elect",
              "flat_power_cost", "flat_serv_cost", "valley_elect", "valley_power_cost",
              "valley_serv_cost", "total_elect", "total_power_cost", "total_serv_cost",
              "reason"]


def _dir():
    """A fresh storage dir, made the firmware's storage root."""
    d = fresh_dir()
    assert store.init(d) is None
    return d


def order(trade, sum_end=100000, code=1001, e=None):
    """An ORDER record: 21 Wh in the flat band by default, ending at sum_end (mWh)."""
    e = e or [0, 0, 21000, 0]
    return [ORDER, trade, T0, T0 + 94000, "M1", sum_end - sum(e), e, list(POWER),
            list(SERVICE), code]


def old_values(trade, sum_end=25969, reason=1001):
    """An order as firmware 0100000001 kept it in orders.json (21 Wh, flat band)."""
    body = {"gun_no": 1, "pre_trade_no": trade, "charge_start_time": "1652435604",
            "charge_endTime": "1652435698", "ele_model_id": "M1", "time_div_type": 10,
            "sum_start": str(sum_end - 21), "sum_end": str(sum_end), "start_soc": 0,
            "end_soc": 0, "total_elect": 21, "total_power_cost": 420,
            "total_serv_cost": 420, "reason": reason}
    for b in ("sharp", "peak", "flat", "valley"):
        body[b + "_elect"] = body[b + "_power_cost"] = body[b + "_serv_cost"] = 0
    body.update(flat_elect=21, flat_power_cost=420, flat_serv_cost=420)
    return [body[k] for k in OLD_FIELDS]


class Link:
    """The link as the journal sees it: connected, publish()."""

    def __init__(self, pf):
        self.pf, self.connected = pf, True

    def publish(self, topic, payload, qos=1, again=True):
        return self.pf.got(topic, payload, qos, again)


class Metering:
    """What the journal needs of the metering: raise_to(), recorded."""

    def __init__(self):
        self.raised = []

    def raise_to(self, mwh, save=False):
        self.raised.append((mwh, save))


class Pf:
    """A platform in miniature: what the journal sent (decoded), the journal on flash then,
    and acknowledgements through the real protocol decoder."""

    def __init__(self, **over):
        self.t = 0
        self.sent = []          # (session_id, cmd, pre_trade_no, body, trades on flash)
        self.link = Link(self)
        self.meter = Metering()
        self.cfg = kit.cfg(dev_id="D1", ack_wait_s=10, ack_backoff_max_s=40, **over)
        self.proto = Protocol(self.cfg, BOARD, lambda: T0 + self.t, lambda: True)
        self.j = self.journal()

    def journal(self):
        """A journal on this storage (a new one: a reboot)."""
        return Journal(self.cfg, self.link, self.proto, self.meter, lambda: self.t)

    def got(self, topic, payload, qos, again):
        msg = json.loads(bytes(payload))
        head = msg["head"]
        assert qos == 1 and again is False, (qos, again)     # no copies in the outbox
        assert topic == "/sys/HCI-EVA7/D1/thing/event/%s/post" % head["cmd"], topic
        assert head["dev_id"] == "D1" and head["seq_id"] == head["session_id"]
        on_flash = [r[1] for r in store.load(FILE, {}).get("r", [])]
        self.sent.append((head["session_id"], head["cmd"], msg["body"]["pre_trade_no"],
                          msg["body"], on_flash))
        return True

    def trades(self, since=0):
        return [s[2] for s in self.sent[since:]]

    def ack(self, trade, result=10, nth=-1, cmd="orderUpdateEvt"):
        """The platform answers copy nth of trade's cmd (decoded as the app does)."""
        sids = [s[0] for s in self.sent if s[2] == trade and s[1] == cmd]
        kind = self.proto.decode("/sys/HCI-EVA7/D1/thing/event/%s/post_reply" % cmd,
                                 json.dumps({"head": {"cmd": cmd + "Reply",
                                                      "session_id": sids[nth]},
                                             "body": {"result": result}}))
        assert kind[0] == "ack" and kind[2] == sids[nth], kind
        self.j.acked(kind[2], kind[3])

    def wait(self, s):
        self.t += s * 1000
        self.j.poll()


# --- the journal -------------------------------------------------------------------------

def test_records_on_flash_in_internal_units_and_the_messages_they_make():
    _dir()
    p = Pf()
    rec = order("A", 321000, 1003, [1500, 2500, 17999, 0])
    p.j.add([START, "A", 10, 0])
    p.j.add(rec)
    p.j.add([STOP, "A", 10, 0, 1002])
    assert _doc() == {"v": 2, "r": [[START, "A", 10, 0], rec,
                                              [STOP, "A", 10, 0, 1002]],
                                "d": [], "top": 321000}
    assert [s[1] for s in p.sent] == ["startChaResEvt", "orderUpdateEvt", "stopChaResEvt"]
    assert p.sent[0][3] == {"gun_no": 1, "pre_trade_no": "A", "start_result": 10,
                            "fault_code": 0}
    assert p.sent[2][3] == {"gun_no": 1, "pre_trade_no": "A", "stop_result": 10,
                            "stop_fail_reson": 0, "result_code": 1002}
    # the order in wire units: Wh and money truncated band by band, totals their sums
    assert p.sent[1][3] == {
        "gun_no": 1, "pre_trade_no": "A", "charge_start_time": "1652435604",
        "charge_endTime": "1652435698", "ele_model_id": "M1", "time_div_type": 10,
        "sum_start": "299", "sum_end": "321", "start_soc": 0, "end_soc": 0,
        "sharp_elect": 1, "sharp_power_cost": 15, "sharp_serv_cost": 30,
        "peak_elect": 2, "peak_power_cost": 125, "peak_serv_cost": 50,
        "flat_elect": 17, "flat_power_cost": 359, "flat_serv_cost": 359,
        "valley_elect": 0, "valley_power_cost": 0, "valley_serv_cost": 0,
        "total_elect": 20, "total_power_cost": 499, "total_serv_cost": 439,
        "reason": 1003}, p.sent[1][3]
    assert sorted(p.sent[1][3]) == sorted(OLD_FIELDS)
    ids = [s[0] for s in p.sent]
    assert ids == sorted(ids) and len(set(ids)) == 3
    j2 = p.journal()                            # a reboot reads them back as they were
    assert j2.recs == [[START, "A", 10, 0], rec, [STOP, "A", 10, 0, 1002]]
    assert j2.top == 321000 and j2.orders() == 1 and j2.find("A") == rec
    # written twice: a corrupt journal.json leaves every record in journal.json.bak
    with open(store.path(FILE), "wb") as f:
        f.write(b"\xff" * 30)
    assert p.journal().recs == j2.recs
    assert FILE + ".bad" in os.listdir(store.root)


def test_on_flash_before_sent_and_gone_when_acknowledged():
    _dir()
    p = Pf()
    assert p.meter.raised == [(0, False)]        # at boot: raised to the journal's top
    p.j.add(order("A", 500000))
    assert [(s[1], s[2], s[4]) for s in p.sent] == [("orderUpdateEvt", "A", ["A"])]
    assert p.meter.raised[1:] == [(500000, True)]   # the register saved with it
    assert p.j.has("A") and p.j.orders() == 1
    p.ack("A")
    assert p.j.recs == [] and store.load(FILE)["r"] == []
    assert p.j.has("A") and p.j.done == [["A", 1001]]   # remembered: no second record
    p.wait(100)
    assert p.trades() == ["A"]                    # nothing more to send
    # a start result leaves when acknowledged too, and is no order to remember
    p.j.add([START, "B", 10, 0])
    assert p.sent[-1][1:3] == ("startChaResEvt", "B") and p.sent[-1][4] == ["B"]
    assert p.meter.raised[1:] == [(500000, True)]   # only orders move the register
    p.ack("B", cmd="startChaResEvt")
    assert p.j.recs == [] and not p.j.has("B")
    j2 = p.journal()                              # after a reboot
    assert j2.recs == [] and j2.has("A") and j2.top == 500000
    assert p.meter.raised[-1] == (500000, False)


def test_window_each_ack_lets_the_next_go():
    _dir()
    p = Pf()
    assert WINDOW == 3
    for k in range(10):
        p.j.add(order("O%d" % k, 100000 + k))
    assert p.trades() == ["O0", "O1", "O2"]
    p.ack("O1")
    assert p.trades()[3:] == ["O3"]
    p.ack("O0")
    p.ack("O3")
    assert p.trades()[4:] == ["O4", "O5"]
    assert p.j.orders() == 7
    # every record went out after it was on flash, with all those before it
    for s in p.sent:
        assert s[2] in s[4], s


def test_offline_nothing_sent_reconnect_sends_all_in_rounds():
    _dir()
    p = Pf()
    p.link.connected = False
    for k in range(6):
        p.j.add(order("O%d" % k))
    p.wait(1000)
    assert p.sent == []
    p.link.connected = True
    p.j.resend_all()                              # on every (re)connect (reports)
    assert p.trades() == ["O0", "O1", "O2"]
    for t in ("O0", "O1", "O2"):
        p.ack(t)
    assert p.trades()[3:] == ["O3", "O4", "O5"]
    p.ack("O3")
    p.ack("O4")
    p.ack("O5")
    assert p.j.recs == [] and p.j.next_try is None
    p.wait(1000)
    assert len(p.sent) == 6


def test_growing_interval_and_acks_of_older_copies():
    _dir()
    p = Pf()
    p.j.add(order("A"))
    times = []
    for _ in range(12):
        n = len(p.sent)
        while len(p.sent) == n:
            p.wait(1)
        times.append(p.t // 1000)
    gaps = [b - a for a, b in zip([0] + times, times)]
    assert gaps == [10, 20, 40] + [40] * 9, gaps    # ack_wait_s doubling to the maximum
    assert len(p.sent) == 13
    # an acknowledgement of a copy two rounds old no longer counts ...
    p.ack("A", nth=-3)
    assert p.j.orders() == 1
    # ... one of the copy before the last one still removes it
    p.ack("A", nth=-2)
    assert p.j.recs == [] and p.j.done == [["A", 1001]]
    p.wait(100)
    assert len(p.sent) == 13


def test_refused_record_is_kept_and_sent_again():
    _dir()
    p = Pf()
    p.j.add(order("A"))
    p.ack("A", result=11)
    assert p.j.orders() == 1 and logged("order A refused by the platform; kept")
    p.wait(10)
    assert p.trades() == ["A", "A"]
    assert p.sent[0][3] == p.sent[1][3] and p.sent[0][0] != p.sent[1][0]
    p.ack("A")
    assert p.j.recs == []


def test_one_record_per_trade_and_kind_and_capacity():
    _dir()
    p = Pf()
    p.j.add(order("A", 100000))
    p.j.add(order("A", 120000))                       # replaced, not doubled
    assert p.j.recs == [order("A", 120000)] and logged("order A replaced")
    p.j.add([START, "A", 10, 0])                      # another kind: a record of its own
    p.j.add([START, "A", 10, 0])
    assert p.j.recs == [order("A", 120000), [START, "A", 10, 0]]
    assert logged("start result A replaced")
    # full(): no room left for a session's three records (start and stop results, order)
    assert CAPACITY == 24
    k = 0
    while len(p.j.recs) < CAPACITY - 3:
        assert not p.j.full()
        p.j.add(order("O%d" % k))
        k += 1
    assert not p.j.full()                            # 21: a session's three still fit
    p.j.add([START, "S", 10, 0])                      # ... and it started
    assert p.j.full()                                 # 22: no new start
    p.j.add([STOP, "S", 10, 0, 1002])
    p.j.add(order("S"))
    assert len(p.j.recs) == CAPACITY and p.j.full()
    # a refusal that finds no room goes out once, unjournaled
    n = len(p.sent)
    p.j.add([START, "R", 15, 6002])
    p.j.add([STOP, "U", 11, 10, 0])
    assert len(p.j.recs) == CAPACITY and p.j.find("R", START) is None
    assert [(s[1], s[2], s[3]) for s in p.sent[n:]] == [
        ("startChaResEvt", "R", {"gun_no": 1, "pre_trade_no": "R", "start_result": 15,
                                 "fault_code": 6002}),
        ("stopChaResEvt", "U", {"gun_no": 1, "pre_trade_no": "U", "stop_result": 11,
                                "stop_fail_reson": 10, "result_code": 0})]
    assert logged("full: start result R sent unjournaled")
    p.wait(10)                                        # a new round: never again
    assert "R" not in p.trades(n + 2) and "U" not in p.trades(n + 2)
    j2 = p.journal()
    assert j2.full() and len(j2.recs) == CAPACITY and j2.recs == p.j.recs
    assert j2.orders() == CAPACITY - 3


def test_done_list_is_bounded_and_survives():
    _dir()
    p = Pf()
    assert DONE == 8
    for k in range(DONE + 3):
        p.j.add(order("D%d" % k, code=1000 + k))
        p.ack("D%d" % k)
    j2 = p.journal()
    assert j2.done == [["D%d" % k, 1000 + k] for k in range(3, DONE + 3)], j2.done
    assert j2.has("D%d" % (DONE + 2)) and j2.has("D3") and not j2.has("D2")
    assert not j2.has("D0")


def test_failed_save_is_retried():
    d = _dir()
    p = Pf()
    store.root = "/nonexistent"
    p.j.add(order("A"))
    assert p.j.dirty and p.trades() == ["A"]      # sent all the same, kept in RAM
    p.wait(0)
    assert p.j.dirty                              # still no flash: kept trying
    store.root = d
    p.wait(0)
    assert not p.j.dirty and store.load(FILE)["r"] == [order("A")]
    # saved twice: the previous generation holds it as well
    os.remove(store.path(FILE))
    assert p.journal().recs == [order("A")]


def _whole(name, doc, suffix=""):
    """Write doc as a whole document file name+suffix; return the file's bytes."""
    store.save("tmp.json", doc)
    os.rename(store.path("tmp.json"), store.path(name) + suffix)
    with open(store.path(name) + suffix, "rb") as f:
        return f.read()


TORN = (lambda g: g[:len(g) // 2], lambda g: g[:-2], lambda g: b"", lambda g: b"\x00" * 64,
        lambda g: g[:12] + (b"Y" if g[12:13] == b"X" else b"X") + g[13:])


def _tear(name, how, good):
    with open(store.path(name), "wb") as f:
        f.write(how(good))


def _v2(recs, done=(), top=0):
    return {"v": 2, "r": recs, "d": list(done), "top": top}


def _doc():
    """journal.json as on flash, but for the next free event id (its own test)."""
    d = store.load(FILE)
    assert type(d.pop("seq")) is int and d.pop("open") is None, d
    return d


def test_torn_journal():
    _dir()
    old = _v2([order("A")], top=100000)
    new = _v2([order("A"), order("B", 200000)], top=200000)
    good = _whole(FILE, new)
    for how in TORN:
        _whole(FILE, old, ".bak")
        _tear(FILE, how, good)
        j = Pf().j                       # the previous generation
        assert j.recs == [order("A")] and j.top == 100000, how
        assert FILE + ".bad" in os.listdir(store.root)
        os.remove(store.path(FILE + ".bak"))
        _tear(FILE, how, good)
        p = Pf()                         # nothing whole left: an empty journal, logged
        assert p.j.recs == [] and p.j.top == 0 and p.meter.raised == [(0, False)]
    assert logged("journal.json unreadable")


def test_journal_whose_content_fails_its_check_is_treated_like_a_torn_one():
    _dir()
    good = _v2([order("A"), [START, "B", 10, 0]], [["Z", 1000]], 100000)
    bad_order = order("A")
    bad_order[6] = [0, 0, -1, 0]
    backwards = order("A")
    backwards[3] = T0 - 1
    for bad, why in (
            (_v2([order("A"), 5]), "not a record"),
            (_v2([[START, "A", 10]]), "not a record"),
            (_v2([[START, "", 10, 0]]), "not a record"),
            (_v2([[START, "A", "10", 0]]), "codes must be integers"),
            (_v2([bad_order]), "order values must be non-negative integers"),
            (_v2([backwards]), "order shape"),
            (_v2([[WIRE, "A", [1, 2]]]), "not an order body"),
            (_v2([], [["Z", "1000"]]), "done list"),
            (_v2([], [], "x"), "not a version 2 journal"),
            ({"o": [old_values("A")], "d": [], "r": 7}, "not a version 2 journal"),
            ([order("A")], "not a dict")):
        store.remove(FILE)
        store.save(FILE, good)
        store.save(FILE, bad)            # whole, but makes no sense
        p = Pf()                         # the generation before, the bad one set aside
        assert p.j.recs == good["r"] and p.j.done == [["Z", 1000]], bad
        assert p.j.top == 100000 and p.meter.raised == [(100000, False)]
        assert logged("journal.json unreadable (%s); kept as journal.json.bad" % why), bad
        with open(store.path(FILE + ".bad")) as f:
            assert json.loads(f.read().split("\n", 1)[1]) == bad
        store.remove(FILE)
        store.save(FILE, bad)            # nothing else: an empty journal
        p = Pf()
        assert p.j.recs == [] and p.j.done == [] and p.j.top == 0, bad
        p.j.add(order("C"))              # and it works
        assert p.journal().recs == [order("C")]


def test_orders_json_of_the_previous_firmware_is_converted_at_boot():
    _dir()
    a, b = old_values("A", 25969, 1001), old_values("B", 26100, 1008)
    v1 = {"o": [a, b], "d": [["Z", 1002]], "r": 26100}
    store.save("orders.json", v1)
    store.save("orders.json", v1)                 # as 0100000001 wrote it: twice
    p = Pf()
    assert p.j.recs == [[WIRE, "A", a], [WIRE, "B", b]]
    assert p.j.done == [["Z", 1002]] and p.j.top == 26100000
    assert p.meter.raised == [(26100000, False)]
    assert logged("orders.json converted: 2 records")
    assert _doc() == _v2([[WIRE, "A", a], [WIRE, "B", b]], [["Z", 1002]],
                                   26100000)
    assert [n for n in os.listdir(store.root) if n.startswith("orders")] == []
    assert p.j.has("A") and p.j.has("B") and p.j.has("Z") and p.j.orders() == 2
    assert p.j.find("B") == [WIRE, "B", b] and journal.stop_code(p.j.find("B")) == 1008
    # every record reaches the platform unchanged: the body 0100000001 made
    assert p.sent == []                           # nothing goes out before a connect
    p.j.resend_all()
    assert [s[1] for s in p.sent] == ["orderUpdateEvt"] * 2
    assert p.sent[0][3] == dict(zip(OLD_FIELDS, a)) and p.sent[0][2] == "A"
    assert p.sent[1][3] == dict(zip(OLD_FIELDS, b))
    p.ack("A")
    assert p.j.recs == [[WIRE, "B", b]] and p.j.done == [["Z", 1002], ["A", 1001]]
    p2 = Pf()                                     # a reboot: version 2 from now on
    assert p2.j.recs == [[WIRE, "B", b]] and p2.j.has("A") and p2.j.top == 26100000
    p2.j.resend_all()
    assert p2.sent[0][3] == dict(zip(OLD_FIELDS, b))
    p2.ack("B")
    assert p2.j.recs == [] and p2.j.done[-1] == ["B", 1008]


def test_converted_orders_survive_a_damaged_journal_file():
    """The converted journal is on flash in both generations before orders.json goes
    (journal.json is always written twice), so a damaged journal.json after the
    conversion still leaves every record of the previous firmware."""
    _dir()
    a = old_values("A")
    store.save("orders.json", {"o": [a], "d": [], "r": 25969})
    assert Pf().j.recs == [[WIRE, "A", a]]
    with open(store.path(FILE), "wb") as f:
        f.write(b"\xff" * 30)
    j = Pf().j
    assert j.recs == [[WIRE, "A", a]], j.recs


def test_orders_json_entries_that_are_no_orders_are_logged_and_the_rest_kept():
    _dir()
    a, c = old_values("A"), old_values("C", 26000)
    store.save("orders.json", {"o": [a, 5, [1, 2], old_values("")[:25], c],
                               "d": [["Z", 1002]], "r": "x"})
    p = Pf()
    assert p.j.recs == [[WIRE, "A", a], [WIRE, "C", c]] and p.j.top == 26000000
    assert logged("old entry skipped: 5") and logged("old entry skipped: [1, 2]")
    p.j.resend_all()
    assert [s[3] for s in p.sent] == [dict(zip(OLD_FIELDS, a)), dict(zip(OLD_FIELDS, c))]
    # no orders.json, no journal.json: an empty journal; a torn orders.json likewise
    _dir()
    assert Pf().j.recs == []
    with open(store.path("orders.json"), "wb") as f:
        f.write(b"\x00" * 40)
    assert Pf().j.recs == []


# --- the session checkpoint and recovery (the real app, kit.Pile) ------------------------

def charging(trade, dir=None, register=5000000):
    """A real pile (kit.Pile) charging session `trade` in the flat band, its meter
    register at `register` mWh when it began."""
    d = dir or _dir()
    if register is not None:
        store.init(d)
        store.save("meter.json", {"mwh": register, "ms": 0})
    p = Pile(dir=d, epoch_ms=T0)
    p.bench("plug")
    p.step(100)
    p.deliver("startChargeSrv", {"gun_no": 1, "pre_trade_no": trade, "charge_mode": 10,
                                 "limit_data": 0})
    p.until(lambda: p.gun.state == 13, what="charging")
    p.began = T0 + p.t                  # the wall clock when charging began
    return p


def reboot(p, later_ms=3600000):
    """Power cut and boot again on the same flash."""
    p.close()
    return Pile(dir=p.dir, epoch_ms=T0 + later_ms)


def orders_of(p):
    return [r for r in p.journal.recs if r[0] in (ORDER, WIRE)]


def test_checkpoint_becomes_one_order_after_a_reset():
    p = charging("T1")
    cp = store.load("session.json")
    assert cp["v"] == 2 and cp["trade"] == "T1" and cp["e"] == [0, 0, 0, 0]
    assert cp["sum_start"] == 5000000 and cp["model"] == COMPACT
    p.until(lambda: sum(p.gun.s.e) >= 60000, 60000, "60 Wh")
    cp = store.load("session.json")               # one checkpoint at 50 Wh (CHECK_MWH)
    assert cp["trade"] == "T1" and 50000 <= sum(cp["e"]) < 50400 and \
        cp["e"][2] == sum(cp["e"]), cp
    assert cp["sum_start"] == 5000000 and 0 < cp["chg_ms"] < 30000
    assert cp["start_ms"] == p.began, (cp, p.began)
    p2 = reboot(p)                               # the checkpoint becomes the order
    end = cp["start_ms"] + cp["chg_ms"]
    assert orders_of(p2) == [[ORDER, "T1", cp["start_ms"], end, "M1", 5000000, cp["e"],
                              POWER, SERVICE, 1001]], orders_of(p2)
    assert "session.json" not in os.listdir(p2.dir)
    assert p2.app.metering.register() == 5000000 + sum(cp["e"])   # never behind the order
    p2.app.on_connect()
    p2.step(100)                  # the journal's round: the next report round
    got = [b for c, b in p2.events("orderUpdateEvt")]
    assert len(got) == 1, got
    got = got[0]
    assert got["reason"] == 1001 and got["pre_trade_no"] == "T1"
    assert got["flat_elect"] == cp["e"][2] // 1000 == got["total_elect"]
    assert got["sum_start"] == "5000" and got["sum_end"] == str(5000 + sum(cp["e"]) // 1000)
    assert got["charge_start_time"] == str(cp["start_ms"] // 1000)
    assert got["charge_endTime"] == str(end // 1000)
    # the repeated start of the same trade after the reboot is answered, never run
    p2.step(100)
    assert p2.gun.s is None and p2.gun.work_status() == 11      # plugged, idle
    p2.deliver("startChargeSrv", {"gun_no": 1, "pre_trade_no": "T1", "charge_mode": 10,
                                  "limit_data": 0}, sid=2002)
    assert p2.gun.s is None
    assert p2.events("startChargeSrvReply")[-1][1] == {"result": 10, "gun_no": 1,
                                                       "pre_trade_no": "T1"}
    assert p2.events("startChaResEvt")[-1][1] == {"gun_no": 1, "pre_trade_no": "T1",
                                                  "start_result": 10, "fault_code": 0}
    p2.step(500)
    assert p2.gun.s is None and not p2.board.relay_feedback()
    for cmd, body, sid in list(p2.sent):          # the platform acknowledges everything
        if cmd in ("orderUpdateEvt", "startChaResEvt"):
            p2.ack(sid)
    assert p2.journal.recs == [] and p2.journal.has("T1")
    p3 = reboot(p2)                              # another reboot: nothing more
    assert orders_of(p3) == [] and p3.journal.has("T1") and p3.gun.recover() is None
    p3.app.on_connect()
    p3.step(100)                  # the journal's round: the next report round
    assert p3.events("orderUpdateEvt") == []
    p3.close()


def test_checkpoint_of_a_journaled_session_makes_no_second_order():
    p = charging("T2")
    p.step(1000)
    s = p.gun.s
    s.add(25000, p.board.now_ms(), 480)
    s.save(p.board.now_ms())
    p.step(1000)
    # the session ended (order journaled) but the power went before session.json went
    rec = s.record(1001, p.board.now_ms())
    p.journal.add(rec)
    assert "session.json" in os.listdir(p.dir)
    p2 = reboot(p)
    assert orders_of(p2) == [rec] and "session.json" not in os.listdir(p2.dir)
    p2.app.on_connect()
    p2.step(100)                  # the journal's round: the next report round
    assert len(p2.events("orderUpdateEvt")) == 1
    p2.close()
    # the same once the platform had acknowledged the order: it is remembered (done)
    p = charging("T3")
    s = p.gun.s
    s.add(25000, p.board.now_ms(), 480)
    s.save(p.board.now_ms())
    p.journal.add(s.record(1001, p.board.now_ms()))
    for cmd, body, sid in list(p.sent):
        if cmd == "orderUpdateEvt":
            p.ack(sid)
    assert orders_of(p) == [] and p.journal.done[-1] == ["T3", 1001]
    p2 = reboot(p)
    assert orders_of(p2) == [] and "session.json" not in os.listdir(p2.dir)
    p2.app.on_connect()
    p2.step(100)                  # the journal's round: the next report round
    assert p2.events("orderUpdateEvt") == []
    p2.close()


def _checkpoints(p, *wh):
    """Checkpoints of the running session, each after adding wh Wh (flat band); return
    the energy of each."""
    s, out = p.gun.s, []
    for x in wh:
        s.add(x * 1000, p.board.now_ms(), 480)
        s.save(p.board.now_ms())
        out.append(list(s.e))
    return out


def test_torn_checkpoint():
    for how in TORN:
        p = charging("T3")
        e30, e49 = _checkpoints(p, 30, 19)   # 49 Wh now, the checkpoint before had 30
        with open(store.path("session.json"), "rb") as f:
            good = f.read()
        _tear("session.json", how, good)
        p2 = reboot(p)                   # the previous checkpoint: 30 Wh are billed
        got = orders_of(p2)
        assert len(got) == 1 and got[0][1] == "T3" and got[0][6] == e30, (how, got)
        assert 30000 <= sum(e30) < 30500 and sum(e49) - sum(e30) == 19000
        assert "session.json" not in os.listdir(p2.dir)
        p2.close()
        # nothing whole: the order still comes, from the meter register (what the
        # register counted since the start, in the band of the start), no crash, the
        # reasons in the log
        p = charging("T4")
        store.remove("session.json")
        _checkpoints(p, 30)
        p.app.metering.save()            # as it is every 0.1 kWh or 60 s of growth
        reg, start = p.app.metering.register(), p.journal.open
        with open(store.path("session.json"), "rb") as f:
            good = f.read()
        _tear("session.json", how, good)
        del LOG[:]
        p2 = reboot(p)
        got = orders_of(p2)
        assert len(got) == 1 and got[0][1] == "T4" and p2.gun.s is None, (how, got)
        e = [0, 0, 0, 0]
        e[start[6]] = reg - start[2]
        assert got[0][6] == e and reg - start[2] > 0, (got, reg, start)
        assert logged("session.json unreadable") and logged("billed from the register")
        assert p2.journal.open is None
        p2.close()


def test_checkpoint_whose_content_makes_no_sense_is_set_aside():
    p = charging("T5")
    p.gun.end()
    p.step(100)
    good = {"v": 2, "trade": "T7", "model": COMPACT, "e": [0, 0, 1000, 0], "chg_ms": 5000,
            "start_ms": T0, "sum_start": 7}
    for bad, why in (({"trade": "T5"}, "not a session checkpoint"),
                     ({"x": 1}, "not a session checkpoint"),
                     ([1], "not a dict"), ("s", "not a dict"),
                     (dict(good, e=[0, 0, -1, 0]), "non-negative integers"),
                     (dict(good, chg_ms="5"), "non-negative integers"),
                     (dict(good, model=dict(COMPACT, bands=[3, 9, 2])), "bands: 9")):
        n = len(orders_of(p))
        store.remove("session.json")
        store.save("session.json", bad)
        del LOG[:]
        assert p.gun.recover() is None and len(orders_of(p)) == n, bad
        assert "session.json" not in os.listdir(p.dir), bad
        assert logged("session.json unreadable (") and logged(why), (bad, LOG)
    # whole and sound: one order, the checkpoint gone
    store.save("session.json", good)
    rec = p.gun.recover()
    assert rec == [ORDER, "T7", T0, T0 + 5000, "M1", 7, [0, 0, 1000, 0], POWER, SERVICE,
                   1001]
    assert orders_of(p)[-1] == rec and "session.json" not in os.listdir(p.dir)
    p.close()


def test_session_json_of_the_previous_firmware_is_recovered_into_one_order():
    d = _dir()
    start = T0 - 700000
    store.save("session.json", {"trade": "T6", "mode": 12, "limit": 300, "model": COMPACT,
                                "e": [1000, 2000, 27000, 500], "chg_ms": 600000,
                                "start_ms": start, "sum_start": 5000000,
                                "last_ms": start + 650000})
    p = Pile(dir=d, epoch_ms=T0)
    assert orders_of(p) == [[ORDER, "T6", start, start + 650000, "M1", 5000000,
                             [1000, 2000, 27000, 500], POWER, SERVICE, 1001]]
    assert "session.json" not in os.listdir(d)
    assert p.app.metering.register() == 5030500
    p.app.on_connect()
    p.step(100)                  # the journal's round: the next report round
    got = p.events("orderUpdateEvt")
    assert got == [("orderUpdateEvt", {
        "gun_no": 1, "pre_trade_no": "T6", "charge_start_time": str(start // 1000),
        "charge_endTime": str((start + 650000) // 1000), "ele_model_id": "M1",
        "time_div_type": 10, "sum_start": "5000", "sum_end": "5030", "start_soc": 0,
        "end_soc": 0, "sharp_elect": 1, "sharp_power_cost": 10, "sharp_serv_cost": 20,
        "peak_elect": 2, "peak_power_cost": 100, "peak_serv_cost": 40,
        "flat_elect": 27, "flat_power_cost": 540, "flat_serv_cost": 540,
        "valley_elect": 0, "valley_power_cost": 5, "valley_serv_cost": 5,
        "total_elect": 30, "total_power_cost": 655, "total_serv_cost": 605,
        "reason": 1001})], got
    p2 = reboot(p)                              # only once
    assert len(orders_of(p2)) == 1
    p2.close()


# --- other files read back torn --------------------------------------------------------

def test_torn_fee_model_creds_and_seq():
    _dir()
    t = Tariff()
    assert t.update(dict(COMPACT)) is None
    assert t.update(dict(COMPACT, id="M2")) is None
    with open(store.path("feemodel.json"), "rb") as f:
        good = f.read()
    m1 = dict(t.model, id="M1")
    for how in TORN:
        _whole("feemodel.json", m1, ".bak")
        _tear("feemodel.json", how, good)
        assert Tariff().model_id() == "M1", how          # the generation before
        os.remove(store.path("feemodel.json.bak"))
        _tear("feemodel.json", how, good)
        assert Tariff().model is None                     # none: starts refused 6000
    _whole("feemodel.json", dict(m1, starts=[700, 600, 800]))
    del LOG[:]
    assert Tariff().model is None
    assert logged("feemodel.json unreadable (segment 1: start minute 600"), LOG
    # a refused model (unsound, or not storable) leaves the one in force
    store.remove("feemodel.json")
    t = Tariff()
    assert t.update(dict(COMPACT)) is None
    assert t.update(dict(COMPACT, bands=[3, 9, 2])).startswith("bands: 9")
    assert t.model_id() == "M1" and Tariff().model_id() == "M1"
    real = store.root
    store.root = "/nonexistent"
    assert t.update(dict(COMPACT, id="M3")) == "cannot store the fee model"
    store.root = real
    assert t.model_id() == "M1" and Tariff().model_id() == "M1"

    creds = {"mqtt_account": "a", "mqtt_password": "p", "mqtt_id": "i",
             "mqtt_server_addr": "tcp://127.0.0.1:1883"}
    cfg = kit.cfg(cpu_id="X", dev_id="X", secret_key="k")
    good = _whole(provision.FILE, creds)
    assert provision.Provisioner(cfg, None).stored == creds
    for how in TORN:
        _tear(provision.FILE, how, good)
        assert provision.Provisioner(cfg, None).stored is None, how     # provisions again
        _whole(provision.FILE, creds, ".bak")
        _tear(provision.FILE, how, good)
        assert provision.Provisioner(cfg, None).stored == creds, how    # the generation before
        store.remove(provision.FILE)

    good = _whole("seq.json", {"next": 5000})
    for how in TORN:
        store.remove("seq.json")
        _tear("seq.json", how, good)
        base = Protocol._seq_base(None)           # nothing whole: a random block
        assert 1000 <= base < 1 << 30 and base % 1000 == 0, how
        assert store.load("seq.json") == {"next": base + 1000}
        _whole("seq.json", {"next": 7000}, ".bak")
        _tear("seq.json", how, good)
        assert Protocol._seq_base(None) == 7000, how
    store.save("seq.json", [5000])                # whole, wrong shape: the one before
    assert Protocol._seq_base(None) == 8000
    # event ids go on from the reserved block: never one the platform has seen
    proto = Protocol(kit.cfg(dev_id="D1"), BOARD, lambda: T0, lambda: True)
    assert proto.start_result("A", 10, 0)[0] == 9001
