"""pile.orders (the order journal), the session checkpoint and recovery, and every file the
firmware keeps read back torn or corrupt (run in MicroPython).

Files: creds.json (provision), feemodel.json (tariff), orders.json (journal),
session.json (session checkpoint), meter.json (test_metering), seq.json (app).
"""
import json
import os
import random
import time

from hal import sim
from pile import config, log, provision, store
from pile.app import App
from pile.orders import CAPACITY, DONE, FIELDS, FILE, WINDOW, Journal
from pile.protection import Protection
from pile.session import Charger
from pile.tariff import Tariff
from kit import fresh_dir

log.echo = False
with open("boards/sim/board.json") as f:
    BOARD = json.load(f)
MODEL = {"ele_model_id": "M1", "time_num": 3, "time_seg": ["0000", "0800", "1200"],
         "seg_flag": [13, 11, 12], "charge_fee": [10000, 50000, 20000, 10000],
         "serviceFee": [20000, 20000, 20000, 10000]}


def _dir():
    """A fresh storage dir, made the firmware's storage root."""
    store.root = fresh_dir()
    return store.root

def _cfg(**over):
    cfg = dict(config.DEFAULTS)
    cfg.update(over)
    return cfg


def order(trade, sum_end=100, reason=1001):
    """A complete orderUpdateEvt body (the fields do not matter to the journal)."""
    body = {"gun_no": 1, "pre_trade_no": trade, "charge_start_time": "1652435604",
            "charge_endTime": "1652435698", "ele_model_id": "M1", "time_div_type": 10,
            "sum_start": str(sum_end - 21), "sum_end": str(sum_end), "start_soc": 0,
            "end_soc": 0, "reason": reason, "total_elect": 21, "total_power_cost": 1085,
            "total_serv_cost": 1085}
    for b in ("sharp", "peak", "flat", "valley"):
        body[b + "_elect"] = body[b + "_power_cost"] = body[b + "_serv_cost"] = 0
    return body


def rec(trade, sum_end=100):
    """The record as orders.json keeps it: the body's values in FIELDS order."""
    body = order(trade, sum_end)
    return [body[k] for k in FIELDS]


def test_record_on_flash_is_the_body_in_fields_order():
    _dir()
    p = Pf()
    p.j.add(order("A", 321))
    body = p.j.orders[0]
    assert sorted(FIELDS) == sorted(body) and len(FIELDS) == 26
    assert store.load(FILE) == {"o": [[body[k] for k in FIELDS]], "d": [], "r": 321}
    j2 = p.journal()
    assert j2.orders == [body]
    # written twice: a corrupt orders.json leaves every record in orders.json.bak
    with open(store.path(FILE), "wb") as f:
        f.write(b"\xff" * 30)
    assert p.journal().orders == [body]


class Link:
    connected = True


class Pf:
    """A platform in miniature: what the journal sent, and the journal on flash then."""

    def __init__(self, **cfg):
        self.t = 0
        self.sent = []                  # (session_id, pre_trade_no, orders on flash)
        self.settled = []
        self.j = self.journal(**cfg)

    def journal(self, **cfg):
        j = Journal(self.send, _cfg(ack_wait_s=10, ack_backoff_max_s=40, **cfg),
                    lambda: self.t)
        j.link = self.link = getattr(self, "link", Link())
        j.settle = lambda mwh, save: self.settled.append((mwh, save))
        return j

    def send(self, cmd, body, qos=1, again=True):
        assert cmd == "orderUpdateEvt"
        on_flash = [o[1] for o in store.load(FILE, {}).get("o", [])]
        self.sent.append((len(self.sent) + 100, body["pre_trade_no"], on_flash))
        return len(self.sent) + 99

    def trades(self, since=0):
        return [s[1] for s in self.sent[since:]]

    def ack(self, trade, result=10, nth=-1):
        sids = [s[0] for s in self.sent if s[1] == trade]
        self.j.acked(sids[nth], result)

    def wait(self, s):
        self.t += s * 1000
        self.j.poll()


