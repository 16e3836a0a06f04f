"""pile.protocol: every message the pile builds (checked against the seed's examples, field
sets and units), decode's classification of everything the platform may send (services,
acknowledgements, echoes, malformed input, strict RFC 8259 JSON), and link.header.
Runs inside MicroPython: a Protocol on a fresh storage directory and a fixed wall clock;
the strict-JSON corpus also goes through the real App (kit.Pile) to show it changes nothing.
The seed's example messages (jsiot-seed.md) are copied below verbatim, spacing included."""
import json

import kit
from pile import feemodel, link, protocol, store

DEV = "CLA333333333333"
NOW = 1652457439373             # the Protocol's wall clock in these tests (Unix ms)
SVC = "/sys/HCI-EVA7/%s/thing/service/" % DEV
EVT = "/sys/HCI-EVA7/%s/thing/event/" % DEV
BUF = 1024                      # pile.protocol's message buffer (_BUF)
DEPTH = 16                      # the deepest nesting a downlink may have (strictjson.DEPTH)
START, STOP, FEE = "startChargeSrv", "stopChargeSrv", "feeModelUpdateSrv"

# --- the seed's example messages, verbatim (jsiot-seed.md) ----------------------------------
# 版本信息上报（设备上报）
SEED_VERSION = """{
    "body": {
        "dev_reg_method": 12, 
        "pile_hardware_ver": "00B1161210", 
        "pile_software_ver": "2078220507", 
        "sdk_ver": "2.5.0"
    }, 
    "head": {
        "cmd": "verInfoEvt", 
        "dev_id": "CLA333333333333", 
        "seq_id": 2, 
        "session_id": 2, 
        "status": 0, 
        "timestamp": 1652457439373, 
        "ttl": -1, 
        "version": 0
    }
}
"""

# 固件信息上报（设备上报）
SEED_FIRMWARE = """{
    "body": {
        "ct": 1, 
        "bt_mac": " ", 
        "dev_sn": "CLA333333333333", 
        "dev_type": 10, 
        "ele_model_id": "176782004157792259", 
        "grid_type": 11, 
        "height": 0, 
        "im_mac": "333333414C43", 
        "in_meter": [ ], 
        "latitude": 0, 
        "longitude": 0, 
        "mea_type": 13, 
        "ot_cur": 320, 
        "ot_max_vol": 2200, 
        "ot_min_vol": 2200, 
        "ot_rate": 70, 
        "out_meter": [ ], 
        "port_num": 1, 
        "sim_no": "", 
        "stake_model": "CL5899", 
        "vendor_code": 17228
    }, 
    "head": {
        "cmd": "firmwareEvt", 
        "dev_id": "CLA333333333333", 
        "seq_id": 1, 
        "session_id": 1, 
        "status": 0, 
        "timestamp": 1663758580294, 
        "ttl": -1, 
        "version": 0
    }
}
"""

# 下发电价（设备接收）
SEED_FEE = """{
    "control_equip_id": "CLA333333333333", 
    "version": "1.0.0", 
    "priority": 1, 
    "reliability": 1, 
    "compress": 0, 
    "media_type": 0, 
    "request_type": 1, 
    "head": {
        "version": "1.0.0", 
        "session_id": 1010101, 
        "cmd": "feeModelUpdateSrv", 
        "status": 0, 
        "ttl": -1, 
        "timestamp": 1604479330996, 
        "dev_id": "CLA333333333333"
    }, 
    "body": {
        "ele_model_id": "1223213", 
        "time_num": 3, 
        "time_seg": [
            "1023", 
            "1230", 
            "1430"
        ], 
        "seg_flag": [
            10, 
            11, 
            12
        ], 
        "charge_fee": [
            10000, 
            50000, 
            20000, 
            10000
        ], 
        "serviceFee": [
            20000, 
            20000, 
            20000, 
            10000
        ]
    }
}
"""

# 告警信息上报（设备上报）
SEED_FAULT = """{
    "head": {
        "dev_id": "CLA333333333333", 
        "cmd": "totalFaultEvt", 
        "session_id": 1144, 
        "ttl": -1, 
        "version": 0, 
        "seq_id": 1144, 
        "status": 1, 
        "timestamp": 1650807876250
    }, 
    "item_id": "203E27AA55FD0E8B1A8F0A7D6E80352E", 
    "body": {
        "warn_sum": 0, 
        "fault_su": 1, 
        "gun_no": 1, 
        "fault_value": [
            4000, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0
        ], 
        "warnValue": [
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0, 
            0
        ]
    }
}
"""

# 启动充电服务（设备接收）
SEED_START = """{
    "control_equip_id": "CLC202205270001", 
    "head": {
        "dev_id": "CLC202205270001", 
        "cmd": "startChargeSrv", 
        "session_id": 918728624, 
        "ttl": 0, 
        "version": "1.0.0", 
        "seqId": 0, 
        "status": 0, 
        "timestamp": 1649757719377
    }, 
    "request_type": 1, 
    "compress": 0, 
    "reliability": 2, 
    "media_type": 0, 
    "body": {
        "dev_id": "CLC202205270001", 
        "gun_no": 1, 
        "charge_mode": 10, 
        "limit_data": 0, 
        "insert_gun_time": 1000, 
        "start_mode": 0, 
        "pre_trade_no": "002609666164734122687241695", 
        "start_type": 10
    }, 
    "priority": 2, 
    "version": "1.0.0"
}
"""

# 启动充电结果事件（设备上报）
SEED_START_RESULT = """{
    "body": {
        "fault_code": 0, 
        "gun_no": 1, 
        "pre_trade_no": "002609666165243560255984642", 
        "start_result": 10
    }, 
    "head": {
        "cmd": "startChaResEvt", 
        "dev_id": "CLA333333333333", 
        "seq_id": 75, 
        "session_id": 75, 
        "status": 0, 
        "timestamp": 1652464404902, 
        "ttl": -1, 
        "version": 0
    }
}
"""

# 交流充电枪充电中实时监测属性（设备上报）
SEED_STATUS = """{
    "body": {
        "pwm_duty_radio": 53, 
        "ac_cur_a": 0, 
        "ac_vol_a": 2311, 
        "chg_time": 0, 
        "con_status": 10, 
        "e_lock_status": 10, 
        "flat_elect": 0, 
        "gun_no": 1, 
        "gun_temp": 500, 
        "out_relay_status": 11, 
        "peak_elect": 0, 
        "pre_trade_no": "002609666166262021339745662", 
        "real_power": 0, 
        "sharp_elect": 0, 
        "total_cost": 0, 
        "total_elect": 0, 
        "total_power_cost": 0, 
        "total_serv_cost": 0, 
        "trade_no": " ", 
        "valley_elect": 0, 
        "work_status": 13
    }, 
    "head": {
        "cmd": "acGunRunIty", 
        "dev_id": "CLA202205070001", 
        "seq_id": 29, 
        "session_id": 29, 
        "status": 0, 
        "timestamp": 1662649016130, 
        "ttl": -1, 
        "version": 0
    }
}
"""

# 停止充电（设备接收）
SEED_STOP = """{
    "control_equip_id": "CLA333333333333", 
    "version": "1.0.0", 
    "priority": 1, 
    "reliability": 1, 
    "compress": 0, 
    "media_type": 0, 
    "request_type": 1, 
    "head": {
        "version": "1.0.0", 
        "session_id": 1010101, 
        "cmd": "stopChargeSrv", 
        "status": 0, 
        "ttl": -1, 
        "timestamp": 1604479330996, 
        "dev_id": "CLA333333333333"
    }, 
    "body": {
        "gun_no": 1, 
        "pre_trade_no": "002609666164905582841558242", 
        "stop_reason": 10
    }
}
"""

