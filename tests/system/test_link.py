"""The MQTT link against a real mosquitto: broker restart, network failures through the
netem proxy (the loop must keep running meanwhile), malformed downlinks, and the broker's
ACL that keeps a pile out of other piles' topics.
"""
import json
import os
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import DEV, charging, give_model, online
from netem import Proxy

FAST = dict(keepalive_s=3, backoff_min_ms=200, backoff_max_ms=1000, connect_timeout_ms=2000,
            provision_timeout_ms=1000)
OTHER = "HCS220922009999"

# The seed's examples (jsiot-seed.md): every field, with the type of its example value.
SEED_HEAD = {"cmd": str, "dev_id": str, "seq_id": int, "session_id": int, "status": int,
             "timestamp": int, "ttl": int, "version": int}
SEED_VERINFO = {"dev_reg_method": int, "pile_hardware_ver": str, "pile_software_ver": str,
                "sdk_ver": str}
SEED_FIRMWARE = {"ct": int, "bt_mac": str, "dev_sn": str, "dev_type": int,
                 "ele_model_id": str, "grid_type": int, "height": int, "im_mac": str,
                 "in_meter": list, "latitude": int, "longitude": int, "mea_type": int,
                 "ot_cur": int, "ot_max_vol": int, "ot_min_vol": int, "ot_rate": int,
                 "out_meter": list, "port_num": int, "sim_no": str, "stake_model": str,
                 "vendor_code": int}


def read_creds(pile):
    """The stored credentials: the JSON line of creds.json (pile/store.py adds a CRC line)."""
    with open(os.path.join(pile.dir, "creds.json")) as f:
        for line in f:
            if line.startswith("{"):
                return json.loads(line)
    raise AssertionError("no JSON document in creds.json")


def assert_fields(obj, seed, what):
    assert set(obj) == set(seed), "%s fields: extra %s, missing %s" % (
        what, sorted(set(obj) - set(seed)), sorted(set(seed) - set(obj)))
    for key, kind in seed.items():
        assert isinstance(obj[key], kind) and not isinstance(obj[key], bool), (what, key, obj[key])


def assert_announced(platform, since):
    """firmwareEvt then verInfoEvt are the first two messages after `since`, seed-shaped."""
    fw = platform.wait_for(DEV, "firmwareEvt", since=since, timeout=15)
    ver = platform.wait_for(DEV, "verInfoEvt", since=since, timeout=5)
    mine = [r for r in since_mark(platform, since) if r["dev"] == DEV]
    assert [r["cmd"] for r in mine[:2]] == ["firmwareEvt", "verInfoEvt"], \
        [r["cmd"] for r in mine[:5]]
    for rec, body in ((fw, SEED_FIRMWARE), (ver, SEED_VERINFO)):
        msg = rec["msg"]
        assert set(msg) == {"head", "body"}, msg
        assert_fields(msg["head"], SEED_HEAD, rec["cmd"] + " head")
        assert_fields(msg["body"], body, rec["cmd"] + " body")
        assert msg["head"]["cmd"] == rec["cmd"] and msg["head"]["dev_id"] == DEV
        assert msg["head"]["seq_id"] == msg["head"]["session_id"]
        assert msg["head"]["ttl"] == -1 and msg["head"]["version"] == 0
        assert abs(msg["head"]["timestamp"] - time.time() * 1000) < 60000
    assert ver["msg"]["head"]["session_id"] == fw["msg"]["head"]["session_id"] + 1
    assert fw["msg"]["body"]["dev_sn"] == DEV
    return fw, ver


def since_mark(platform, since):
    """Every record from index `since` on (platform.messages has no `since`)."""
    with platform._cond:
        return platform._records[since:]


def wait_link(pile, up, timeout=10, rtts=None):
    """Poll the bench until status.link == up; record each bench round trip in rtts."""
    deadline = time.time() + timeout
    while True:
        t = time.monotonic()
        st = pile.status()
        if rtts is not None:
            rtts.append(time.monotonic() - t)
        if st["link"] == up:
            return st
        if time.time() > deadline:
            raise AssertionError("link never %s: %s" % (up, st))
        time.sleep(0.05)


def probe_for(pile, seconds, rtts):
    end = time.time() + seconds
    while time.time() < end:
        t = time.monotonic()
        pile.status()
        rtts.append(time.monotonic() - t)
        time.sleep(0.05)


@pytest.fixture
def proxy(broker, platform):
    """A netem proxy in front of the broker, handed to devices at provisioning."""
    p = Proxy("127.0.0.1", broker.port)
    platform.mqtt_addr_for_devices = "tcp://127.0.0.1:%d" % p.port
    yield p
    p.close()