def test_on_flash_before_sent_and_gone_when_acknowledged():
    _dir()
    p = Pf()
    p.j.add(order("A", 500))
    assert p.sent == [(100, "A", ["A"])]          # on flash when it went out
    assert p.settled == [(500000, True)]          # the register saved with it
    assert p.j.has("A") and len(p.j.orders) == 1
    p.ack("A")
    assert p.j.orders == [] and store.load(FILE)["o"] == []
    assert p.j.has("A")                           # remembered: no second record
    p.wait(100)
    assert p.trades() == ["A"]                    # nothing more to send
    j2 = p.journal()                              # after a reboot
    assert j2.orders == [] and j2.has("A") and j2.top == 500


def test_window_each_ack_lets_the_next_go():
    _dir()
    p = Pf()
    for k in range(10):
        p.j.add(order("O%d" % k, 100 + k))
    assert p.trades() == ["O0", "O1", "O2", "O3"]
    p.ack("O1")
    assert p.trades()[4:] == ["O4"]
    p.ack("O0")
    p.ack("O4")
    assert p.trades()[5:] == ["O5", "O6"]
    assert len(p.j.orders) == 7


def test_offline_nothing_sent_reconnect_sends_all_in_rounds():
    _dir()
    p = Pf()
    p.link.connected = False
    for k in range(6):
        p.j.add(order("O%d" % k))
    p.wait(1000)
    assert p.sent == []
    p.link.connected = True
    p.j.resend_all()                              # app.on_connect
    assert p.trades() == ["O0", "O1", "O2", "O3"]
    for t in ("O0", "O1", "O2", "O3"):
        p.ack(t)
    assert p.trades()[4:] == ["O4", "O5"]
    p.ack("O4")
    p.ack("O5")
    assert p.j.orders == [] and p.j.next_try is None


