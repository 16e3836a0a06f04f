"""Faults on the pile's side, each a whole kind, on the firmware process against a real
mosquitto: stored files that are whole but make no sense, flapping inputs, reports of
what is no longer true, readings that cannot be true, stops under load, and a storage
folder that is missing or cannot be written.
"""
import json
import os
import time
import zlib

from conftest import DEV, charging, give_model, online
from pile_proc import ROOT
from platform_sim import device_acl


def read_doc(pile, name):
    with open(os.path.join(pile.dir, name), "rb") as f:
        crc, text = f.read().split(b"\n", 1)
    assert int(crc, 16) == zlib.crc32(text), name
    return json.loads(text)


def write_doc(path, obj):
    text = json.dumps(obj).encode()
    with open(path, "wb") as f:
        f.write(b"%08x\n" % zlib.crc32(text) + text)


def bodies(platform, cmd, since=0):
    """Bodies of the pile's `cmd` messages from the platform's record index `since` on."""
    return [r["msg"]["body"] for r in platform.messages()[since:]
            if r["dev"] == DEV and r["cmd"] == cmd]


# --- 1. files whole but without sense -------------------------------------------------------

def test_whole_files_that_make_no_sense_fall_back_to_the_previous_generation(
        make_pile, platform):
    pile = make_pile(speed=20, ack_wait_s=30)
    online(platform)
    give_model(platform, ele_model_id="M0")
    give_model(platform)
    platform.no_ack.add("orderUpdateEvt")
    assert charging(platform, pile, "W1")["start_result"] == 10
    time.sleep(0.5)
    mark = platform.mark()
    platform.stop_charge(DEV, "W1")
    w1 = platform.wait_for(DEV, "orderUpdateEvt", since=mark)["msg"]["body"]
    assert charging(platform, pile, "W2")["start_result"] == 10
    time.sleep(3.5)                              # 70 s of board time: a checkpoint at 60 s
    pile.kill()                                  # W1 pending, W2 a checkpoint
    for name in ("journal.json", "session.json", "feemodel.json", "meter.json",
                 "seq.json", "creds.json"):      # the previous generation kept aside
        os.replace(os.path.join(pile.dir, name), os.path.join(pile.dir, name + ".bak"))
    nonsense = {"journal.json": {"v": 2, "r": [["O", "W1"]], "d": [], "top": 0},
                "session.json": [1, 2, 3],
                "feemodel.json": {"id": "BAD", "starts": [600, 300], "bands": [0, 0],
                                  "power": [1, 2, 3, 4], "service": [1, 2, 3, 4]},
                "meter.json": {"mwh": "a lot"},
                "seq.json": {"next": -5},
                "creds.json": {"mqtt_account": 5}}
    for name, doc in nonsense.items():
        write_doc(os.path.join(pile.dir, name), doc)
    platform.no_ack.clear()
    provisions = platform.provision_count[DEV]
    mark = platform.mark()
    pile.start()
    fw = platform.wait_for(DEV, "firmwareEvt", since=mark, timeout=20)
    assert fw["msg"]["body"]["ele_model_id"] == "M1"
    assert platform.provision_count[DEV] == provisions          # creds.json.bak used
    st = pile.wait_status(lambda s: s["orders_pending"] == 0, timeout=20)
    got = {b["pre_trade_no"]: b for b in bodies(platform, "orderUpdateEvt", mark)}
    assert got["W1"] == w1                                       # nothing lost
    assert got["W2"]["total_elect"] > 0 and got["W2"]["reason"] == 1001
    assert st["register_mwh"] >= int(got["W2"]["sum_end"]) * 1000
    out = pile.output().split("=== start 2")[1]
    for name in nonsense:
        assert "%s unreadable" % name in out and "using %s.bak" % name in out, name
    assert "Traceback" not in out