def test_announces_on_connect(platform, make_pile):
    make_pile(**FAST)
    online(platform)
    assert_announced(platform, 0)


def test_broker_restart(broker, platform, proxy, make_pile):
    pile = make_pile(**FAST)
    online(platform)
    assert pile.status()["connects"] == 1
    broker.stop()
    wait_link(pile, False)
    # hold the pile back (refused) until the platform has subscribed again, so that it
    # cannot miss the announcements: a harness race, not the pile's
    proxy.set_mode("down")
    platform._subscribed.clear()
    broker.start()
    assert platform._subscribed.wait(10), "platform did not come back"
    mark = platform.mark()
    proxy.set_mode("pass")
    assert_announced(platform, mark)
    st = wait_link(pile, True)
    assert st["connects"] == 2, st
    assert "connection closed by the broker" in pile.output()


@pytest.mark.parametrize("mode,reason", [
    ("reset", r"ECONNRESET|connection closed"),
    ("down", r"connection closed by the broker|OSError: 32|EPIPE|ECONNRESET"),  # (a write
    # may meet the closed socket first: EPIPE, 32)
    ("blackhole", r"no packet from the broker for \d+ s"),
], ids=["reset", "down", "blackhole"])
def test_network_failure(platform, proxy, make_pile, mode, reason):
    pile = make_pile(**FAST)
    online(platform)
    rtts = []
    proxy.set_mode(mode)
    t0 = time.time()
    wait_link(pile, False, timeout=10, rtts=rtts)
    noticed = time.time() - t0
    if mode == "blackhole":
        assert 3.0 <= noticed < 6.5, noticed           # 1.5 keepalive, not sooner
    else:
        assert noticed < 1.5, noticed
    probe_for(pile, 2.5, rtts)                         # reconnect attempts in this mode
    assert max(rtts) < 0.5, "bench stalled %.3f s while %s" % (max(rtts), mode)
    st = pile.status()
    assert not st["link"] and st["link_error"], st
    pile.wait_output(r"\[link\] session ended: .*(%s)" % reason)
    if mode == "blackhole":
        pile.wait_output(r"\[link\] session ended: .*no answer from the broker")
    if mode == "down":
        pile.wait_output(r"\[link\] session ended: .*ECONNREFUSED")

    mark = platform.mark()
    proxy.set_mode("pass")
    assert_announced(platform, mark)
    wait_link(pile, True)
    time.sleep(0.5)
    st = wait_link(pile, True)
    assert st["connects"] >= 2, st
    assert pile.alive()


def _service(cmd, body, sid, dev=DEV, **over):
    msg = {"control_equip_id": dev, "version": "1.0.0", "priority": 1, "reliability": 1,
           "compress": 0, "media_type": 0, "request_type": 1,
           "head": {"version": "1.0.0", "session_id": sid, "cmd": cmd, "status": 0,
                    "ttl": -1, "timestamp": int(time.time() * 1000), "dev_id": dev},
           "body": body}
    msg.update(over)
    return msg


START = {"dev_id": DEV, "gun_no": 1, "charge_mode": 10, "limit_data": 0,
         "insert_gun_time": 1000, "start_mode": 0, "pre_trade_no": "X1", "start_type": 10}
STOP = {"gun_no": 1, "pre_trade_no": "X1", "stop_reason": 10}
STABLE = ("work_status", "cp", "relay", "lock", "faults", "warnings", "session", "energy_mwh",
          "fee_model", "orders_pending", "link", "connects", "provision_error")