# 停止充电结果上报（设备上报）
SEED_STOP_RESULT = """{
    "body": {
        "gun_no": 1, 
        "pre_trade_no": "002609666165243560255984642", 
        "result_code": 1002, 
        "stop_fail_reson": 11, 
        "stop_result": 10
    }, 
    "head": {
        "cmd": "stopChaResEvt", 
        "dev_id": "CLA333333333333", 
        "seq_id": 87, 
        "session_id": 87, 
        "status": 0, 
        "timestamp": 1652464495026, 
        "ttl": -1, 
        "version": 0
    }
}
"""

# 交易记录上传事件（设备上报）
SEED_ORDER = """{
    "body": {
        "charge_endTime": "1652435698", 
        "charge_start_time": "1652435604", 
        "ele_model_id": "130882763317428226", 
        "end_soc": 0, 
        "flat_elect": 0, 
        "flat_power_cost": 0, 
        "flat_serv_cost": 0, 
        "gun_no": 1, 
        "peak_elect": 0, 
        "peak_power_cost": 0, 
        "peak_serv_cost": 0, 
        "pre_trade_no": "002609666165302878395110218", 
        "reason": 1000, 
        "sharp_elect": 21, 
        "sharp_power_cost": 1085, 
        "sharp_serv_cost": 1085, 
        "start_soc": 0, 
        "sum_end": "25969", 
        "sum_start": "25947", 
        "time_div_type": 10, 
        "total_elect": 21, 
        "total_power_cost": 1085, 
        "total_serv_cost": 1085, 
        "valley_elect": 0, 
        "valley_power_cost": 0, 
        "valley_serv_cost": 0
    }, 
    "head": {
        "cmd": "orderUpdateEvt", 
        "dev_id": "CLA202205070001", 
        "seq_id": 89, 
        "session_id": 89, 
        "status": 0, 
        "timestamp": 1652464498422, 
        "ttl": -1, 
        "version": 0
    }
}
"""

SEEDS = (SEED_VERSION, SEED_FIRMWARE, SEED_FEE, SEED_FAULT, SEED_START, SEED_START_RESULT,
         SEED_STATUS, SEED_STOP, SEED_STOP_RESULT, SEED_ORDER)


def _proto(dev=DEV, board=None, dir=None, trusted=True):
    """A Protocol on fresh storage whose event ids start at 1 (seq.json "next" 0), or on
    `dir` as a reboot finds it."""
    if dir is None:
        store.init(kit.fresh_dir())
        store.save("seq.json", {"next": 0})
    else:
        store.init(dir)
    return protocol.Protocol(kit.cfg(dev_id=dev), board or kit.BOARD, lambda: NOW,
                             lambda: trusted)


def _msg(cmd, body, sid=1010101, dev=DEV, **top):
    """A downlink shaped like the seed's examples."""
    msg = {"control_equip_id": dev, "version": "1.0.0", "priority": 1, "reliability": 1,
           "compress": 0, "media_type": 0, "request_type": 1,
           "head": {"version": "1.0.0", "session_id": sid, "cmd": cmd, "status": 0,
                    "ttl": -1, "timestamp": 1604479330996, "dev_id": dev},
           "body": body}
    msg.update(top)
    return msg


START_BODY = {"dev_id": DEV, "gun_no": 1, "charge_mode": 10, "limit_data": 0,
              "insert_gun_time": 1000, "start_mode": 0,
              "pre_trade_no": "002609666164734122687241695", "start_type": 10}
STOP_BODY = {"gun_no": 1, "pre_trade_no": "002609666164905582841558242", "stop_reason": 10}
FEE_BODY = {"ele_model_id": "1223213", "time_num": 3, "time_seg": ["1023", "1230", "1430"],
            "seg_flag": [10, 11, 12], "charge_fee": [10000, 50000, 20000, 10000],
            "serviceFee": [20000, 20000, 20000, 10000]}
# the seed's fee model as decode hands it over: 10:23 sharp, 12:30 peak, 14:30 flat
SEED_MODEL = {"id": "1223213", "starts": [623, 750, 870], "bands": [0, 1, 2],
              "power": [10000, 50000, 20000, 10000], "service": [20000, 20000, 20000, 10000]}


def _decode(msg, cmd=None, topic=None, proto=None):
    if topic is None:
        topic = SVC + (cmd or msg["head"]["cmd"])
    payload = msg if isinstance(msg, (bytes, str)) else json.dumps(msg)
    return (proto or _proto()).decode(topic, payload)


def _bad(result, why, cmd=None, sid=None, ids=None):
    assert len(result) == 5 and result[0] == "bad", result
    assert why in result[1], "%r lacks %r" % (result[1], why)
    assert result[2] == cmd and result[3] == sid and result[4] == ids, result


def _out(r):
    """(session_id, topic, message) of a builder's result; the payload is a memoryview of
    at most BUF bytes of strict JSON."""
    sid, topic, payload = r
    assert type(payload) is memoryview, type(payload)
    raw = bytes(payload)
    assert len(raw) <= BUF and protocol.strict(raw) is None, (protocol.strict(raw), raw)
    return sid, topic, json.loads(raw)


def _event(r, cmd, seed=None, status=0):
    """The message of event `cmd`: its topic, and a head shaped like the seed's devices'
    (the same fields; seq_id = session_id = the id returned)."""
    sid, topic, msg = _out(r)
    assert topic == EVT + cmd + "/post", topic
    assert msg["head"] == {"cmd": cmd, "dev_id": DEV, "seq_id": sid, "session_id": sid,
                           "status": status, "timestamp": NOW, "ttl": -1, "version": 0}, msg
    if seed is not None:
        s = json.loads(seed)
        assert sorted(msg) == sorted(s), (sorted(msg), sorted(s))
        assert sorted(msg["head"]) == sorted(s["head"])
        assert sorted(msg["body"]) == sorted(s["body"]), (sorted(msg["body"]), sorted(s["body"]))
    return sid, msg


# --- what the pile sends: every builder against the seed -------------------------------------

SEED_BOARD = {"identity": {"stake_model": "CL5899", "vendor_code": 17228, "dev_type": 10,
                           "port_num": 1, "mea_type": 13, "ct": 1, "grid_type": 11,
                           "latitude": 0, "longitude": 0, "height": 0,
                           "hardware_ver": "00B1161210", "dev_reg_method": 12},
              "ratings": {"ot_rate": 70, "ot_cur": 320, "ot_max_vol": 2200, "ot_min_vol": 2200,
                          "cable_a": 32, "nominal_v": 220}}


def test_firmware_evt_is_the_seeds():
    p = _proto(board=SEED_BOARD)
    sid, msg = _event(p.firmware("176782004157792259", "333333414C43"), "firmwareEvt",
                      SEED_FIRMWARE)
    assert sid == 1
    assert msg["body"] == json.loads(SEED_FIRMWARE)["body"], msg["body"]