def test_files_of_the_previous_firmware_are_read(make_pile, platform):
    """Files as firmware 0100000001 wrote them (tests/system/data/v1: a pending order in
    orders.json, a running session's checkpoint without "v", the register, the fee model,
    the credentials and the event ids): the update boots on them and loses nothing."""
    pile = make_pile(start=False)
    src = os.path.join(ROOT, "tests", "system", "data", "v1")
    os.makedirs(pile.dir, exist_ok=True)
    for name in os.listdir(src):
        with open(os.path.join(src, name), "rb") as f, \
                open(os.path.join(pile.dir, name), "wb") as g:
            g.write(f.read())
    with open(os.path.join(src, "expected.json")) as f:
        want = json.load(f)
    # the stored credentials point at this test's broker (the platform installs them)
    creds = read_doc(pile, "creds.json")
    creds["mqtt_server_addr"] = platform.mqtt_addr_for_devices
    platform.broker.set_user(creds["mqtt_account"], creds["mqtt_password"])
    platform.broker.set_acl(creds["mqtt_account"], device_acl("HCI-EVA7", DEV))
    platform.broker.reload()
    write_doc(os.path.join(pile.dir, "creds.json"), creds)
    platform._pk[DEV] = "HCI-EVA7"
    mark = platform.mark()
    pile.start()
    fw = platform.wait_for(DEV, "firmwareEvt", since=mark, timeout=20)
    assert fw["msg"]["body"]["ele_model_id"] == want["fee_model"]
    assert fw["msg"]["head"]["session_id"] > want["last_event_id"]
    pile.wait_status(lambda s: s["orders_pending"] == 0, timeout=20)
    got = {b["pre_trade_no"]: b for b in bodies(platform, "orderUpdateEvt", mark)}
    assert got[want["pending"]["pre_trade_no"]] == want["pending"]
    cut = got[want["checkpoint"]]
    assert cut["reason"] == 1001 and cut["total_elect"] == want["checkpoint_wh"], cut
    assert pile.status()["register_mwh"] >= want["register_mwh"]
    assert platform.provision_count[DEV] == 0
    assert not os.path.exists(os.path.join(pile.dir, "orders.json"))


# --- 2. flapping inputs -------------------------------------------------------------------------

def test_bouncing_plug_makes_one_report_a_second_and_the_last_state(make_pile, platform):
    pile = make_pile()
    online(platform)
    time.sleep(0.5)
    mark = platform.mark()
    t0 = time.time()
    for k in range(100):                         # plug / unplug every 100 ms for 10 s
        pile.bench({"cmd": "plug" if k % 2 == 0 else "unplug"})
        time.sleep(max(0, t0 + (k + 1) * 0.1 - time.time()))
    pile.bench({"cmd": "plug"})
    time.sleep(2.5)
    reports = [b["work_status"] for b in bodies(platform, "acGunRunIty", mark)]
    assert 5 <= len(reports) <= 14, reports       # ~one a second, not 100
    assert reports[-1] == 11                     # the last state: plugged


# --- 3. reports that are no longer true ------------------------------------------------------

def test_reports_say_what_is_true_now(make_pile, platform):
    pile = make_pile(speed=10, telemetry_fast_s=2)
    online(platform)
    give_model(platform)
    mark = platform.mark()
    assert charging(platform, pile, "R1")["start_result"] == 10
    time.sleep(2)
    platform.stop_charge(DEV, "R1")
    order = platform.wait_for(DEV, "orderUpdateEvt", since=mark)["msg"]["body"]
    fin = platform.wait_for(DEV, "acGunRunIty", since=mark,
                            pred=lambda m: m["body"]["work_status"] == 14)["msg"]["body"]
    # finished, still plugged: the finished trade and its totals, nothing flowing
    assert fin["pre_trade_no"] == "R1" and fin["total_elect"] == order["total_elect"] > 0
    assert fin["total_power_cost"] == order["total_power_cost"]
    assert (fin["ac_cur_a"], fin["real_power"], fin["out_relay_status"]) == (0, 0, 10), fin
    pile.bench({"cmd": "unplug"})
    idle = platform.wait_for(DEV, "acGunRunIty", since=mark,
                             pred=lambda m: m["body"]["work_status"] == 10)["msg"]["body"]
    assert idle["pre_trade_no"] == "" and idle["total_elect"] == 0
    # no field that cannot be negative ever is (idle noise included)
    for b in bodies(platform, "acGunRunIty"):
        for k, v in b.items():
            assert not isinstance(v, int) or v >= 0, (k, v)