def test_malformed_downlinks(platform, make_pile):
    pile = make_pile(**FAST)
    online(platform)
    assert give_model(platform)["msg"]["body"]["result"] == 10
    before = pile.status()

    other = _service("startChargeSrv", START, 9001)
    other["control_equip_id"] = other["head"]["dev_id"] = OTHER
    wrong_head = _service("stopChargeSrv", STOP, 9002)
    wrong_head["head"]["dev_id"] = OTHER
    no_sid = _service("stopChargeSrv", STOP, 0)
    del no_sid["head"]["session_id"]
    no_cmd = _service("stopChargeSrv", STOP, 9010)
    del no_cmd["head"]["cmd"]
    missing = dict(STOP)
    del missing["pre_trade_no"]
    # (payload, topic cmd, logged reason, session_id answered with result 11 or None)
    cases = [
        (b"this is not JSON {", "feeModelUpdateSrv", "not JSON", None),
        (b"\xff\xfe\x00garbage", "startChargeSrv", "not JSON", None),
        (b"[1, 2, 3]", "stopChargeSrv", "no head", None),
        (other, "startChargeSrv", "addressed to %s, not this pile" % OTHER, 9001),
        (wrong_head, "stopChargeSrv", "addressed to %s, not this pile" % OTHER, 9002),
        (_service("rebootSrv", {}, 9003), "rebootSrv", "unknown cmd rebootSrv", None),
        (_service("startChargeSrv", dict(START, gun_no="1"), 9004), "startChargeSrv",
         "body.gun_no must be an integer", 9004),
        (_service("startChargeSrv", dict(START, charge_mode=10.5), 9005), "startChargeSrv",
         "body.charge_mode must be an integer", 9005),
        (_service("stopChargeSrv", missing, 9006), "stopChargeSrv",
         "body.pre_trade_no missing", 9006),
        (_service("stopChargeSrv", [1], 9007), "stopChargeSrv", "body is not an object", 9007),
        (_service("startChargeSrv", START, 9008), "stopChargeSrv", "on topic", 9008),
        (no_sid, "stopChargeSrv", "head.session_id missing", None),
        (no_cmd, "stopChargeSrv", "head.cmd missing", None),
        (_service("startChargeSrv", dict(START, pre_trade_no="9" * 6000), 9009),
         "startChargeSrv", "body.pre_trade_no out of range", 9009),
    ]
    mark = platform.mark()
    for payload, cmd, _, _ in cases:
        platform.send_raw(DEV, payload, cmd=cmd)
    # a downlink far over the link's packet limit: skipped as it streams, no reconnect
    huge = _service("feeModelUpdateSrv", {"ele_model_id": "HUGE", "pad": "x" * 200000}, 9100)
    platform.send_raw(DEV, huge)

    deadline = time.time() + 10
    while pile.status()["rejected"] < before["rejected"] + len(cases):
        assert time.time() < deadline, pile.status()
        time.sleep(0.05)
    pile.wait_output(r"\[link\] dropped a \d+-byte packet on .*feeModelUpdateSrv.*over 8192")
    out = pile.output()
    for payload, cmd, why, sid in cases:
        assert "rejected" in out and why in out, why
        if sid is not None:     # answered on the reply topic of head.cmd
            rec = platform.wait_for(DEV, None, since=mark,
                                    pred=lambda m, s=sid: m["head"]["session_id"] == s)
            body, head = rec["msg"]["body"], rec["msg"]["head"]
            assert body["result"] == 11 and why in body["reason"], body
            assert rec["cmd"] == head["cmd"][:-5] + "_reply" and head["cmd"].endswith("SrvReply")
    answered = {r["msg"]["head"]["session_id"] for r in since_mark(platform, mark)
                if r["dev"] == DEV and r["cmd"].endswith("_reply")}
    assert answered == {sid for _, _, _, sid in cases if sid is not None}, answered

    after = pile.status()
    assert after["rejected"] == before["rejected"] + len(cases)
    assert {k: after[k] for k in STABLE} == {k: before[k] for k in STABLE}
    assert pile.alive()
    # still serving: a valid service is answered and takes effect
    rep = give_model(platform, ele_model_id="M2")
    assert rep["msg"]["body"]["result"] == 10
    assert pile.status()["fee_model"] == "M2" and pile.status()["connects"] == 1


def test_qos0_traffic_alone_keeps_the_link(platform, make_pile):
    """Telemetry (QoS 0, never answered) more often than keepalive/2 and no event
    acknowledgements: the pile must still ping, or it takes the broker's silence for a
    dead link and reconnects."""
    pile = make_pile(telemetry_fast_s=1, **dict(FAST, keepalive_s=2))
    online(platform)
    give_model(platform)
    platform.ack = False
    assert charging(platform, pile, "KA1")["start_result"] == 10
    mark = platform.mark()
    time.sleep(6)                                   # 2 x (1.5 keepalive)
    telemetry = [r for r in since_mark(platform, mark) if r["cmd"] == "acGunRunIty"]
    assert len(telemetry) >= 4, len(telemetry)
    st = pile.status()
    assert st["link"] and st["connects"] == 1, st
    assert "session ended" not in pile.output()


