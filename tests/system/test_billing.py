"""Billing end to end (issue 4): band split on the accelerated clock, billing records that
survive a dead broker, a SIGKILL and torn files, fee models that change mid-charge or are
refused, and a full journal (the wall clock: test_platform_faults.py).

Files on the pile's flash are read and written here in the firmware's format (pile.store):
a first line with the CRC32 of the JSON text in 8 hex digits, then the JSON text.
"""
import datetime
import json
import os
import time
import zlib

from conftest import DEV, MODEL, charging, give_model, online
from netem import Proxy

SPEED = 30
LOCAL = datetime.timezone(datetime.timedelta(hours=8))     # tz_min 480


def read_doc(pile, name):
    with open(os.path.join(pile.dir, name), "rb") as f:
        crc, text = f.read().split(b"\n", 1)
    assert int(crc, 16) == zlib.crc32(text), name
    return json.loads(text)


def write_doc(pile, name, obj):
    text = json.dumps(obj).encode()
    with open(os.path.join(pile.dir, name), "wb") as f:
        f.write(b"%08x\n" % zlib.crc32(text) + text)


# orders.json of firmware 0100000001 kept each record as the list of the body's values in
# this order (the journal reads such files still)
FIELDS = ("gun_no", "pre_trade_no", "charge_start_time", "charge_endTime", "ele_model_id",
          "time_div_type", "sum_start", "sum_end", "start_soc", "end_soc",
          "sharp_elect", "sharp_power_cost", "sharp_serv_cost",
          "peak_elect", "peak_power_cost", "peak_serv_cost",
          "flat_elect", "flat_power_cost", "flat_serv_cost",
          "valley_elect", "valley_power_cost", "valley_serv_cost",
          "total_elect", "total_power_cost", "total_serv_cost", "reason")
BANDS = ("sharp", "peak", "flat", "valley")