# --- 4. readings that cannot be true ------------------------------------------------------------

def test_dead_adc_adds_no_energy_and_reads_as_a_meter_failure(make_pile, platform):
    pile = make_pile(speed=30)
    online(platform)
    give_model(platform)
    before = pile.status()["register_mwh"]
    mark = platform.mark()
    pile.bench({"cmd": "fault", "name": "adc_dead", "on": True})
    time.sleep(1)                                # 30 s of board time, no vehicle
    st = pile.status()
    assert st["register_mwh"] == before and st["v_mv"] == 0 and st["i_ma"] == 0, st
    faults = platform.wait_for(DEV, "totalFaultEvt", since=mark)["msg"]["body"]
    assert 3006 in faults["fault_value"]
    last = bodies(platform, "acGunRunIty", mark)[-1]
    assert last["ac_vol_a"] == 0 and last["ac_cur_a"] == 0 and last["work_status"] == 16
    # a session cut by the failure bills no more than it counted before it
    pile.bench({"cmd": "fault", "name": "adc_dead", "on": False})
    pile.wait_status(lambda s: s["faults"] == [], timeout=10)
    assert charging(platform, pile, "D1")["start_result"] == 10
    time.sleep(1)
    pile.bench({"cmd": "speed", "x": 1})        # real time: little is counted between
    counted = pile.status()["energy_mwh"]       # this reading and the failure (~2 Wh/s)
    pile.bench({"cmd": "fault", "name": "adc_dead", "on": True})
    order = platform.wait_for(DEV, "orderUpdateEvt", timeout=15)["msg"]["body"]
    assert order["reason"] == 3006 and order["total_elect"] <= counted // 1000 + 2, order


# --- 6. normal stops open the contactor without load ---------------------------------------------

def test_normal_stops_never_open_the_contactor_under_load(make_pile, platform):
    pile = make_pile(speed=10, relay_min_open_s=0)
    online(platform)
    give_model(platform)
    for k, how in enumerate(("platform", "button", "energy limit")):
        trade = "S%d" % k
        kw = {"charge_mode": 12, "limit_data": 1} if how == "energy limit" else {}
        assert charging(platform, pile, trade, **kw)["start_result"] == 10
        pile.wait_state(lambda s: s["relay_closed"] and s["current_a"] > 30)
        time.sleep(0.3)
        if how == "platform":
            platform.stop_charge(DEV, trade)
        elif how == "button":
            pile.bench({"cmd": "button"})
        pile.wait_state(lambda s: not s["relay_closed"], timeout=60)
        platform.wait_for(DEV, "orderUpdateEvt",
                          pred=lambda m: m["body"]["pre_trade_no"] == trade, timeout=10)
        pile.bench({"cmd": "unplug"})
        time.sleep(0.3)
    st = pile.state()
    assert st["under_load"] == 0 and st["violation_count"] == 0, st


# --- 7. storage that is missing or cannot be written -----------------------------------------

def test_missing_storage_folder_is_made(make_pile, platform, tmp_path):
    pile = make_pile(start=False)
    pile.storage = str(tmp_path / "not" / "there")          # run by hand, as the README
    pile.start()
    online(platform)
    give_model(platform)
    assert os.path.exists(os.path.join(pile.storage, "creds.json"))
    assert os.path.exists(os.path.join(pile.storage, "feemodel.json"))
    assert "not saved" not in pile.output()


def test_unwritable_storage_says_so_and_refuses_to_charge(make_pile, platform, tmp_path):
    if os.geteuid() == 0:
        # root writes anywhere: a storage "folder" that is a file cannot be written
        blocker = tmp_path / "flash"
        blocker.write_text("not a folder")
        storage = str(blocker)
    else:
        storage = str(tmp_path / "ro")
        os.makedirs(storage)
        os.chmod(storage, 0o500)
    pile = make_pile(start=False)
    pile.storage = storage
    pile.start()
    online(platform)
    give_model(platform)
    body = charging(platform, pile, "F1")
    assert (body["start_result"], body["fault_code"]) == (15, 6005), body
    assert "not writable" in pile.output()
    assert pile.status()["storage_error"]