def test_burst_of_downlinks_loses_nothing(broker, platform, make_pile):
    """More small messages at once than the link's inbox holds: it stops reading until
    the inbox drains instead of dropping messages it has already acknowledged."""
    pile = make_pile(**FAST)
    online(platform)
    before = pile.status()["rejected"]
    sender, _, _ = _client(broker, *broker.admin, client_id="burst-sender")
    try:
        topic = "/sys/HCI-EVA7/%s/thing/service/stopChargeSrv" % DEV
        infos = [sender.publish(topic, b"junk %d" % i, qos=1) for i in range(60)]
        for info in infos:
            info.wait_for_publish(5)
        deadline = time.time() + 10
        while pile.status()["rejected"] < before + 60:
            assert time.time() < deadline, pile.status()
            time.sleep(0.05)
    finally:
        sender.disconnect()
        sender.loop_stop()
    time.sleep(0.2)
    st = pile.status()
    assert st["rejected"] == before + 60 and st["link"] and st["connects"] == 1, st
    assert "inbox full" not in pile.output()


def _client(broker, user, password, client_id):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    c.username_pw_set(user, password)
    got, subacks = [], []
    c.on_message = lambda cl, u, m: got.append(m.topic)
    c.on_subscribe = lambda cl, u, mid, codes, p: subacks.append([x.value for x in codes])
    c.connect("127.0.0.1", broker.port, keepalive=10)
    c.loop_start()
    return c, got, subacks


PK = "HCI-EVA7"


