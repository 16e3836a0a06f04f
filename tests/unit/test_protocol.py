"""protocol.decode (every classification), the envelopes, and link.header.
Runs inside MicroPython."""
import json

from pile import config, link, protocol

DEV = "CLA333333333333"
SVC = "/sys/HCI-EVA7/%s/thing/service/" % DEV
ACK = "/sys/HCI-EVA7/%s/thing/event/" % DEV


def _proto():
    cfg = dict(config.DEFAULTS)
    cfg["dev_id"] = DEV
    return protocol.Protocol(cfg, lambda: 1652457439373, seq=0)


def _msg(cmd, body, sid=1010101, dev=DEV, **top):
    """A downlink shaped like the seed's examples."""
    msg = {"control_equip_id": dev, "version": "1.0.0", "priority": 1, "reliability": 1,
           "compress": 0, "media_type": 0, "request_type": 1,
           "head": {"version": "1.0.0", "session_id": sid, "cmd": cmd, "status": 0,
                    "ttl": -1, "timestamp": 1604479330996, "dev_id": dev},
           "body": body}
    msg.update(top)
    return msg


START = {"dev_id": DEV, "gun_no": 1, "charge_mode": 10, "limit_data": 0,
         "insert_gun_time": 1000, "start_mode": 0,
         "pre_trade_no": "002609666164734122687241695", "start_type": 10}
STOP = {"gun_no": 1, "pre_trade_no": "002609666164905582841558242", "stop_reason": 10}
FEE = {"ele_model_id": "1223213", "time_num": 3, "time_seg": ["1023", "1230", "1430"],
       "seg_flag": [10, 11, 12], "charge_fee": [10000, 50000, 20000, 10000],
       "serviceFee": [20000, 20000, 20000, 10000]}


def _decode(msg, cmd=None, topic=None, proto=None):
    if topic is None:
        topic = SVC + (cmd or msg["head"]["cmd"])
    payload = msg if isinstance(msg, (bytes, str)) else json.dumps(msg)
    return (proto or _proto()).decode(topic, payload)


def _bad(result, why, cmd=None, sid=None):
    assert result[0] == "bad", result
    assert why in result[1], "%r lacks %r" % (result[1], why)
    assert result[2] == cmd and result[3] == sid, result


# --- valid services ----------------------------------------------------------------------

def test_services_from_the_seed():
    for cmd, body in (("startChargeSrv", START), ("stopChargeSrv", STOP),
                      ("feeModelUpdateSrv", FEE)):
        assert _decode(_msg(cmd, body)) == ("service", cmd, 1010101, body)


def test_seed_start_shape_with_seqId_and_ttl0():
    msg = _msg("startChargeSrv", START, sid=918728624, priority=2, reliability=2)
    msg["head"]["seqId"] = 0
    msg["head"]["ttl"] = 0
    assert _decode(msg)[0] == "service"


def test_optional_fields_may_be_missing():
    body = {"gun_no": 1, "pre_trade_no": "T", "charge_mode": 10}
    assert _decode(_msg("startChargeSrv", body))[0] == "service"


def test_target_from_head_when_no_control_equip_id():
    msg = _msg("stopChargeSrv", STOP)
    del msg["control_equip_id"]
    assert _decode(msg)[0] == "service"


def test_last_ts():
    p = _proto()
    _decode(_msg("stopChargeSrv", STOP), proto=p)
    assert p.last_ts == 1604479330996
    msg = _msg("stopChargeSrv", STOP)
    msg["head"]["timestamp"] = "1604479330996"
    _decode(msg, proto=p)
    assert p.last_ts is None
    msg["head"]["timestamp"] = 1604479330         # seconds, not ms: not trusted
    _decode(msg, proto=p)
    assert p.last_ts is None


# --- acknowledgements and echoes -----------------------------------------------------------

def test_ack():
    msg = {"head": {"cmd": "orderUpdateEvtReply", "dev_id": DEV, "session_id": 89,
                    "timestamp": 1, "status": 0, "ttl": -1, "version": "1.0.0"},
           "body": {"result": 10}}
    assert _decode(msg, topic=ACK + "orderUpdateEvt/post_reply") == \
        ("ack", "orderUpdateEvt", 89, 10)
    msg["body"] = []
    assert _decode(msg, topic=ACK + "orderUpdateEvt/post_reply") == \
        ("ack", "orderUpdateEvt", 89, None)