def test_growing_interval_and_acks_of_older_copies():
    _dir()
    p = Pf()
    p.j.add(order("A"))
    times = []
    for _ in range(12):
        n = len(p.sent)
        p.wait(1)
        if len(p.sent) > n:
            times.append(p.t // 1000)
        while len(p.sent) == n:
            p.wait(1)
        times.append(p.t // 1000)
    gaps = [b - a for a, b in zip([0] + times, times)]
    assert gaps[:4] == [10, 20, 40, 40], gaps     # ack_wait_s doubling to the maximum
    # an acknowledgement of the copy before the last one still removes it
    p.ack("A", nth=-2)
    assert p.j.orders == []
    p.wait(100)
    assert len(p.sent) == 13


def test_refused_order_is_kept_and_sent_again():
    _dir()
    p = Pf()
    p.j.add(order("A"))
    p.ack("A", result=11)
    assert len(p.j.orders) == 1
    p.wait(10)
    assert p.trades() == ["A", "A"]
    p.ack("A")
    assert p.j.orders == []


def test_one_record_per_trade_and_capacity():
    _dir()
    p = Pf()
    p.j.add(order("A", 100))
    p.j.add(order("A", 120))                       # replaced, not doubled
    assert [o["sum_end"] for o in p.j.orders] == ["120"]
    assert "order A replaced" in "\n".join(log.lines())
    for k in range(CAPACITY - 1):
        assert not p.j.full()
        p.j.add(order("O%d" % k))
    assert p.j.full() and len(p.j.orders) == CAPACITY
    j2 = p.journal()
    assert j2.full() and len(j2.orders) == CAPACITY
    assert [o["pre_trade_no"] for o in j2.orders] == [o["pre_trade_no"] for o in p.j.orders]


def test_done_list_is_bounded_and_survives():
    _dir()
    p = Pf()
    for k in range(DONE + 3):
        p.j.add(order("D%d" % k, reason=1000 + k))
        p.ack("D%d" % k)
    j2 = p.journal()
    assert len(j2.done) == DONE
    assert j2.done[-1] == ["D%d" % (DONE + 2), 1000 + DONE + 2]
    assert j2.has("D%d" % (DONE + 2)) and not j2.has("D0")


def test_failed_save_is_retried():
    _dir()
    p = Pf()
    real = store.root
    store.root = "/nonexistent"
    p.j.add(order("A"))
    assert p.j.dirty and p.trades() == ["A"]      # sent all the same, kept in RAM
    store.root = real
    p.wait(0)
    assert not p.j.dirty and store.load(FILE)["o"][0][1] == "A"


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


def test_torn_journal():
    _dir()
    old = {"o": [rec("A")], "d": [], "r": 100}
    new = {"o": [rec("A"), rec("B", 200)], "d": [], "r": 200}
    good = _whole(FILE, new)
    for how in TORN:
        _whole(FILE, old, ".bak")
        _tear(FILE, how, good)
        j = Pf().j                       # the previous generation
        assert [o["pre_trade_no"] for o in j.orders] == ["A"], how
        os.remove(store.path(FILE + ".bak"))
        _tear(FILE, how, good)
        j = Pf().j                       # nothing whole left: an empty journal, logged
        assert j.orders == [] and j.top == 0
    assert "orders.json unreadable" in "\n".join(log.lines())
    # whole but with unusable entries: each bad entry costs itself only
    store.save(FILE, {"o": [rec("A"), 5, [1, 2], rec("A"), order("B"), rec("C", 300)],
                      "d": [["Z", 1000], "bad"], "r": "x"})
    j = Pf().j
    assert [o["pre_trade_no"] for o in j.orders] == ["A", "C"] and j.top == 300
    assert j.has("Z") and "journal entry skipped" in "\n".join(log.lines())
    store.save(FILE, {"o": 7, "d": None})
    assert Pf().j.orders == []
    store.remove(FILE)
    store.save(FILE, [rec("A")])              # not the journal's shape
    assert Pf().j.orders == []


# --- the session checkpoint and recovery ------------------------------------------------

class Rig:
    def __init__(self, dir=None, speed=50):
        self.dir = dir or _dir()
        store.root = self.dir
        self.board = sim.Board(BOARD, {"storage": self.dir, "speed": speed})
        self.cfg = _cfg()
        self.sent = []
        self.tariff = Tariff()
        if self.tariff.model is None:
            assert self.tariff.update(MODEL) is None
        self.journal = Journal(self.send, self.cfg, self.board.ticks_ms)
        self.prot = Protection(self.board, BOARD)
        self.ch = Charger(self.board, self.cfg, BOARD, self.tariff, self.journal,
                          self.send, self.prot)
        self.ch.meter_register = lambda: 5000000
        self.prot.charger = self.ch

    def send(self, cmd, body, qos=1, status=0, item_id=None, again=True):
        self.sent.append((cmd, body))
        return len(self.sent)

    def orders(self):
        return [b for c, b in self.sent if c == "orderUpdateEvt"]

    def charge(self, trade="T1"):
        """A session charging (as far as billing goes) with some energy in two bands."""
        self.board.bench({"cmd": "plug"})
        for _ in range(30):
            self.ch.tick()
            time.sleep_ms(1)
        assert self.ch.start({"gun_no": 1, "pre_trade_no": trade, "charge_mode": 10,
                              "limit_data": 0})[0] == 10
        t = time.ticks_ms()
        while self.ch.state != 13:
            assert time.ticks_diff(time.ticks_ms(), t) < 3000, self.ch.state
            self.ch.tick()
            time.sleep_ms(1)
        self.board.set_time_ms(1652435604000)          # 17:53 local: flat
        self.ch.s["start_ms"] = self.board.now_ms()
        for _ in range(30):
            self.ch.add_energy(1000)                    # 30 Wh: one checkpoint at 20 Wh
        self.ch.checkpoint()


def test_checkpoint_becomes_one_order_after_a_reset():
    r = Rig()
    r.charge("T1")
    cp = store.load("session.json")
    assert cp["trade"] == "T1" and sum(cp["e"]) == 30000 and cp["sum_start"] == 5000000
    r.board.close()
    r2 = Rig(r.dir)                      # reboot: the checkpoint becomes the order
    got = r2.ch.recover()
    assert got is not None and r2.orders() == [got]
    assert got["reason"] == 1001 and got["pre_trade_no"] == "T1"
    assert got["flat_elect"] == 30 and got["total_elect"] == 30
    assert got["sum_start"] == "5000" and got["sum_end"] == "5030"
    assert got["charge_endTime"] == str(cp["last_ms"] // 1000)
    assert "session.json" not in os.listdir(r.dir)
    assert [o[1] for o in store.load(FILE)["o"]] == ["T1"]
    # the repeated start of the same trade after the reboot is answered, never run
    r2.board.bench({"cmd": "plug"})
    res = r2.ch.start({"gun_no": 1, "pre_trade_no": "T1", "charge_mode": 10})
    assert res[0] == 10 and r2.ch.s is None
    assert r2.sent[-1] == ("startChaResEvt", {"gun_no": 1, "pre_trade_no": "T1",
                                              "start_result": 10, "fault_code": 0})
    r2.board.close()
    r3 = Rig(r.dir)                      # another reboot: nothing more
    assert r3.ch.recover() is None and r3.orders() == []
    r3.board.close()


def test_checkpoint_of_a_journaled_session_makes_no_second_order():
    r = Rig()
    r.charge("T2")
    # the session ended (order journaled) but the power went before session.json went
    r.journal.add(r.ch.order(dict(r.ch.s, end_ms=r.board.now_ms()), 1001))
    r.board.close()
    r2 = Rig(r.dir)
    assert r2.ch.recover() is None
    assert len(r2.journal.orders) == 1 and "session.json" not in os.listdir(r.dir)
    r2.board.close()


def test_torn_checkpoint():
    for how in TORN:
        r = Rig()
        r.charge("T3")
        for _ in range(19):
            r.ch.add_energy(1000)       # 49 Wh now, the checkpoint before had 30 Wh
        r.ch.checkpoint()
        with open(store.path("session.json"), "rb") as f:
            good = f.read()
        _tear("session.json", how, good)
        r.board.close()
        r2 = Rig(r.dir)                 # the previous checkpoint: 30 Wh are billed
        got = r2.ch.recover()
        assert got and got["total_elect"] == 30, (how, got)
        r2.board.close()
        # nothing whole: no order, no crash, the reason in the log
        r = Rig()
        r.charge("T4")
        store.remove("session.json")
        r.ch.checkpoint()
        with open(store.path("session.json"), "rb") as f:
            good = f.read()
        _tear("session.json", how, good)
        r.board.close()
        r2 = Rig(r.dir)
        assert r2.ch.recover() is None and r2.orders() == []
        assert "unreadable" in "\n".join(log.lines())
        r2.board.close()
    # whole but not a checkpoint: logged, removed, the boot goes on
    r = Rig()
    for bad in ({"trade": "T5"}, {"x": 1}, [1], "s"):
        store.save("session.json", bad)
        assert r.ch.recover() is None and r.orders() == []
        assert "session.json" not in os.listdir(r.dir)
    assert "session checkpoint unusable" in "\n".join(log.lines())
    r.board.close()


def test_torn_fee_model_creds_and_seq():
    _dir()
    t = Tariff()
    assert t.update(MODEL) is None
    assert t.update(dict(MODEL, ele_model_id="M2")) is None
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
    _whole("feemodel.json", dict(m1, starts=[700, 600]))
    assert Tariff().model is None and "stored fee model rejected" in "\n".join(log.lines())
    # a refused model (invalid, or not storable) leaves the one in force
    store.remove("feemodel.json")
    t = Tariff()
    assert t.update(MODEL) is None
    assert t.update(dict(MODEL, seg_flag=[13, 9, 12])).startswith("seg_flag[1]")
    assert t.model_id() == "M1" and Tariff().model_id() == "M1"
    real = store.root
    store.root = "/nonexistent"
    assert t.update(dict(MODEL, ele_model_id="M3")) == "cannot store the fee model"
    store.root = real
    assert t.model_id() == "M1" and Tariff().model_id() == "M1"

    creds = {"mqtt_account": "a", "mqtt_password": "p", "mqtt_id": "i",
             "mqtt_server_addr": "tcp://127.0.0.1:1883"}
    cfg = _cfg(cpu_id="X", dev_id="X", secret_key="k")
    good = _whole(provision.FILE, creds)
    assert provision.Provisioner(cfg).stored == creds
    for how in TORN:
        _tear(provision.FILE, how, good)
        assert provision.Provisioner(cfg).stored is None, how     # provisions again
        _whole(provision.FILE, creds, ".bak")
        _tear(provision.FILE, how, good)
        assert provision.Provisioner(cfg).stored == creds, how    # the generation before
        store.remove(provision.FILE)

    good = _whole("seq.json", {"next": 5000})
    for how in TORN:
        store.remove("seq.json")
        _tear("seq.json", how, good)
        assert App._seq_base(None) == 0, how
        assert store.load("seq.json") == {"next": 1000}
        _whole("seq.json", {"next": 7000}, ".bak")
        _tear("seq.json", how, good)
        assert App._seq_base(None) == 7000, how
    store.save("seq.json", [5000])                # whole, wrong shape: the one before
    assert App._seq_base(None) == 8000