class Watcher:
    """A paho client that keeps every (topic, payload) it receives."""

    def __init__(self, broker, user, password, client_id, subscriptions):
        self.got, self.subacks = [], []
        self.client, _, _ = _client(broker, user, password, client_id)
        self.client.on_message = lambda cl, u, m: self.got.append((m.topic, m.payload))
        self.client.on_subscribe = lambda cl, u, mid, codes, p: self.subacks.append(codes)
        for topic in subscriptions:
            self.client.subscribe(topic, 1)
        wait_until(lambda: len(self.subacks) == len(subscriptions), "SUBACKs")

    def publish(self, topic, payload):
        """QoS 1, back once the broker has acknowledged: it has handled the message (and
        queued it to every subscriber allowed to read it) before it sends PUBACK, which
        it sends for a denied one too."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(5)
        assert info.is_published(), topic

    def topics(self):
        return [t for t, _ in list(self.got)]

    def wait_topic(self, topic, timeout=5):
        wait_until(lambda: topic in self.topics(), "a message on " + topic, timeout)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(pred, what, timeout=5):
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, "no " + what
        time.sleep(0.02)


def _sys(dev, rest, pk=PK):
    return "/sys/%s/%s/thing/%s" % (pk, dev, rest)


def _ack(dev, cmd, sid, marker="platform"):
    """An event acknowledgement as the platform sends it (PROTOCOL.md section 3)."""
    return json.dumps({"head": {"cmd": cmd + "Reply", "dev_id": dev, "session_id": sid,
                                "timestamp": int(time.time() * 1000), "status": 0,
                                "ttl": -1, "version": "1.0.0", "by": marker},
                       "body": {"result": 10}})


def test_device_confined_to_its_own_topics(broker, platform, make_pile):
    """With a pile's MQTT account: what only the platform may say (an acknowledgement, a
    service) and anything of another pile or product reaches no one, others' topics are
    never delivered to it; its own events and replies pass, and the platform's services
    and acknowledgements reach it."""
    pile = make_pile(**FAST)
    online(platform)
    creds = read_creds(pile)
    spy = Watcher(broker, *broker.admin, client_id="spy", subscriptions=["#"])
    intruder = Watcher(broker, creds["mqtt_account"], creds["mqtt_password"],
                       "intruder-" + DEV,
                       # mosquitto 2.0 grants every SUBSCRIBE and checks each delivery
                       ["#", _sys(OTHER, "service/+"), _sys(OTHER, "event/+/post_reply"),
                        _sys(DEV, "service/+", pk="OTHER-PK")])
    try:
        before = pile.status()
        start = json.dumps(_service("startChargeSrv", dict(START, pre_trade_no="forged"),
                                    9200))
        forged = [
            (_sys(DEV, "event/orderUpdateEvt/post_reply"), _ack(DEV, "orderUpdateEvt", 1,
                                                                "forged")),
            (_sys(DEV, "event/firmwareEvt/post_reply"), _ack(DEV, "firmwareEvt", 2, "forged")),
            (_sys(DEV, "service/startChargeSrv"), start),     # valid: it would start
            (_sys(DEV, "service/rebootSrv_reply"), b'{"forged": 1}'),
            (_sys(DEV, "event/firmwareEvt/post", pk="OTHER-PK"), b'{"forged": 1}'),
            (_sys(DEV, "service/stopChargeSrv", pk="OTHER-PK"), b'{"forged": 1}'),
            (_sys(OTHER, "event/orderUpdateEvt/post"), b'{"forged": 1}'),
            (_sys(OTHER, "event/orderUpdateEvt/post_reply"), _ack(OTHER, "orderUpdateEvt", 1,
                                                                  "forged")),
            (_sys(OTHER, "service/stopChargeSrv"), b'{"forged": 1}'),
            (_sys(OTHER, "service/stopChargeSrv_reply"), b'{"forged": 1}'),
        ]
        mark = platform.mark()
        for topic, payload in forged:
            intruder.publish(topic, payload)
        # its own event passes (the broker handles one client's packets in order: when
        # this one is out, every forged one before it has been dropped or delivered)
        probe = _sys(DEV, "event/probeEvt/post")
        intruder.publish(probe, json.dumps({"head": {"cmd": "probeEvt", "session_id": 5}}))
        spy.wait_topic(probe)
        platform.wait_for(DEV, "probeEvt", since=mark)
        assert [t for t, p in list(spy.got) if b"forged" in p] == []
        assert not platform.messages(OTHER)

        # the platform's service reaches the pile, the pile's reply passes; the pile also
        # gets every forged message before it that the broker let through: none
        rep = give_model(platform, ele_model_id="M-ACL")
        assert rep["msg"]["body"]["result"] == 10
        after = pile.status()
        assert after["fee_model"] == "M-ACL" and after["session"] is None, after
        assert after["rejected"] == before["rejected"], after
        assert not platform.messages(DEV, "startChargeSrv_reply")
        assert "forged" not in pile.output()

        # others' services and acknowledgements are never delivered to this account; its
        # own are (the last, sent after the others by the same client, in order)
        platform.stop_charge(OTHER, "T9", pk=PK)
        platform.acknowledge(OTHER, "orderUpdateEvt", 3, pk=PK)
        platform.stop_charge(DEV, "NOTHING", pk="OTHER-PK")
        platform.acknowledge(DEV, "lastEvt", 999999)
        intruder.wait_topic(_sys(DEV, "event/lastEvt/post_reply"))
        theirs = [t for t in intruder.topics() if not t.startswith(_sys(DEV, ""))]
        assert theirs == [], theirs
        assert set(intruder.topics()) >= {_sys(DEV, "service/feeModelUpdateSrv"),
                                          _sys(DEV, "service/feeModelUpdateSrv_reply")}
        assert all(t.startswith(_sys(DEV, "service/")) or t.endswith("/post_reply")
                   for t in intruder.topics()), intruder.topics()
    finally:
        intruder.close()
        spy.close()
    assert pile.status()["link"]


def test_forged_ack_does_not_drop_a_pending_order(broker, platform, make_pile):
    """The pile's own account acknowledges its pending billing record: the broker drops
    it and the order stays in the journal; the same acknowledgement from the platform
    takes it out."""
    pile = make_pile(ack_wait_s=60, **FAST)       # no resend round during the test
    online(platform)
    give_model(platform)
    platform.no_ack.add("orderUpdateEvt")
    assert charging(platform, pile, "F1")["start_result"] == 10
    mark = platform.mark()
    platform.stop_charge(DEV, "F1")
    sent = platform.wait_for(DEV, "orderUpdateEvt", since=mark, timeout=15)
    sid = sent["msg"]["head"]["session_id"]
    pile.wait_status(lambda s: s["orders_pending"] == 1 and s["session"] is None)

    creds = read_creds(pile)
    intruder = Watcher(broker, creds["mqtt_account"], creds["mqtt_password"],
                       "intruder-" + DEV, [])
    try:
        intruder.publish(_sys(DEV, "event/orderUpdateEvt/post_reply"),
                         _ack(DEV, "orderUpdateEvt", sid))
        # the one ack-shaped message this account may still publish, on a reply topic
        # (its own reply comes back to it): the pile drops it
        intruder.publish(_sys(DEV, "service/stopChargeSrv_reply"),
                         _ack(DEV, "orderUpdateEvt", sid))
    finally:
        intruder.close()
    # a service sent now reaches the pile after anything the broker let through above
    give_model(platform, ele_model_id="M-AFTER")
    st = pile.status()
    assert st["orders_pending"] == 1 and st["fee_model"] == "M-AFTER", st
    assert "acknowledged" not in pile.output().split("[up] orderUpdateEvt")[-1]

    platform.acknowledge(DEV, "orderUpdateEvt", sid)          # the platform's own word
    pile.wait_status(lambda s: s["orders_pending"] == 0)
    assert len(platform.messages(DEV, "orderUpdateEvt")) == 1