def test_bad_ack():
    topic = ACK + "firmwareEvt/post_reply"
    _bad(_decode({"head": {"cmd": "firmwareEvtReply"}, "body": {}}, topic=topic),
         "acknowledgement", "firmwareEvtReply", None)
    _bad(_decode({"head": {"cmd": "firmwareEvtReply", "session_id": "1"}}, topic=topic),
         "acknowledgement", "firmwareEvtReply", "1")
    _bad(_decode({"head": {"cmd": "firmwareEvt", "session_id": 1}}, topic=topic),
         "acknowledgement", "firmwareEvt", 1)


def test_own_reply_is_dropped():
    p = _proto()
    topic, payload = p.reply("feeModelUpdateSrv", 7, {"result": 10})
    assert topic == SVC + "feeModelUpdateSrv_reply"
    assert p.decode(topic, payload)[0] == "drop"
    assert p.decode(topic, b"not even json")[0] == "drop"


def test_reply_cmd_on_service_topic_is_dropped():
    msg = _msg("feeModelUpdateSrvReply", {"result": 10})
    assert _decode(msg, topic=SVC + "feeModelUpdateSrv")[0] == "drop"


# --- malformed ----------------------------------------------------------------------------

def test_not_json():
    for payload in (b"not json", b"", b"{", b'{"head": {"cmd": "stopChargeSrv"', b"\xff\xfe",
                    b'"\xff"', b"{'head': 1}"):
        _bad(_decode(payload, "stopChargeSrv"), "not JSON")


def test_not_an_object_or_no_head():
    for payload in ("[]", "1", '"x"', "null", "true", '{"body": {}}', '{"head": []}',
                    '{"head": "x"}', '{"head": null}'):
        _bad(_decode(payload, "stopChargeSrv"), "no head")


def test_deep_nesting_does_not_crash():
    r = _decode("[" * 3000 + "]" * 3000, "stopChargeSrv")
    assert r[0] == "bad"
    r = _decode('{"head":' * 500 + "1" + "}" * 500, "stopChargeSrv")
    assert r[0] == "bad"


def test_cmd_missing():
    msg = _msg("stopChargeSrv", STOP)
    del msg["head"]["cmd"]
    _bad(_decode(msg, "stopChargeSrv"), "head.cmd", None, 1010101)
    msg["head"]["cmd"] = 12
    _bad(_decode(msg, "stopChargeSrv"), "head.cmd", None, 1010101)


def test_unknown_cmd():
    _bad(_decode(_msg("rebootSrv", {})), "unknown cmd rebootSrv", "rebootSrv", 1010101)
    _bad(_decode(_msg("firmwareEvt", {})), "unknown cmd", "firmwareEvt", 1010101)


def test_cmd_not_matching_topic():
    _bad(_decode(_msg("startChargeSrv", START), topic=SVC + "stopChargeSrv"),
         "on topic", "startChargeSrv", 1010101)


def test_other_pile():
    _bad(_decode(_msg("startChargeSrv", START, dev="CLA000000000000")),
         "not this pile", "startChargeSrv", 1010101)
    msg = _msg("startChargeSrv", START)
    msg["head"]["dev_id"] = "CLA000000000000"
    _bad(_decode(msg), "not this pile", "startChargeSrv", 1010101)
    msg = _msg("startChargeSrv", START)
    msg["control_equip_id"] = None
    _bad(_decode(msg), "not this pile", "startChargeSrv", 1010101)
    msg = _msg("startChargeSrv", START)
    del msg["control_equip_id"]
    del msg["head"]["dev_id"]
    _bad(_decode(msg), "not this pile", "startChargeSrv", 1010101)


def test_session_id():
    for sid in (None, "1010101", 1.5, True, [1]):
        msg = _msg("stopChargeSrv", STOP, sid=sid)
        _bad(_decode(msg), "session_id", "stopChargeSrv", None)
    msg = _msg("stopChargeSrv", STOP)
    del msg["head"]["session_id"]
    _bad(_decode(msg), "session_id", "stopChargeSrv", None)


def test_body_not_object():
    for body in (None, [], "x", 1):
        _bad(_decode(_msg("stopChargeSrv", body)), "body is not an object",
             "stopChargeSrv", 1010101)
    msg = _msg("stopChargeSrv", STOP)
    del msg["body"]
    _bad(_decode(msg), "body is not an object", "stopChargeSrv", 1010101)