def test_firmware_evt_from_the_board_file():
    p = _proto()
    _, msg = _event(p.firmware("", "0A0B0C0D0E0F"), "firmwareEvt", SEED_FIRMWARE)
    b, i, r = msg["body"], kit.BOARD["identity"], kit.BOARD["ratings"]
    assert b["dev_sn"] == DEV and b["ele_model_id"] == "" and b["im_mac"] == "0A0B0C0D0E0F"
    for k in ("dev_type", "stake_model", "vendor_code", "port_num", "mea_type", "ct",
              "grid_type", "latitude", "longitude", "height"):
        assert b[k] == i[k], k
    for k in ("ot_rate", "ot_cur", "ot_max_vol", "ot_min_vol"):   # 0.1 kW, 0.1 A, 0.1 V
        assert b[k] == r[k], k
    assert (b["ot_rate"], b["ot_cur"], b["ot_max_vol"]) == (70, 320, 2530)
    assert b["bt_mac"] == " " and b["sim_no"] == "" and b["in_meter"] == b["out_meter"] == []


def test_version_evt_is_the_seeds():
    p = _proto()                    # the sim board file has the seed's hardware version
    sid, msg = _event(p.version("2078220507"), "verInfoEvt", SEED_VERSION)
    assert msg["body"] == json.loads(SEED_VERSION)["body"], msg["body"]
    assert msg["body"]["sdk_ver"] == kit.cfg()["sdk_ver"]


def test_status_is_the_seeds():
    # work_status 13, plugged, unlocked, relay closed, 53 %, 231.1 V, no current, 0.0 C
    g = (13, True, False, True, 53, 231100, 0, 0, 0, "002609666166262021339745662", 0,
         [0, 0, 0, 0], None)
    _, msg = _event(_proto().status(g), "acGunRunIty", SEED_STATUS)
    assert msg["body"] == json.loads(SEED_STATUS)["body"], msg["body"]


def test_status_units():
    e = [1234567, 2000999, 0, 5555555]     # mWh per band
    g = (13, True, True, True, 53, 231149, 31899, 7349999, 253, "T1", 179999, e, kit.COMPACT)
    _, msg = _event(_proto().status(g), "acGunRunIty")
    b = msg["body"]
    assert (b["gun_no"], b["pre_trade_no"], b["trade_no"], b["work_status"]) == (1, "T1", " ", 13)
    assert (b["con_status"], b["e_lock_status"], b["out_relay_status"]) == (10, 11, 11)
    assert b["pwm_duty_radio"] == 53
    assert b["ac_vol_a"] == 2311 and b["ac_cur_a"] == 318      # 0.1 V, 0.1 A (truncated)
    assert b["real_power"] == 73                               # 0.1 kW
    assert b["gun_temp"] == 753                                # 25.3 C + 50 C, 0.1 C
    assert b["chg_time"] == 2                                  # whole minutes
    assert (b["sharp_elect"], b["peak_elect"], b["flat_elect"], b["valley_elect"]) == \
        (1234, 2000, 0, 5555)                                  # Wh, truncated per band
    assert b["total_elect"] == 1234 + 2000 + 5555
    # money (PROTOCOL.md section 5): each band's cost from its whole energy, then summed
    assert b["total_power_cost"] == 12345 + 100049 + 0 + 55555
    assert b["total_serv_cost"] == 24691 + 40019 + 0 + 55555
    assert b["total_cost"] == b["total_power_cost"] + b["total_serv_cost"]


def test_status_idle_and_clamped():
    p = _proto()
    g = (10, False, False, False, 100, -5, -7, -9, None, None, 0, [0, 0, 0, 0], None)
    _, msg = _event(p.status(g), "acGunRunIty")
    b = msg["body"]
    assert (b["con_status"], b["e_lock_status"], b["out_relay_status"]) == (11, 10, 10)
    assert b["pwm_duty_radio"] == 0 and b["pre_trade_no"] == "" and b["gun_temp"] == 500
    assert b["ac_vol_a"] == b["ac_cur_a"] == b["real_power"] == 0
    assert b["total_cost"] == b["total_power_cost"] == b["total_serv_cost"] == 0
    g = (16, True, False, False, 0, 0, 0, 0, -700, "", 0, [0, 0, 0, 0], None)
    _, msg = _event(p.status(g), "acGunRunIty")
    assert msg["body"]["pwm_duty_radio"] == 0 and msg["body"]["gun_temp"] == 0  # -70 C


def test_fault_evt_is_the_seeds():
    p = _proto()
    _, msg = _event(p.faults([4000], [], "203E27AA55FD0E8B1A8F0A7D6E80352E"), "totalFaultEvt",
                    SEED_FAULT, status=1)
    assert msg["item_id"] == "203E27AA55FD0E8B1A8F0A7D6E80352E"
    assert msg["body"] == json.loads(SEED_FAULT)["body"], msg["body"]
    _, msg = _event(p.faults([3003, 4004], [3010], "AB" * 16), "totalFaultEvt", status=1)
    b = msg["body"]
    assert (b["fault_su"], b["warn_sum"]) == (2, 1)
    assert b["fault_value"] == [3003, 4004] + [0] * 28 and b["warnValue"] == [3010] + [0] * 9


def test_start_result_is_the_seeds():
    _, msg = _event(_proto().start_result("002609666165243560255984642", 10, 0),
                    "startChaResEvt", SEED_START_RESULT)
    assert msg["body"] == json.loads(SEED_START_RESULT)["body"], msg["body"]
    _, msg = _event(_proto().start_result("T", 15, 6000), "startChaResEvt")
    assert msg["body"] == {"gun_no": 1, "pre_trade_no": "T", "start_result": 15,
                           "fault_code": 6000}


def test_stop_result_is_the_seeds():
    _, msg = _event(_proto().stop_result("002609666165243560255984642", 10, 11, 1002),
                    "stopChaResEvt", SEED_STOP_RESULT)
    assert msg["body"] == json.loads(SEED_STOP_RESULT)["body"], msg["body"]


def test_order_is_the_seeds():
    # 21.7 Wh in the sharp band at 5.0000 yuan/kWh power and service; the register stood
    # at 25947.9 Wh: sum_start "25947", sum_end "25969" (within one unit per band of 21)
    p = _proto()
    _, msg = _event(p.order("002609666165302878395110218", 1652435604000, 1652435698999,
                            "130882763317428226", [50000, 0, 0, 0], [50000, 0, 0, 0],
                            25947900, [21700, 0, 0, 0], 1000), "orderUpdateEvt", SEED_ORDER)
    assert msg["body"] == json.loads(SEED_ORDER)["body"], msg["body"]