def order_body(r):
    """The orderUpdateEvt body of a journal record, by PROTOCOL.md section 5 (reference)."""
    if r[0] == "W":
        return dict(zip(FIELDS, r[2]))
    _, trade, start, end, model_id, sum_start, e, power, service, code = r
    body = {"gun_no": 1, "pre_trade_no": trade, "charge_start_time": str(start // 1000),
            "charge_endTime": str(end // 1000), "ele_model_id": model_id,
            "time_div_type": 10, "sum_start": str(sum_start // 1000),
            "sum_end": str((sum_start + sum(e)) // 1000), "start_soc": 0, "end_soc": 0,
            "reason": code}
    for b, name in enumerate(BANDS):
        body[name + "_elect"] = e[b] // 1000
        body[name + "_power_cost"] = e[b] * power[b] // 1000000
        body[name + "_serv_cost"] = e[b] * service[b] // 1000000
    for total, suffix in (("total_elect", "_elect"), ("total_power_cost", "_power_cost"),
                          ("total_serv_cost", "_serv_cost")):
        body[total] = sum(body[b + suffix] for b in BANDS)
    return body


def journal_bodies(pile):
    """The orders the journal on the pile's flash keeps, as the platform will get them."""
    return [order_body(r) for r in read_doc(pile, "journal.json")["r"] if r[0] in "OW"]


def up(make_pile, platform, **kw):
    pile = make_pile(**kw)
    online(platform)
    assert give_model(platform)["msg"]["body"]["result"] == 10
    return pile


def charge(platform, pile, trade):
    body = charging(platform, pile, trade)
    assert body["start_result"] == 10 and body["fault_code"] == 0, body
    pile.wait_state(lambda s: s["relay_closed"])


def orders_for(platform, trade, since=0):
    return [r["msg"]["body"] for r in platform.messages()[since:]
            if r["dev"] == DEV and r["cmd"] == "orderUpdateEvt"
            and r["msg"]["body"]["pre_trade_no"] == trade]


def stop_and_order(platform, trade):
    mark = platform.mark()
    platform.stop_charge(DEV, trade)
    rec = platform.wait_for(DEV, "orderUpdateEvt", since=mark, timeout=15,
                            pred=lambda m: m["body"]["pre_trade_no"] == trade)
    return rec["msg"]["body"]


def check_money(order, model):
    """Each band's money from its energy: the order carries Wh, the pile priced mWh."""
    fees = dict(power=model["charge_fee"], serv=model["serviceFee"])
    for b, band in enumerate(("sharp", "peak", "flat", "valley")):
        wh = order[band + "_elect"]
        for kind in ("power", "serv"):
            price = fees[kind][b]
            cost = order["%s_%s_cost" % (band, kind)]
            assert wh * price // 1000 <= cost <= (wh + 1) * price // 1000, (band, kind, order)
    for k in ("elect", "power_cost", "serv_cost"):
        assert order["total_" + k] == sum(order[b + "_" + k] for b in
                                          ("sharp", "peak", "flat", "valley")), order


def local_ms(y, mo, d, h, mi, s=0):
    return int(datetime.datetime(y, mo, d, h, mi, s, tzinfo=LOCAL).timestamp() * 1000)


def test_band_split_across_two_boundaries_and_midnight(make_pile, platform):
    # peak from 12:30, sharp from 23:59, valley from 00:00 (local, UTC+8)
    model = dict(ele_model_id="MID", time_seg=["0000", "1230", "2359"], seg_flag=[13, 11, 10],
                 charge_fee=[90000, 50000, 20000, 10000], serviceFee=[30000, 20000, 10000, 5000])
    pile = make_pile(speed=SPEED)
    online(platform)
    assert give_model(platform, **model)["msg"]["body"]["result"] == 10
    pile.bench({"cmd": "plug"})
    pile.wait_state(lambda s: s["cp_level"] in "BC")
    pile.bench({"cmd": "clock", "epoch_ms": local_ms(2024, 2, 29, 23, 58, 15)})
    charge(platform, pile, "B1")
    end = local_ms(2024, 3, 1, 0, 0, 50)
    pile.wait_state(lambda s: s["now_ms"] >= end, timeout=20)
    order = stop_and_order(platform, "B1")

    t0, t1 = int(order["charge_start_time"]), int(order["charge_endTime"])
    sharp, midnight = local_ms(2024, 2, 29, 23, 59) // 1000, local_ms(2024, 3, 1, 0, 0) // 1000
    assert t0 < sharp < midnight < t1, (t0, t1)
    total = order["total_elect"]
    watts = total * 3600 / (t1 - t0)                  # Wh/s -> W, about 7.3 kW
    assert 7000 < watts < 7700, watts
    want = {"peak_elect": (sharp - t0), "sharp_elect": 60, "valley_elect": (t1 - midnight)}
    step = watts * SPEED * 0.1 / 3600                  # one measurement (<= 100 ms real) in Wh
    for band, seconds in want.items():
        expect = watts * seconds / 3600
        slack = step + (watts / 3600 if band != "sharp_elect" else 0) + 1   # + 1 s of times
        assert abs(order[band] - expect) <= slack, (band, order[band], expect, slack, order)
    assert order["flat_elect"] == 0
    assert order["ele_model_id"] == "MID" and order["reason"] == 1009
    check_money(order, model)
    # the register moved with the bands: within one unit per band
    assert int(order["sum_end"]) - int(order["sum_start"]) in range(total, total + 5)
    # acGunRunIty while charging: the running energies and money, by the same rule
    runs = [r["msg"]["body"] for r in platform.messages(DEV, "acGunRunIty")
            if r["msg"]["body"]["pre_trade_no"] == "B1" and r["msg"]["body"]["work_status"] == 13]
    assert len(runs) >= 3 and runs[-1]["total_elect"] > 0, runs      # every 5 s, 1st minute
    bands = ("sharp_elect", "peak_elect", "flat_elect", "valley_elect")
    for run in runs:
        assert run["total_elect"] == sum(run[b] for b in bands)
        for kind, prices in (("power", model["charge_fee"]), ("serv", model["serviceFee"])):
            low = sum(run[b] * p // 1000 for b, p in zip(bands, prices))
            high = sum((run[b] + 1) * p // 1000 for b, p in zip(bands, prices))
            assert low <= run["total_%s_cost" % kind] <= high, run
        assert run["total_cost"] == run["total_power_cost"] + run["total_serv_cost"]
        for band in bands:
            assert run[band] <= order[band]


def test_order_while_broker_down_arrives_once_after(make_pile, platform, broker):
    pile = up(make_pile, platform, speed=10, ack_wait_s=2)
    charge(platform, pile, "D1")
    time.sleep(0.5)
    broker.stop()
    pile.wait_status(lambda s: not s["link"])
    assert pile.bench({"cmd": "stop"})["ok"]          # stop at the pile: 1001
    pile.wait_status(lambda s: s["orders_pending"] == 1)
    (kept,) = journal_bodies(pile)
    assert kept["pre_trade_no"] == "D1" and kept["reason"] == 1001 and kept["total_elect"] > 0
    # the session end saved the register too (under 0.1 kWh and 60 s: nothing else did)
    assert 0 < int(kept["sum_end"]) * 1000 <= read_doc(pile, "meter.json")["mwh"] < 100000
    time.sleep(1)
    mark = platform.mark()
    broker.start()
    pile.wait_status(lambda s: s["orders_pending"] == 0, timeout=20)
    assert read_doc(pile, "journal.json")["r"] == []
    time.sleep(2.5)                                  # past ack_wait_s: nothing more goes out
    got = orders_for(platform, "D1", mark)
    assert got and all(o == kept for o in got), got
    acks = pile.output().count("order D1 acknowledged")
    assert acks == 1 and len(got) == 1, (acks, got)


def test_order_lost_with_its_connection_is_sent_again_once(make_pile, platform, broker):
    """The link does not keep an order across a reconnect: the journal resends it, so
    the platform gets one copy, not one from the link and one from the journal."""
    proxy = Proxy("127.0.0.1", broker.port)
    try:
        platform.mqtt_addr_for_devices = "tcp://127.0.0.1:%d" % proxy.port
        pile = up(make_pile, platform, speed=10, keepalive_s=2, ack_wait_s=60)
        charge(platform, pile, "F1")
        time.sleep(0.5)
        proxy.set_mode("blackhole")                  # the order goes into a dead link
        assert pile.bench({"cmd": "stop"})["ok"]
        pile.wait_status(lambda s: s["orders_pending"] == 1)
        time.sleep(0.5)
        proxy.set_mode("reset")                      # ... and is lost with it
        pile.wait_status(lambda s: not s["link"], timeout=10)
        mark = platform.mark()
        proxy.set_mode("pass")
        pile.wait_status(lambda s: s["orders_pending"] == 0, timeout=20)
        time.sleep(1)
        got = orders_for(platform, "F1", mark)
        assert len(got) == 1 and got[0]["reason"] == 1001, got
    finally:
        proxy.close()


def test_sigkill_mid_charge_gives_exactly_one_order(make_pile, platform):
    pile = up(make_pile, platform, speed=SPEED)
    charge(platform, pile, "K1")
    time.sleep(2)
    before = pile.status()["energy_mwh"]
    assert before > 60000, before
    pile.kill()
    mark = platform.mark()
    pile.start()
    rec = platform.wait_for(DEV, "orderUpdateEvt", since=mark, timeout=20,
                            pred=lambda m: m["body"]["pre_trade_no"] == "K1")
    order = rec["msg"]["body"]
    assert order["reason"] == 1001
    # the checkpoint is at most 20 Wh (or 30 s) behind; a little more went on till the kill
    assert before // 1000 - 25 <= order["total_elect"] <= before // 1000 + 25, (before, order)
    pile.wait_status(lambda s: s["orders_pending"] == 0)
    st = pile.wait_status(lambda s: s["work_status"] in (11, 14))
    assert st["session"] is None and not st["relay"]
    assert st["register_mwh"] >= int(order["sum_end"]) * 1000
    # a repeated start of K1 is answered, not run; a new session counts on from sum_end
    mark2 = platform.mark()
    platform.start_charge(DEV, "K1")
    platform.wait_for(DEV, "startChargeSrv_reply", since=mark2)
    time.sleep(0.3)
    assert pile.status()["session"] is None
    charge(platform, pile, "K2")
    second = stop_and_order(platform, "K2")
    assert int(second["sum_start"]) >= int(order["sum_end"]), (order, second)
    time.sleep(0.5)
    assert len(orders_for(platform, "K1")) == 1
    assert "Traceback" not in pile.output()


def test_fee_model_mid_charge_applies_to_the_next_session(make_pile, platform):
    pile = up(make_pile, platform, speed=SPEED)
    charge(platform, pile, "F1")
    time.sleep(1)
    m2 = dict(MODEL, ele_model_id="M2", charge_fee=[1, 2, 3, 4], serviceFee=[5, 6, 7, 8])
    reply = give_model(platform, **m2)["msg"]["body"]
    assert reply["result"] == 10 and reply["ele_model_id"] == "M2"
    assert pile.status()["fee_model"] == "M2"
    time.sleep(1)
    first = stop_and_order(platform, "F1")
    assert first["ele_model_id"] == "M1" and first["total_elect"] > 50
    check_money(first, MODEL)
    assert first["total_power_cost"] >= first["total_elect"] * 10         # M1: >= 1 yuan/kWh
    charge(platform, pile, "F2")
    time.sleep(1)
    second = stop_and_order(platform, "F2")
    assert second["ele_model_id"] == "M2" and second["total_elect"] > 0
    check_money(second, m2)
    # reported on every connect
    mark = platform.mark()
    pile.stop()
    pile.start()
    fw = platform.wait_for(DEV, "firmwareEvt", since=mark, timeout=20)
    assert fw["msg"]["body"]["ele_model_id"] == "M2"


def test_invalid_fee_model_refused_old_kept(make_pile, platform):
    pile = up(make_pile, platform)
    bad = (dict(time_seg=["0800", "0000", "1200"]), dict(seg_flag=[13, 14, 12]),
           dict(charge_fee=[1, 2, 3]), dict(serviceFee=[1, -2, 3, 4]))
    for over in bad:
        reply = give_model(platform, ele_model_id="BAD", **over)["msg"]["body"]
        assert reply["result"] == 11 and reply["ele_model_id"] == "BAD", reply
        assert list(over)[0] in reply["reason"], reply
    mark = platform.mark()
    platform.send_raw(DEV, {"control_equip_id": DEV, "head": {
        "cmd": "feeModelUpdateSrv", "dev_id": DEV, "session_id": 77, "timestamp": 1}, "body": {
        "ele_model_id": "BAD", "time_num": 15}})
    reply = platform.wait_for(DEV, "feeModelUpdateSrv_reply", since=mark)["msg"]["body"]
    assert reply["result"] == 11 and "time_num" in reply["reason"]
    assert pile.status()["fee_model"] == "M1"
    assert read_doc(pile, "feemodel.json")["id"] == "M1"
    mark = platform.mark()
    pile.stop()
    pile.start()
    fw = platform.wait_for(DEV, "firmwareEvt", since=mark, timeout=20)
    assert fw["msg"]["body"]["ele_model_id"] == "M1"


def test_full_journal_refuses_starts_then_drains(make_pile, platform):
    # a journal of firmware 0100000001 (orders.json) with more orders than leave room for
    # another session (journal.CAPACITY 24, a session needs 3)
    pile = make_pile(start=False, ack_wait_s=1)
    os.makedirs(pile.dir, exist_ok=True)
    seeded = []
    for k in range(22):
        o = {"gun_no": 1, "pre_trade_no": "J%02d" % k, "charge_start_time": "1700000000",
             "charge_endTime": "1700000600", "ele_model_id": "M1", "time_div_type": 10,
             "sum_start": str(1000 * k), "sum_end": str(1000 * k + 500), "start_soc": 0,
             "end_soc": 0, "reason": 1009, "total_elect": 500, "total_power_cost": 5000,
             "total_serv_cost": 10000}
        for b in ("sharp", "peak", "flat", "valley"):
            o[b + "_elect"], o[b + "_power_cost"], o[b + "_serv_cost"] = 125, 1250, 2500
        seeded.append(o)
    write_doc(pile, "orders.json", {"o": [[o[k] for k in FIELDS] for o in seeded], "d": [],
                                    "r": 0})
    platform.no_ack.add("orderUpdateEvt")
    pile.start()
    online(platform)
    give_model(platform)
    body = charging(platform, pile, "J99")
    assert (body["start_result"], body["fault_code"]) == (15, 6002), body
    sent = {r["msg"]["body"]["pre_trade_no"] for r in platform.messages(DEV, "orderUpdateEvt")}
    assert sent == {"J00", "J01", "J02"}, sent  # a window of 3, resent each round
    platform.no_ack.clear()
    pile.wait_status(lambda s: s["orders_pending"] == 0, timeout=30)
    got = {}
    for r in platform.messages(DEV, "orderUpdateEvt"):
        got.setdefault(r["msg"]["body"]["pre_trade_no"], r["msg"]["body"])
    assert got == {o["pre_trade_no"]: o for o in seeded}
    assert pile.status()["register_mwh"] >= 21500 * 1000     # never behind an order
    assert "outbox full" not in pile.output()
    body = charging(platform, pile, "J100")
    assert body["start_result"] == 10, body


FILES = ("creds.json", "feemodel.json", "journal.json", "session.json", "meter.json",
         "seq.json")


def test_torn_files_at_boot(make_pile, platform):
    pile = make_pile(speed=SPEED, ack_wait_s=30)
    online(platform)
    give_model(platform, ele_model_id="M0")
    give_model(platform)                                # M1; M0 is the generation before
    platform.no_ack.add("orderUpdateEvt")
    charge(platform, pile, "A1")
    time.sleep(0.5)
    a1 = stop_and_order(platform, "A1")                 # pending: never acknowledged
    charge(platform, pile, "A2")
    time.sleep(2.5)                                     # 75 s: checkpointed at 60 s
    pile.kill()                                         # A2 left as a checkpoint
    for name in FILES:                                  # every file torn in the middle
        path = os.path.join(pile.dir, name)
        assert os.path.exists(path), name
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[:len(data) // 2])
    platform.no_ack.clear()
    provisions = platform.provision_count[DEV]
    mark = platform.mark()
    pile.start()
    fw = platform.wait_for(DEV, "firmwareEvt", since=mark, timeout=20)
    assert fw["msg"]["body"]["ele_model_id"] == "M0"    # feemodel.json.bak
    assert platform.provision_count[DEV] == provisions + 1     # creds.json: none whole
    st = pile.wait_status(lambda s: s["orders_pending"] == 0, timeout=20)
    assert orders_for(platform, "A1", mark) == [a1]     # journal.json.bak holds it
    (a2,) = orders_for(platform, "A2", mark)            # session.json.bak: a checkpoint
    assert a2["reason"] == 1001 and a2["total_elect"] > 0
    assert int(a2["sum_start"]) >= int(a1["sum_end"])
    assert st["register_mwh"] >= int(a2["sum_end"]) * 1000     # never behind an order
    out = pile.output().split("=== start 2")[1]
    for name in FILES:
        assert "%s unreadable" % name in out, name
        assert os.path.exists(os.path.join(pile.dir, name + ".bad")), name
    assert "Traceback" not in out

    # garbage everywhere and no earlier generation: a clean start that still works
    pile.stop()
    for name in os.listdir(pile.dir):
        if name.endswith((".bak", ".tmp", ".bad")):
            os.remove(os.path.join(pile.dir, name))
    for name in FILES:
        with open(os.path.join(pile.dir, name), "wb") as f:
            f.write(b"\xff" * 40)
    mark = platform.mark()
    pile.start()
    fw = platform.wait_for(DEV, "firmwareEvt", since=mark, timeout=20)
    assert fw["msg"]["body"]["ele_model_id"] == ""
    body = charging(platform, pile, "A3")
    assert (body["start_result"], body["fault_code"]) == (15, 6000), body
    give_model(platform)
    charge(platform, pile, "A4")
    time.sleep(0.5)
    a4 = stop_and_order(platform, "A4")
    assert a4["total_elect"] > 0 and a4["ele_model_id"] == "M1"
    assert "Traceback" not in pile.output().split("=== start 3")[1]