def test_missing_fields():
    for cmd, body in (("startChargeSrv", START), ("stopChargeSrv", STOP),
                      ("feeModelUpdateSrv", FEE)):
        for field, rule in protocol.SERVICES[cmd].items():
            if not rule[1]:
                continue
            short = dict(body)
            del short[field]
            _bad(_decode(_msg(cmd, short)), "body.%s missing" % field, cmd, 1010101)


def test_wrong_types():
    cases = [("startChargeSrv", START, "gun_no", "1"), ("startChargeSrv", START, "gun_no", 1.0),
             ("startChargeSrv", START, "gun_no", True), ("startChargeSrv", START, "gun_no", None),
             ("startChargeSrv", START, "charge_mode", [10]),
             ("startChargeSrv", START, "limit_data", "0"),
             ("startChargeSrv", START, "pre_trade_no", 2609666164734122687241695),
             ("stopChargeSrv", STOP, "stop_reason", "10"),
             ("stopChargeSrv", STOP, "pre_trade_no", None),
             ("feeModelUpdateSrv", FEE, "ele_model_id", 1223213)]
    for cmd, body, field, value in cases:
        why = "must be an integer" if protocol.SERVICES[cmd][field][0] == protocol.INT \
            else "must be a string"
        _bad(_decode(_msg(cmd, dict(body, **{field: value}))), "body.%s %s" % (field, why),
             cmd, 1010101)


def test_out_of_range():
    cases = [("startChargeSrv", START, "gun_no", 0), ("startChargeSrv", START, "gun_no", 9),
             ("startChargeSrv", START, "charge_mode", 9),
             ("startChargeSrv", START, "charge_mode", 16),
             ("startChargeSrv", START, "limit_data", -1),
             ("startChargeSrv", START, "pre_trade_no", ""),
             ("startChargeSrv", START, "pre_trade_no", "x" * 65),
             ("stopChargeSrv", STOP, "stop_reason", 9),
             ("feeModelUpdateSrv", FEE, "ele_model_id", "")]
    for cmd, body, field, value in cases:
        _bad(_decode(_msg(cmd, dict(body, **{field: value}))), "body.%s out of range" % field,
             cmd, 1010101)


def test_huge_payload_is_classified():
    body = dict(FEE, pad="x" * 20000)
    assert _decode(_msg("feeModelUpdateSrv", body))[0] == "service"
    _bad(_decode(_msg("stopChargeSrv", dict(STOP, pre_trade_no="x" * 20000))),
         "out of range", "stopChargeSrv", 1010101)


# --- device envelopes ----------------------------------------------------------------------

def test_event_envelope():
    p = _proto()
    sid, topic, payload = p.event("verInfoEvt", {"sdk_ver": "2.5.0"})
    msg = json.loads(payload)
    assert topic == ACK + "verInfoEvt/post"
    assert msg == {"head": {"cmd": "verInfoEvt", "dev_id": DEV, "seq_id": 1, "session_id": 1,
                            "status": 0, "timestamp": 1652457439373, "ttl": -1, "version": 0},
                   "body": {"sdk_ver": "2.5.0"}}
    sid2, _, payload = p.event("totalFaultEvt", {}, status=1, item_id="AB" * 16)
    msg = json.loads(payload)
    assert sid2 == sid + 1 and msg["head"]["status"] == 1 and msg["item_id"] == "AB" * 16


def test_reply_envelope():
    topic, payload = _proto().reply("startChargeSrv", 918728624,
                                    {"result": protocol.FAILURE, "reason": "x"})
    msg = json.loads(payload)
    assert topic == SVC + "startChargeSrv_reply"
    assert msg["head"]["cmd"] == "startChargeSrvReply"
    assert msg["head"]["session_id"] == 918728624 and msg["body"]["result"] == 11


def test_payload_is_sent_as_utf8_bytes():
    """The event payload is text; the link hands umqtt ASCII text as it is and other text
    as UTF-8 bytes, so the MQTT remaining length counts bytes."""
    _, _, payload = _proto().event("verInfoEvt", {"sdk_ver": "2.5.0"})
    assert isinstance(payload, str) and link.wire(payload) is payload
    _, payload = _proto().reply("startChargeSrv", 1, {"result": 11, "reason": "枪温 90°C"})
    wire = link.wire(payload)
    assert isinstance(wire, bytes) and wire.decode() == payload and len(wire) > len(payload)
    assert json.loads(wire)["body"]["reason"] == "枪温 90°C"
    assert link.wire(b"x") == b"x"


# --- link.header: the size of a whole MQTT packet ------------------------------------------

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