def test_order_units_by_hand():
    e = [1234567, 2000999, 0, 5555555]
    _, msg = _event(_proto().order("T9", 1700000000500, 1700003600999, "M1",
                                   kit.COMPACT["power"], kit.COMPACT["service"], 999,
                                   e, 1005), "orderUpdateEvt")
    b = msg["body"]
    assert b["charge_start_time"] == "1700000000" and b["charge_endTime"] == "1700003600"
    assert b["sum_start"] == "0" and b["sum_end"] == str((999 + sum(e)) // 1000)
    assert (b["ele_model_id"], b["time_div_type"], b["start_soc"], b["end_soc"]) == \
        ("M1", 10, 0, 0)
    want = {"sharp": (1234, 12345, 24691), "peak": (2000, 100049, 40019), "flat": (0, 0, 0),
            "valley": (5555, 55555, 55555)}
    for band, (el, pc, sc) in want.items():
        assert (b[band + "_elect"], b[band + "_power_cost"], b[band + "_serv_cost"]) == \
            (el, pc, sc), band
    assert b["total_elect"] == 8789 and b["reason"] == 1005
    assert b["total_power_cost"] == 12345 + 100049 + 55555
    assert b["total_serv_cost"] == 24691 + 40019 + 55555


ORDER_NAMES = ("gun_no pre_trade_no charge_start_time charge_endTime ele_model_id "
               "time_div_type sum_start sum_end start_soc end_soc sharp_elect "
               "sharp_power_cost sharp_serv_cost peak_elect peak_power_cost peak_serv_cost "
               "flat_elect flat_power_cost flat_serv_cost valley_elect valley_power_cost "
               "valley_serv_cost total_elect total_power_cost total_serv_cost reason").split()


def test_wire_order_is_the_seeds():
    """An order journaled by firmware 0100000001 goes out with the body it had."""
    seed = json.loads(SEED_ORDER)["body"]
    assert sorted(ORDER_NAMES) == sorted(seed)
    _, msg = _event(_proto().wire_order([seed[k] for k in ORDER_NAMES]), "orderUpdateEvt",
                    SEED_ORDER)
    assert msg["body"] == seed, msg["body"]


def test_replies():
    p = _proto()
    sid, topic, msg = _out(p.reply(FEE, 1010101, protocol.SUCCESS, {"id": "1223213"}, None))
    assert sid == 1010101 and topic == SVC + "feeModelUpdateSrv_reply"
    assert msg["head"] == {"cmd": "feeModelUpdateSrvReply", "dev_id": DEV,
                           "session_id": 1010101, "status": 0, "timestamp": NOW, "ttl": -1,
                           "version": 0}, msg
    assert msg["body"] == {"result": 10, "ele_model_id": "1223213"}
    sid, topic, msg = _out(p.reply(START, 918728624, protocol.FAILURE, (1, "T7"), "why"))
    assert topic == SVC + "startChargeSrv_reply" and msg["head"]["cmd"] == "startChargeSrvReply"
    assert msg["head"]["session_id"] == 918728624
    assert msg["body"] == {"result": 11, "gun_no": 1, "pre_trade_no": "T7", "reason": "why"}
    _, topic, msg = _out(p.reply(STOP, 5, protocol.SUCCESS, (1, "T7", 10), None))
    assert topic == SVC + "stopChargeSrv_reply"
    assert msg["body"] == {"result": 10, "gun_no": 1, "pre_trade_no": "T7"}
    _, _, msg = _out(p.reply(STOP, 6, protocol.FAILURE, None, "body.gun_no missing"))
    assert msg["body"] == {"result": 11, "reason": "body.gun_no missing"}
    # replies take no event id: the next event is still the first
    assert p.start_result("T7", 10, 0)[0] == 1


def test_timestamp_is_zero_until_the_clock_is_trusted():
    trusted = [False]
    store.init(kit.fresh_dir())
    p = protocol.Protocol(kit.cfg(dev_id=DEV), kit.BOARD, lambda: NOW, lambda: trusted[0])
    for mk in (lambda: p.version("x"), lambda: p.reply(START, 9, 11, None, "clock")):
        _, _, msg = _out(mk())
        assert msg["head"]["timestamp"] == 0, msg
    trusted[0] = True
    _, msg = _event(p.version("x"), "verInfoEvt", SEED_VERSION)     # NOW in the head


def test_event_ids_increase_across_reboots():
    d = kit.fresh_dir()
    store.init(d)
    store.save("seq.json", {"next": 0})
    p = _proto(dir=d)
    sids = [p.start_result("T", 10, 0)[0], p.version("x")[0]]
    p.reply(START, 77, 10, None, None)
    sids.append(p.stop_result("T", 10, 0, 1009)[0])
    assert sids == [1, 2, 3], sids
    p = _proto(dir=d)                   # a reboot: ids go on from the next block
    first = p.version("x")[0]
    assert first > 3, first
    last = first
    for _ in range(1000):               # through the end of the reserved block
        sid = p.start_result("T", 10, 0)[0]
        assert sid == last + 1
        last = sid
    assert _proto(dir=d).version("x")[0] > last       # never an id used before


def test_event_ids_with_every_copy_lost_come_from_a_random_block():
    """seq.json and its generations lost (or a new pile): not from 1 again, where an
    acknowledgement of an event from before the loss could match a new one."""
    firsts = set()
    for _ in range(5):
        p = _proto(dir=kit.fresh_dir())
        first = p.version("x")[0]
        assert 1000 < first < 1 << 30 and first % 1000 == 1, first
        firsts.add(first)
        assert store.load("seq.json") == {"next": first - 1 + 1000}
    assert len(firsts) == 5, firsts
    # the journal's copy (journal.json "seq") raises it: seq.json alone lost costs nothing
    p = _proto(dir=kit.fresh_dir())
    p.reserve(1 << 30)                            # above any random block
    assert p.version("x")[0] == (1 << 30) + 1
    assert store.load("seq.json") == {"next": (1 << 30) + 1000}


def test_text_goes_out_as_utf8_and_escaped():
    """The payload is the message's UTF-8 bytes (its length counts bytes); strings are
    escaped (quotes, backslashes, control characters), so an odd trade number still makes
    strict JSON."""
    p = _proto()
    _, _, payload = p.reply(START, 1, 11, (1, 'a"b\\c\x01d'), "枪温 90°C")
    raw = bytes(payload)
    assert protocol.strict(raw) is None
    msg = json.loads(raw)
    assert msg["body"]["reason"] == "枪温 90°C" and msg["body"]["pre_trade_no"] == 'a"b\\c\x01d'
    assert "枪温 90°C".encode() in raw and len(payload) == len(raw) > len(raw.decode())


def test_longest_messages_fit_the_buffer():
    """The longest real messages: 64-character dev_id, trade and model ids, 13-digit
    times, every count and code at its widest; all fit in the buffer as strict JSON."""
    D, T, M, P = "D" * 64, "9" * 64, "8" * 64, 1 << 30
    store.init(kit.fresh_dir())
    p = protocol.Protocol(kit.cfg(dev_id=D), kit.BOARD, lambda: 9999999999999, lambda: True)
    for mk in (lambda: p.order(T, 9999999999000, 9999999999999, M, [P] * 4, [P] * 4,
                               9999999999999, [9999999999] * 4, 9999),
               lambda: p.wire_order([8, T, "9999999999", "9999999999", M, 10, "9999999999",
                                     "9999999999", 100, 100] +
                                    [9999999, 10 ** 14 - 1, 10 ** 14 - 1] * 4 +
                                    [39999996, 4 * 10 ** 14, 4 * 10 ** 14, 9999]),
               lambda: p.firmware(M, "FFFFFFFFFFFF"),
               lambda: p.faults([3029] * 30, [3029] * 10, "F" * 32),
               lambda: p.status((16, True, True, True, 99, 500000, 80000, 40000000, 2500, T,
                                 10 ** 9, [9999999999] * 4,
                                 {"power": [P] * 4, "service": [P] * 4})),
               lambda: p.start_result(T, 15, 6000),
               lambda: p.stop_result(T, 11, 11, 9999),
               lambda: p.reply(START, 4294967295, 11, (8, T), "body.pre_trade_no out of range")):
        _, _, msg = _out(mk())
        assert msg["head"]["dev_id"] == D
    # a reply's reason is cut short so that it always fits; more than the buffer holds
    # is refused whole, and the next message is sound
    _, _, msg = _out(p.reply(START, 1, 11, (1, T), "x" * BUF))
    assert msg["body"]["reason"] == "x" * 160
    try:
        p.start_result("x" * BUF, 15, 0)
        raise AssertionError("a message over the buffer was made")
    except ValueError:
        pass
    _, _, msg = _out(p.start_result("T", 10, 0))
    assert msg["body"]["pre_trade_no"] == "T"


def test_every_refusal_can_be_answered():
    """Whatever a refused service carries, its failure reply (with the reason) fits the
    buffer: a start on the wrong topic (any last topic level under the subscription)."""
    p = _proto()
    T = "9" * 64
    body = {"gun_no": 1, "pre_trade_no": T, "charge_mode": 10, "dev_id": DEV}
    for topic in (SVC + STOP, SVC + "x" * 1000):
        r = p.decode(topic, json.dumps(_msg(START, body)))
        assert r[0] == "bad" and r[2:] == (START, 1010101, (1, T)), r
        _, _, msg = _out(p.reply(START, r[3], protocol.FAILURE, r[4], r[1]))
        assert msg["body"]["result"] == 11 and msg["body"]["pre_trade_no"] == T
        assert START in msg["body"]["reason"]


# --- valid services ---------------------------------------------------------------------------

def test_services():
    trade = START_BODY["pre_trade_no"]
    assert _decode(_msg(START, START_BODY)) == ("service", START, 1010101, (1, trade, 10, 0),
                                                 1604479330996)
    assert _decode(_msg(STOP, STOP_BODY)) == \
        ("service", STOP, 1010101, (1, STOP_BODY["pre_trade_no"], 10), 1604479330996)
    assert _decode(_msg(FEE, FEE_BODY)) == ("service", FEE, 1010101, SEED_MODEL, 1604479330996)


def test_seed_services_verbatim():
    """The platform's three example services, exactly as the seed prints them (bytes off
    the wire, and text), are valid services; every seed example is strict JSON."""
    want = ((SEED_FEE, DEV, FEE, 1010101, SEED_MODEL, 1604479330996),
            (SEED_START, "CLC202205270001", START, 918728624,
             (1, "002609666164734122687241695", 10, 0), 1649757719377),
            (SEED_STOP, DEV, STOP, 1010101, (1, "002609666164905582841558242", 10),
             1604479330996))
    for text, dev, cmd, sid, args, ts in want:
        p = _proto(dev)
        topic = "/sys/HCI-EVA7/%s/thing/service/%s" % (dev, cmd)
        for payload in (text.encode(), text):
            assert p.decode(topic, payload) == ("service", cmd, sid, args, ts), \
                p.decode(topic, payload)
    for text in SEEDS:
        assert protocol.strict(text) is None and protocol.strict(text.encode()) is None
    assert feemodel.check(SEED_MODEL) is None


def test_seed_start_shape_with_seqId_and_ttl0():
    msg = _msg(START, START_BODY, sid=918728624, priority=2, reliability=2)
    msg["head"]["seqId"] = 0
    msg["head"]["ttl"] = 0
    assert _decode(msg)[:3] == ("service", START, 918728624)


def test_optional_fields_may_be_missing():
    body = {"gun_no": 1, "pre_trade_no": "T", "charge_mode": 10}
    assert _decode(_msg(START, body))[:4] == ("service", START, 1010101, (1, "T", 10, 0))


def test_start_limit_in_internal_units():
    """limit_data (0.01 yuan, 0.1 kWh, minutes, 0.1 kW by charge_mode) becomes 0.0001 yuan,
    Wh, ms, W; unlimited and SOC carry no limit."""
    for mode, data, want in ((11, 500, 50000), (12, 75, 7500), (14, 90, 5400000),
                             (15, 35, 3500), (10, 5, 0), (13, 80, 0),
                             (11, 1 << 30, (1 << 30) * 100)):
        body = dict(START_BODY, charge_mode=mode, limit_data=data)
        r = _decode(_msg(START, body))
        assert r[0] == "service" and r[3] == (1, START_BODY["pre_trade_no"], mode, want), r


def test_target_from_head_when_no_control_equip_id():
    msg = _msg(STOP, STOP_BODY)
    del msg["control_equip_id"]
    assert _decode(msg)[0] == "service"


def test_timestamp():
    """ts is head.timestamp when it is a plausible Unix ms integer, else None."""
    msg = _msg(STOP, STOP_BODY)
    assert _decode(msg)[4] == 1604479330996
    for ts in ("1604479330996", 1604479330, 1.604479330996e12, True, None, -1):
        msg["head"]["timestamp"] = ts
        r = _decode(msg)
        assert r[0] == "service" and r[4] is None, (ts, r)
    del msg["head"]["timestamp"]
    assert _decode(msg)[4] is None


# --- the fee model --------------------------------------------------------------------------

def test_fee_model_compact_form():
    r = _decode(_msg(FEE, kit.MODEL))
    assert r[0] == "service" and r[3] == kit.COMPACT, r
    assert feemodel.check(r[3]) is None


def test_fee_full_day_14_segments():
    b = dict(FEE_BODY, time_num=14, seg_flag=[10, 11, 12, 13] * 3 + [10, 13],
             time_seg=["%02d00" % h for h in range(0, 24, 2)] + ["2300", "2359"])
    r = _decode(_msg(FEE, b))
    assert r[0] == "service", r
    m = r[3]
    assert m["starts"] == [h * 60 for h in range(0, 24, 2)] + [1380, 1439]
    assert m["bands"] == [0, 1, 2, 3] * 3 + [0, 3] and feemodel.check(m) is None


FEE_BAD = (
    # (field, bad value, what the reason must name); None deletes the field
    ("ele_model_id", None, "body.ele_model_id missing"),
    ("ele_model_id", "", "body.ele_model_id out of range"),
    ("ele_model_id", "x" * 65, "body.ele_model_id out of range"),
    ("ele_model_id", 1223213, "body.ele_model_id must be a string"),
    ("time_num", None, "body.time_num missing"),
    ("time_num", 0, "body.time_num out of range"),
    ("time_num", 15, "body.time_num out of range"),
    ("time_num", 2, "time_seg"),          # lengths no longer agree
    ("time_num", True, "body.time_num must be an integer"),
    ("time_num", "3", "body.time_num must be an integer"),
    ("time_num", 3.0, "body.time_num must be an integer"),
    ("time_seg", None, "body.time_seg missing"),
    ("time_seg", "1023,1230,1430", "body.time_seg must be a list"),
    ("time_seg", [], "body.time_seg must be a list"),
    ("time_seg", ["1023", "1230"], "time_seg"),
    ("time_seg", ["1023", "1230", "1430", "1500"], "time_seg"),
    ("time_seg", ["1023", "1230", "2400"], "body.time_seg[2]"),
    ("time_seg", ["1023", "1260", "1430"], "body.time_seg[1]"),
    ("time_seg", ["123", "1230", "1430"], "body.time_seg[0]"),
    ("time_seg", ["10:3", "1230", "1430"], "body.time_seg[0]"),
    ("time_seg", ["1023", "12a0", "1430"], "body.time_seg[1]"),
    ("time_seg", ["1023", "-230", "1430"], "body.time_seg[1]"),
    ("time_seg", [1023, 1230, 1430], "body.time_seg[0]"),
    ("time_seg", ["1230", "1023", "1430"], "body.time_seg[1]"),   # not ascending
    ("time_seg", ["1023", "1230", "1230"], "body.time_seg[2]"),   # not strictly
    ("seg_flag", None, "body.seg_flag missing"),
    ("seg_flag", [10, 11], "seg_flag"),
    ("seg_flag", [10, 11, 12, 13], "seg_flag"),
    ("seg_flag", [9, 11, 12], "body.seg_flag[0]"),
    ("seg_flag", [10, 14, 12], "body.seg_flag[1]"),
    ("seg_flag", [10, 11, True], "body.seg_flag[2]"),
    ("seg_flag", [10, 11, "12"], "body.seg_flag[2]"),
    ("seg_flag", [10, 11, 12.0], "body.seg_flag[2]"),
    ("charge_fee", None, "body.charge_fee missing"),
    ("charge_fee", [1, 2, 3], "body.charge_fee must be a list"),
    ("charge_fee", [1, 2, 3, 4, 5], "body.charge_fee must be a list"),
    ("charge_fee", {"a": 1}, "body.charge_fee must be a list"),
    ("charge_fee", [1, 2, -3, 4], "body.charge_fee[2]"),
    ("charge_fee", [1, 2, 3, 4.5], "body.charge_fee[3]"),
    ("charge_fee", [True, 2, 3, 4], "body.charge_fee[0]"),
    ("charge_fee", [1, "2", 3, 4], "body.charge_fee[1]"),
    ("charge_fee", [1, 2, 3, (1 << 30) + 1], "body.charge_fee[3]"),
    ("serviceFee", None, "body.serviceFee missing"),
    ("serviceFee", [1, 2, 3], "body.serviceFee must be a list"),
    ("serviceFee", [1, 2, 3, -1], "body.serviceFee[3]"),
    ("serviceFee", [1, None, 3, 4], "body.serviceFee[1]"),
)


def test_fee_model_rejects_every_bad_field():
    p = _proto()
    for field, value, word in FEE_BAD:
        b = dict(FEE_BODY)
        if value is None:
            del b[field]
        else:
            b[field] = value
        r = _decode(_msg(FEE, b), proto=p)
        ids = None if field == "ele_model_id" else {"id": "1223213"}
        assert r[0] == "bad" and word in r[1], (field, value, r)
        assert r[2:] == (FEE, 1010101, ids), (field, value, r)


def test_fee_reason_is_short_for_huge_values():
    r = _decode(_msg(FEE, dict(FEE_BODY, time_seg=["x" * 5000, "1230", "1430"])))
    assert r[0] == "bad" and "time_seg[0]" in r[1] and len(r[1]) < 80, r


# --- acknowledgements and echoes ---------------------------------------------------------------

def test_ack():
    topic = EVT + "orderUpdateEvt/post_reply"
    msg = {"head": {"cmd": "orderUpdateEvtReply", "dev_id": DEV, "session_id": 89,
                    "timestamp": 1652464498999, "status": 0, "ttl": -1, "version": "1.0.0"},
           "body": {"result": 10}}
    assert _decode(msg, topic=topic) == ("ack", "orderUpdateEvt", 89, True, 1652464498999)
    msg["head"]["timestamp"] = 1
    for body in ({"result": 11}, {"result": "10"}, {}, [], None):
        msg["body"] = body
        assert _decode(msg, topic=topic) == ("ack", "orderUpdateEvt", 89, False, None), body


def test_bad_ack():
    topic = EVT + "firmwareEvt/post_reply"
    _bad(_decode({"head": {"cmd": "firmwareEvtReply"}, "body": {}}, topic=topic),
         "acknowledgement", "firmwareEvtReply", None)
    _bad(_decode({"head": {"cmd": "firmwareEvtReply", "session_id": "1"}}, topic=topic),
         "acknowledgement", "firmwareEvtReply", None)
    _bad(_decode({"head": {"cmd": "firmwareEvt", "session_id": 1}}, topic=topic),
         "acknowledgement", "firmwareEvt", 1)


def test_own_reply_is_dropped():
    p = _proto()
    _, topic, payload = p.reply(FEE, 7, 10, {"id": "M1"}, None)
    assert topic == SVC + "feeModelUpdateSrv_reply"
    assert p.decode(topic, bytes(payload))[0] == "drop"
    assert p.decode(topic, b"not even json")[0] == "drop"


def test_reply_cmd_on_service_topic_is_dropped():
    msg = _msg("feeModelUpdateSrvReply", {"result": 10})
    assert _decode(msg, topic=SVC + FEE)[0] == "drop"


# --- malformed ------------------------------------------------------------------------------

def test_not_json():
    for payload in (b"not json", b"", b"   ", b"{", b'{"head": {"cmd": "stopChargeSrv"',
                    b"\xff\xfe", b'"\xff"', b"{'head': 1}"):
        _bad(_decode(payload, STOP), "not JSON")


def test_not_an_object_or_no_head():
    for payload in ("[]", "1", '"x"', "null", "true", '{"body": {}}', '{"head": []}',
                    '{"head": "x"}', '{"head": null}'):
        _bad(_decode(payload, STOP), "no head")


def test_deep_nesting_does_not_crash():
    for text in ("[" * 3000 + "]" * 3000, '{"head":' * 500 + "1" + "}" * 500,
                 "[" * 3000):
        _bad(_decode(text, STOP), "not JSON")
    _bad(_decode("[" * DEPTH + "]" * DEPTH, STOP), "no head")      # the limit itself: JSON
    _bad(_decode("[" * (DEPTH + 1) + "]" * (DEPTH + 1), STOP), "nested deeper")


def test_cmd_missing():
    msg = _msg(STOP, STOP_BODY)
    del msg["head"]["cmd"]
    _bad(_decode(msg, STOP), "head.cmd", None, 1010101)
    msg["head"]["cmd"] = 12
    _bad(_decode(msg, STOP), "head.cmd", None, 1010101)


def test_unknown_cmd():
    _bad(_decode(_msg("rebootSrv", {})), "unknown cmd rebootSrv", "rebootSrv", 1010101)
    _bad(_decode(_msg("firmwareEvt", {})), "unknown cmd", "firmwareEvt", 1010101)


def test_cmd_not_matching_topic():
    _bad(_decode(_msg(START, START_BODY), topic=SVC + STOP), "on topic", START, 1010101,
         (1, START_BODY["pre_trade_no"]))


def test_other_pile():
    ids = (1, START_BODY["pre_trade_no"])
    _bad(_decode(_msg(START, START_BODY, dev="CLA000000000000")), "not this pile", START,
         1010101, ids)
    msg = _msg(START, START_BODY)
    msg["head"]["dev_id"] = "CLA000000000000"
    _bad(_decode(msg), "not this pile", START, 1010101, ids)
    msg = _msg(START, START_BODY)
    msg["control_equip_id"] = None
    _bad(_decode(msg), "not this pile", START, 1010101, ids)


def test_body_dev_id_of_another_pile():
    r = _decode(_msg(START, dict(START_BODY, dev_id="CLA000000000000")))
    _bad(r, "addressed to CLA000000000000, not this pile", START, 1010101,
         (1, START_BODY["pre_trade_no"]))
    r = _decode(_msg(STOP, dict(STOP_BODY, dev_id="X" * 5000)))
    _bad(r, "not this pile", STOP, 1010101, (1, STOP_BODY["pre_trade_no"]))
    assert len(r[1]) < 80, r[1]
    for dev in (5, None, ""):
        _bad(_decode(_msg(FEE, dict(FEE_BODY, dev_id=dev))), "not this pile", FEE, 1010101,
             {"id": "1223213"})


def test_message_naming_no_pile_is_rejected():
    """Neither control_equip_id nor head.dev_id: not addressed to this pile."""
    msg = _msg(START, START_BODY)
    del msg["control_equip_id"]
    del msg["head"]["dev_id"]
    del msg["body"]["dev_id"]
    _bad(_decode(msg), "not this pile", START, 1010101, (1, START_BODY["pre_trade_no"]))


def test_session_id():
    for sid in ("1010101", 1.5, True, [1], None):
        r = _decode(_msg(STOP, STOP_BODY, sid=sid))
        _bad(r, "head.session_id must be an integer", STOP, None,
             (1, STOP_BODY["pre_trade_no"]))
        assert "missing" not in r[1], r
    msg = _msg(STOP, STOP_BODY)
    del msg["head"]["session_id"]
    _bad(_decode(msg), "head.session_id missing", STOP, None, (1, STOP_BODY["pre_trade_no"]))


def test_body_not_object():
    for body in (None, [], "x", 1):
        _bad(_decode(_msg(STOP, body)), "body is not an object", STOP, 1010101)
    msg = _msg(STOP, STOP_BODY)
    del msg["body"]
    _bad(_decode(msg), "body is not an object", STOP, 1010101)


REQUIRED = {START: ("gun_no", "pre_trade_no", "charge_mode"),
            STOP: ("gun_no", "pre_trade_no", "stop_reason"),
            FEE: ("ele_model_id", "time_num", "time_seg", "seg_flag", "charge_fee",
                  "serviceFee")}


def test_missing_fields():
    p = _proto()
    for cmd, body in ((START, START_BODY), (STOP, STOP_BODY), (FEE, FEE_BODY)):
        for field in REQUIRED[cmd]:
            short = dict(body)
            del short[field]
            r = _decode(_msg(cmd, short), proto=p)
            assert r[:3] == ("bad", "body.%s missing" % field, cmd) and r[3] == 1010101, r
    body = dict(START_BODY)
    for field in ("limit_data", "start_type", "start_mode", "insert_gun_time", "dev_id"):
        del body[field]
    assert _decode(_msg(START, body), proto=p)[0] == "service"


def test_wrong_types():
    cases = [(START, START_BODY, "gun_no", "1", "an integer"),
             (START, START_BODY, "gun_no", 1.0, "an integer"),
             (START, START_BODY, "gun_no", True, "an integer"),
             (START, START_BODY, "gun_no", None, "an integer"),
             (START, START_BODY, "charge_mode", [10], "an integer"),
             (START, START_BODY, "limit_data", "0", "an integer"),
             (START, START_BODY, "start_type", 10.0, "an integer"),
             (START, START_BODY, "insert_gun_time", False, "an integer"),
             (START, START_BODY, "pre_trade_no", 2609666164734122687241695, "a string"),
             (STOP, STOP_BODY, "stop_reason", "10", "an integer"),
             (STOP, STOP_BODY, "pre_trade_no", None, "a string"),
             (FEE, FEE_BODY, "ele_model_id", 1223213, "a string")]
    for cmd, body, field, value, kind in cases:
        _, why, c, sid, _ = _decode(_msg(cmd, dict(body, **{field: value})))
        assert why == "body.%s must be %s" % (field, kind) and (c, sid) == (cmd, 1010101), why


def test_out_of_range():
    cases = [(START, START_BODY, "gun_no", 0), (START, START_BODY, "gun_no", 9),
             (START, START_BODY, "charge_mode", 9),
             (START, START_BODY, "charge_mode", 16),
             (START, START_BODY, "limit_data", -1),
             (START, START_BODY, "limit_data", (1 << 30) + 1),
             (START, START_BODY, "insert_gun_time", -1),
             (START, START_BODY, "pre_trade_no", ""),
             (START, START_BODY, "pre_trade_no", "x" * 65),
             (STOP, STOP_BODY, "stop_reason", 9),
             (STOP, STOP_BODY, "gun_no", 9),
             (FEE, FEE_BODY, "ele_model_id", "")]
    for cmd, body, field, value in cases:
        r = _decode(_msg(cmd, dict(body, **{field: value})))
        assert r[:4] == ("bad", "body.%s out of range" % field, cmd, 1010101), r
    # what identifies the request still comes back for the reply
    r = _decode(_msg(START, dict(START_BODY, charge_mode=16)))
    assert r[4] == (1, START_BODY["pre_trade_no"]), r


def test_huge_payload_is_classified():
    assert _decode(_msg(FEE, dict(FEE_BODY, pad="x" * 20000)))[0] == "service"
    _bad(_decode(_msg(STOP, dict(STOP_BODY, pre_trade_no="x" * 20000))),
         "body.pre_trade_no out of range", STOP, 1010101)


# --- strict JSON ----------------------------------------------------------------------------

# a feeModelUpdateSrv for this pile, written out: every text below is a small change to it
BASE = ('{"control_equip_id":"CLA333333333333","head":{"session_id":1010101,'
        '"cmd":"feeModelUpdateSrv","timestamp":1604479330996,"dev_id":"CLA333333333333"},'
        '"body":{"ele_model_id":"1223213","time_num":3,"time_seg":["1023","1230","1430"],'
        '"seg_flag":[10,11,12],"charge_fee":[10000,50000,20000,10000],'
        '"serviceFee":[20000,20000,20000,10000]}}')


def _edit(old, new):
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


def _bedit(old, new):
    """As _edit, on the UTF-8 bytes (for byte sequences no str can hold)."""
    b = BASE.encode()
    assert b.count(old) == 1, old
    return b.replace(old, new)


def _nest(n):
    """BASE with a body member nested n levels below the body (the body is level 2)."""
    return _edit('"time_num":3', '"pad":%s0%s,"time_num":3' % ("[" * n, "]" * n))


NOT_STRICT = (
    ("missing comma between members", _edit('"time_num":3,', '"time_num":3 ')),
    ("missing comma between strings", _edit('"1023","1230"', '"1023" "1230"')),
    ("missing comma in an array", _edit("[10,11,12]", "[10 11 12]")),
    ("missing colon", _edit('"time_num":3', '"time_num" 3')),
    ("missing colon in head", _edit('"session_id":1010101', '"session_id" 1010101')),
    ("trailing comma in an object", _edit("10000]}}", "10000],}}")),
    ("trailing comma in head", _edit('"CLA333333333333"},', '"CLA333333333333",},')),
    ("trailing comma in an array", _edit("[10,11,12]", "[10,11,12,]")),
    ("leading zero", _edit('"time_num":3', '"time_num":03')),
    ("leading zero in a price", _edit("[10000,50000", "[010000,50000")),
    ("leading zeros in session_id", _edit("1010101", "001010101")),
    ("negative leading zero", _edit('"time_num":3', '"time_num":-03')),
    ("a NUL then junk after the document", BASE.encode() + b"\x00junk"),
    ("a NUL after the document", BASE + "\x00"),
    ("a second document", BASE + BASE),
    ("a second document after a newline", BASE + "\n{}"),
    ("a number after the document", BASE + " 1"),
    ("a closing brace too many", BASE + "}"),
    ("lone high surrogate", _edit('"1223213"', '"12232\\ud83d13"')),
    ("lone high surrogate at the end", _edit('"1223213"', '"1223213\\ud83d"')),
    ("lone low surrogate", _edit('"1223213"', '"12232\\ude0013"')),
    ("reversed surrogates", _edit('"1223213"', '"12232\\ude00\\ud83d13"')),
    ("two high surrogates", _edit('"1223213"', '"\\ud83d\\ud83d"')),
    ("high surrogate and a plain escape", _edit('"1223213"', '"\\ud83d\\n"')),
    ("lone surrogate in a key", _edit('"ele_model_id"', '"ele_model_id\\udc00"')),
    ("UTF-8 encoded high surrogate", _bedit(b'"1223213"', b'"12232\xed\xa0\xbd13"')),
    ("UTF-8 encoded low surrogate", _bedit(b'"1223213"', b'"12232\xed\xb8\x8013"')),
    ("UTF-8 encoded surrogate pair (CESU-8)",
     _bedit(b'"1223213"', b'"\xed\xa0\xbd\xed\xb8\x80"')),
    ("NUL in a string", _edit('"1223213"', '"1223\x00213"')),
    ("control character in a string", _edit('"1223213"', '"1223\x01213"')),
    ("unit separator in a string", _edit('"1223213"', '"1223\x1f213"')),
    ("raw newline in a string", _edit('"1223213"', '"1223\n213"')),
    ("raw tab in a key", _edit('"time_num"', '"time\tnum"')),
    ("bad escape \\x", _edit('"1223213"', '"\\x41"')),
    ("bad escape \\a", _edit('"1223213"', '"12\\a23213"')),
    ("bad escape \\'", _edit('"1223213"', '"12\\\'23213"')),
    ("bad escape \\U", _edit('"1223213"', '"\\U00000041"')),
    ("short \\u", _edit('"1223213"', '"\\u12"')),
    ("non-hex \\u", _edit('"1223213"', '"\\u12G4"')),
    ("escaped closing quote: the string never ends", _edit("10000]}}", '10000,"x\\"]}}')),
    ("NaN", _edit('"time_num":3', '"time_num":NaN')),
    ("Infinity", _edit('"time_num":3', '"time_num":Infinity')),
    ("-Infinity", _edit('"time_num":3', '"time_num":-Infinity')),
    ("nan", _edit("10000]}}", "nan]}}")),
    ("plus sign", _edit('"time_num":3', '"time_num":+3')),
    ("fraction without digits", _edit('"time_num":3', '"time_num":3.')),
    ("fraction without integer", _edit('"time_num":3', '"time_num":.3')),
    ("exponent without digits", _edit('"time_num":3', '"time_num":3e')),
    ("hexadecimal", _edit('"time_num":3', '"time_num":0x3')),
    ("single quotes", _edit('"1223213"', "'1223213'")),
    ("bare word", _edit('"1223213"', "id1223213")),
    ("true misspelled", _edit('"time_num":3', '"time_num":tru')),
    ("form feed as whitespace", _edit('"time_num":3', '"time_num":\f3')),
    ("mismatched brackets", _edit("[10,11,12]", "[10,11,12}")),
    ("nested deeper than the limit", _nest(DEPTH - 1)),
    ("ends early", BASE[:-1]),
)


def test_strict_json_corpus_is_rejected():
    p = _proto()
    assert p.decode(SVC + FEE, BASE) == ("service", FEE, 1010101, SEED_MODEL, 1604479330996)
    assert p.decode(SVC + FEE, _nest(DEPTH - 2))[0] == "service"      # at the limit
    for name, text in NOT_STRICT:
        for payload in ((text,) if type(text) is bytes else (text, text.encode())):
            assert protocol.strict(payload), name
            r = p.decode(SVC + FEE, payload)
            assert r[0] == "bad" and r[1].startswith("not JSON") and \
                r[2:] == (None, None, None), (name, r)


def test_strict_accepts_json():
    for text in ('{}', '[]', ' [ ] ', '0', '-0', '-0.5e-3', '1E+2', '12.25', '"\\ud83d\\ude00"',
                 '"\\u00e9\\/\\b\\f\\n\\r\\t\\"\\\\"', '"é枪😀"', '"\x7f"',
                 '{"a":[true,false,null,{"b":{}}]}', '\t\r\n{ "a" : 1 , "b" : [ 1 , 2 ] }\n',
                 "[" * DEPTH + "]" * DEPTH):
        assert protocol.strict(text) is None, (text, protocol.strict(text))
        assert protocol.strict(text.encode()) is None, text
    assert protocol.strict(b'"\xed\x9f\xbf"') is None        # U+D7FF: just below the surrogates


def test_strict_refuses_invalid_utf8():
    """RFC 8259 texts are UTF-8: overlong forms and code points past U+10FFFF are not."""
    for raw in (b'"\xc0\xaf"', b'"\xc1\xbf"', b'"\xe0\x80\xaf"', b'"\xf0\x80\x80\xaf"',
                b'"\xf4\x90\x80\x80"', b'"\xf5\x80\x80\x80"', b'"\xff"', b'"\x80"', b'"\xc3"'):
        r = _decode(raw, STOP)
        assert r[0] == "bad" and r[1].startswith("not JSON"), (raw, r)


def test_strict_json_changes_nothing_in_the_app():
    """Through the real App: not one of the texts answers, changes the fee model or
    counts as anything but a rejected message; the intact text then takes effect."""
    pile = kit.Pile(dev_id=DEV)
    app = pile.app
    try:
        assert app.tariff.model_id() == "M1"
        n = app.rejected
        for name, text in NOT_STRICT:
            kit.run(app.on_message(SVC + FEE, text))
            n += 1
            assert app.rejected == n, name
            assert pile.sent == [] and app.tariff.model_id() == "M1", (name, pile.sent)
        assert app.gun.s is None
        # a well-formed model with one bad field: refused with a reply, model unchanged
        pile.deliver(FEE, dict(FEE_BODY, time_seg=["1023", "1260", "1430"]))
        assert pile.sent[-1][:2] == ("feeModelUpdateSrvReply", {
            "result": 11, "ele_model_id": "1223213",
            "reason": "body.time_seg[1] '1260' is not a valid HHMM time"}), pile.sent
        assert app.tariff.model_id() == "M1"
        kit.run(app.on_message(SVC + FEE, SEED_FEE.encode()))
        assert pile.sent[-1] == ("feeModelUpdateSrvReply",
                                 {"result": 10, "ele_model_id": "1223213"}, 1010101)
        assert app.tariff.model == SEED_MODEL and app.rejected == n + 1
    finally:
        pile.close()


# --- link.header: the size of a whole MQTT packet ---------------------------------------------

def packet_size(buf):
    """Length of the first whole MQTT packet in buf, or 0 when it is not all there."""
    h = link.header(buf)
    return h[0] + h[1] if h and len(buf) >= h[0] + h[1] else 0


def test_packet_size_small():
    ps = packet_size
    assert ps(b"") == 0
    assert ps(b"\xd0") == 0
    assert ps(b"\xd0\x00") == 2                     # PINGRESP
    assert ps(b"\x20\x02\x00") == 0                 # CONNACK, one byte short
    assert ps(b"\x20\x02\x00\x00") == 4
    assert ps(b"\x20\x02\x00\x00\xd0\x00") == 4     # only the first packet
    assert ps(bytearray(b"\x40\x02\x00\x01")) == 4
    assert ps(b"\x90\x03\x00\x01\x01") == 5


def test_packet_size_multibyte_length():
    ps = packet_size
    assert ps(b"\x30\x7f" + b"x" * 127) == 129
    assert ps(b"\x30\x7f" + b"x" * 126) == 0
    assert ps(b"\x30\x80") == 0                     # length continues
    assert ps(b"\x30\x80\x01" + b"x" * 127) == 0
    assert ps(b"\x30\x80\x01" + b"x" * 128) == 131
    assert ps(b"\x30\xff\x7f" + b"x" * 16383) == 16386
    assert ps(b"\x30\x80\x80\x01") == 0             # 16384: 3-byte length
    assert ps(b"\x30\x80\x80\x01" + b"x" * 16384) == 16388
    assert ps(b"\x30\xff\xff\xff\x7f") == 0         # 268435455: the largest there is


def test_packet_size_malformed_length():
    for buf in (b"\x30\xff\xff\xff\xff", b"\x30\x80\x80\x80\x80\x01"):
        try:
            packet_size(buf)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % buf)


def test_header():
    assert link.header(b"\x30") is None
    assert link.header(b"\x30\x80\x01") == (3, 128)
    assert link.header(b"\x30\x05ab") == (2, 5)
