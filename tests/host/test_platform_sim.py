"""Host tests of the test infrastructure itself: broker, netem proxy, platform.

They start a real mosquitto (tools/broker.py) and talk to it with paho, the
way the firmware will; nothing here is mocked.
"""
import ast
import importlib.util
import json
import os
import queue
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOOLS = os.path.join(ROOT, "tools")
sys.path.insert(0, TOOLS)

import netem  # noqa: E402
import platform_sim as ps  # noqa: E402
from broker import Broker  # noqa: E402

SECRET = ps.DEFAULT_VENDORS["hci"]
PK = "HCI-EVA7"


# -- helpers ----------------------------------------------------------------

class Device:
    """A paho client standing in for a pile; paho reconnects by itself."""

    def __init__(self, port, user, password, client_id=None):
        self.connects, self.disconnects = queue.Queue(), queue.Queue()
        self.received, self.subacks = queue.Queue(), queue.Queue()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or user)
        c.username_pw_set(user, password)
        c.reconnect_delay_set(0.1, 0.5)
        c.on_connect = lambda c, u, f, rc, p: self.connects.put(rc)
        c.on_disconnect = lambda c, u, f, rc, p: self.disconnects.put(rc)
        c.on_message = lambda c, u, m: self.received.put(m)
        c.on_subscribe = lambda c, u, mid, codes, p: self.subacks.put(codes)
        c.connect_async("127.0.0.1", port, keepalive=30)
        c.loop_start()
        self.client = c

    def wait_connect(self, timeout=5):
        return self.connects.get(timeout=timeout)

    def subscribe(self, topic):
        self.client.subscribe(topic, qos=1)
        return self.subacks.get(timeout=5)[0]

    def publish(self, topic, payload, wait=True):
        info = self.client.publish(topic, json.dumps(payload), qos=1)
        if wait:
            info.wait_for_publish(5)
        return info

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def event(dev, cmd, sid, body=None):
    head = {"cmd": cmd, "dev_id": dev, "seq_id": sid, "session_id": sid,
            "status": 0, "timestamp": ps.now_ms(), "ttl": -1, "version": 0}
    return {"head": head, "body": body or {}}


def provision(sim, cpu_id, app_id="hci", tamper=False, drop=None, pk=PK):
    params = {"app_id": app_id, "cpu_id": cpu_id, "product_type": pk, "sign_type": "MD5"}
    params["sign"] = ps.make_sign(params, SECRET)
    if tamper:
        params["product_type"] = "OTHER"
    if drop:
        del params[drop]
    url = sim.provision_url + "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def credentials(answer):
    (entry,) = [p for p in answer["platform_params"] if p["plat_type"] == "jsIOT"]
    return entry["params"]


def addr_port(params):
    return int(params["mqtt_server_addr"].rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with Broker(str(tmp_path_factory.mktemp("broker"))) as b:
        yield b


@pytest.fixture(scope="module")
def sim(broker):
    with ps.PlatformSim(broker) as s:
        yield s


@pytest.fixture
def devices():
    made = []

    def make(*args, **kw):
        made.append(Device(*args, **kw))
        return made[-1]
    yield make
    for d in made:
        d.close()


def provisioned(sim, devices, cpu_id):
    creds = credentials(provision(sim, cpu_id))
    dev = devices(addr_port(creds), creds["mqtt_account"], creds["mqtt_password"],
                  creds["mqtt_id"])
    assert dev.wait_connect() == 0
    return dev


# -- signature and provisioning ---------------------------------------------------

def test_sign_vector():
    assert ps.md5_upper(SECRET) == "8AACB50F5AC43A0C49F75180E7A26C5E"
    text = ps.sign_string({"b": "2", "a": "1", "sign": "X"}, "k")
    assert text == "a=1&b=2&key=k&" + ps.md5_upper("k")
    assert ps.make_sign({"a": "1"}, "k") == ps.md5_upper("a=1&key=k&" + ps.md5_upper("k"))


def test_good_signature_provisions(sim, broker):
    answer = provision(sim, "HCS000000000001")
    assert answer["result_code"] == "JCLOUD0001"
    assert answer["common_params"]["project_no"]
    creds = credentials(answer)
    assert creds["mqtt_account"] == creds["mqtt_id"] == "HCS000000000001"
    assert creds["mqtt_server_addr"] == "tcp://127.0.0.1:%d" % broker.port
    assert len(creds["mqtt_password"]) == 32
    assert "HCS000000000001" in broker.users()
    assert sim.provision_count["HCS000000000001"] == 1


@pytest.mark.parametrize("kind", ["tamper", "app", "missing", "wildcard"])
def test_bad_requests_are_refused(sim, broker, kind):
    cpu_id = "HCS0000000BAD" + kind
    if kind == "tamper":
        answer = provision(sim, cpu_id, tamper=True)
    elif kind == "app":
        answer = provision(sim, cpu_id, app_id="nobody")
    elif kind == "wildcard":            # signed, but its ACL would cover every product
        answer = provision(sim, cpu_id, pk="+")
    else:
        answer = provision(sim, cpu_id, drop="sign")
    assert answer["result_code"] != "JCLOUD0001" and answer["message"]
    assert cpu_id not in broker.users()
    assert cpu_id not in broker.grants


def test_reprovision_replaces_password(sim, devices):
    first = credentials(provision(sim, "HCS000000000002"))
    second = credentials(provision(sim, "HCS000000000002"))
    assert first["mqtt_password"] != second["mqtt_password"]
    old = devices(addr_port(first), "HCS000000000002", first["mqtt_password"])
    assert old.wait_connect() != 0
    assert sim.provision_count["HCS000000000002"] == 2


def test_provision_faults(sim):
    try:
        sim.provision_fault = "http500"
        with pytest.raises(urllib.error.HTTPError):
            provision(sim, "HCS000000000003")
        sim.provision_fault = "badjson"
        with pytest.raises(ValueError):
            provision(sim, "HCS000000000003")
        sim.provision_fault = "badcode"
        assert provision(sim, "HCS000000000003")["result_code"] != "JCLOUD0001"
        sim.provision_fault = "hang"
        url = sim.provision_url + "?cpu_id=HCS000000000003"
        with pytest.raises(OSError):           # socket.timeout is an OSError
            urllib.request.urlopen(url, timeout=0.3)
    finally:
        sim.provision_fault = None
    assert sim.provision_count["HCS000000000003"] == 4


# -- MQTT: acknowledgements, services, ACL -------------------------------------

def test_events_are_recorded_and_acknowledged(sim, devices):
    dev = provisioned(sim, devices, "HCS000000000010")
    assert dev.subscribe("/sys/%s/HCS000000000010/thing/event/+/post_reply" % PK) == 1
    since = sim.mark()
    dev.publish(ps.event_topic(PK, "HCS000000000010", "verInfoEvt"),
                event("HCS000000000010", "verInfoEvt", 7, {"sdk_ver": "2.5.0"}))
    rec = sim.wait_for("HCS000000000010", "verInfoEvt", since=since,
                       pred=lambda m: m["body"]["sdk_ver"] == "2.5.0")
    assert rec["msg"]["head"]["session_id"] == 7
    ack = dev.received.get(timeout=5)
    assert ack.topic == "/sys/%s/HCS000000000010/thing/event/verInfoEvt/post_reply" % PK
    reply = json.loads(ack.payload)
    assert reply["head"]["cmd"] == "verInfoEvtReply"
    assert reply["head"]["session_id"] == 7 and reply["body"] == {"result": 10}


def test_no_ack_and_services(sim, devices):
    dev = provisioned(sim, devices, "HCS000000000011")
    dev.subscribe("/sys/%s/HCS000000000011/thing/event/+/post_reply" % PK)
    dev.subscribe("/sys/%s/HCS000000000011/thing/service/+" % PK)
    sim.no_ack.add("orderUpdateEvt")
    try:
        dev.publish(ps.event_topic(PK, "HCS000000000011", "orderUpdateEvt"),
                    event("HCS000000000011", "orderUpdateEvt", 1))
        sim.wait_for("HCS000000000011", "orderUpdateEvt")
    finally:
        sim.no_ack.discard("orderUpdateEvt")
    sid = sim.set_fee_model("HCS000000000011", "1223213", ["1023", "1230", "1430"],
                            [10, 11, 12], [10000, 50000, 20000, 10000],
                            [20000, 20000, 20000, 10000])
    got = dev.received.get(timeout=5)          # the service: no ack came before it
    msg = json.loads(got.payload)
    assert got.topic == ps.service_topic(PK, "HCS000000000011", "feeModelUpdateSrv")
    assert msg["head"]["session_id"] == sid and msg["body"]["time_num"] == 3
    assert msg["control_equip_id"] == "HCS000000000011"
    assert sim.start_charge("HCS000000000011", "T1") > sid
    reply = event("HCS000000000011", "feeModelUpdateSrvReply", sid, {"result": 10})
    dev.publish(got.topic + "_reply", reply)
    sim.wait_for("HCS000000000011", "feeModelUpdateSrv_reply",
                 pred=lambda m: m["head"]["session_id"] == sid)


def test_wait_for_explains_timeout(sim):
    with pytest.raises(AssertionError, match="no nothingEvt from HCS9"):
        sim.wait_for("HCS9", "nothingEvt", timeout=0.1)


def test_device_confined_to_its_own_topics(sim, devices):
    a = provisioned(sim, devices, "HCS00000000000A")
    b = provisioned(sim, devices, "HCS00000000000B")
    # mosquitto 2.0.11 grants these SUBSCRIBEs but filters each delivery by the ACL.
    a.subscribe("/sys/%s/HCS00000000000B/thing/service/+" % PK)
    a.subscribe("/sys/+/+/#")
    assert a.subscribe("/sys/%s/HCS00000000000A/thing/service/+" % PK) == 1
    assert b.subscribe("/sys/%s/HCS00000000000B/thing/service/+" % PK) == 1
    since = sim.mark()
    a.publish(ps.event_topic(PK, "HCS00000000000B", "verInfoEvt"),
              event("HCS00000000000B", "verInfoEvt", 1))
    a.publish(ps.event_topic(PK, "HCS00000000000A", "verInfoEvt"),
              event("HCS00000000000A", "verInfoEvt", 2))
    sim.wait_for("HCS00000000000A", "verInfoEvt", since=since)
    # The broker keeps one client's messages in order: the forged one was dropped.
    assert sim.messages("HCS00000000000B") == []
    sim.stop_charge("HCS00000000000B", "T9")
    sim.stop_charge("HCS00000000000A", "T8")
    assert json.loads(b.received.get(timeout=5).payload)["body"]["pre_trade_no"] == "T9"
    topics = [a.received.get(timeout=5).topic]  # all A saw, up to its own service
    while not topics[-1].endswith("/stopChargeSrv"):
        topics.append(a.received.get(timeout=5).topic)
    assert [t for t in topics if "/HCS00000000000B/" in t] == []
    assert "/HCS00000000000A/" in topics[-1]


def test_device_cannot_forge_acks_or_services(sim, devices):
    dn = "HCS00000000000F"
    dev = provisioned(sim, devices, dn)
    assert dev.subscribe(ps.ack_topic(PK, dn, "+")) == 1
    assert dev.subscribe(ps.service_topic(PK, dn, "+")) == 1
    since = sim.mark()
    # what only the platform may say: an acknowledgement of the device's own order, a
    # service to itself ...
    dev.publish(ps.ack_topic(PK, dn, "orderUpdateEvt"), json.loads(
        ps.ack_payload(dn, "orderUpdateEvt", 41)))
    dev.publish(ps.service_topic(PK, dn, "startChargeSrv"), {"head": {"session_id": 42}})
    # ... then its own event, which the platform acknowledges: the first thing the device
    # receives (the broker handles one client's packets in order)
    dev.publish(ps.event_topic(PK, dn, "verInfoEvt"), event(dn, "verInfoEvt", 44))
    first = dev.received.get(timeout=5)
    assert first.topic == ps.ack_topic(PK, dn, "verInfoEvt")
    assert json.loads(first.payload)["head"]["session_id"] == 44
    assert [r["cmd"] for r in sim.messages()[since:] if r["dev"] == dn] == ["verInfoEvt"]
    # its reply to a platform's service passes; the broker hands it back to the device
    # too (its own service subscription matches), which the firmware drops
    sid = sim.stop_charge(dn, "T1")
    got = dev.received.get(timeout=5)
    assert got.topic == ps.service_topic(PK, dn, "stopChargeSrv")
    dev.publish(ps.reply_topic(PK, dn, "stopChargeSrv"),
                event(dn, "stopChargeSrvReply", sid, {"result": 10}))
    sim.wait_for(dn, "stopChargeSrv_reply", pred=lambda m: m["head"]["session_id"] == sid)
    assert dev.received.get(timeout=5).topic == ps.reply_topic(PK, dn, "stopChargeSrv")
    assert dev.received.empty()


def acl_sections(text):
    """{user: [ACL lines]} of a mosquitto ACL file."""
    sections, user = {}, None
    for line in text.splitlines():
        if line.startswith("user "):
            user = line[5:]
            sections[user] = []
        elif line.strip():
            sections.setdefault(user, []).append(line)
    return sections


def test_acl_text_grants_each_device_its_own_topics(sim, broker):
    dn = "HCS0000000ACL01"
    provision(sim, dn)
    with open(broker.acl_path) as f:
        sections = acl_sections(f.read())
    assert sections["platform"] == ["topic readwrite #"]
    assert None not in sections, "lines before any user apply to every client"
    expected = [
        "topic write /sys/HCI-EVA7/HCS0000000ACL01/thing/event/+/post",
        "topic write /sys/HCI-EVA7/HCS0000000ACL01/thing/service/feeModelUpdateSrv_reply",
        "topic write /sys/HCI-EVA7/HCS0000000ACL01/thing/service/startChargeSrv_reply",
        "topic write /sys/HCI-EVA7/HCS0000000ACL01/thing/service/stopChargeSrv_reply",
        "topic read /sys/HCI-EVA7/HCS0000000ACL01/thing/service/+",
        "topic read /sys/HCI-EVA7/HCS0000000ACL01/thing/event/+/post_reply",
    ]
    assert sections[dn] == expected
    provision(sim, dn, pk="HCI-EVA22")       # provisioned again as another product
    with open(broker.acl_path) as f:
        sections = acl_sections(f.read())
    assert sections[dn] == [line.replace("HCI-EVA7", "HCI-EVA22") for line in expected]
    sim.revoke(dn)
    with open(broker.acl_path) as f:
        assert dn not in acl_sections(f.read())


def test_acl_rejects_what_would_widen_it(broker):
    for user, rules in (("a b", []), ("platform", []), ("", []),
                        ("D", [("readwrite", "/sys/x\n#")]), ("D", [("deny", "/x")]),
                        ("D", [("write", "")])):
        with pytest.raises(ValueError):
            broker.set_acl(user, rules)
    assert "D" not in broker.grants


# -- the ACL against the firmware's own topics (firmware/pile/config.py, protocol.py)

def firmware_topics():
    """The pile's topic templates (config.DEFAULTS) and the services it answers
    (protocol.py START, STOP, FEE), read without importing MicroPython code."""
    spec = importlib.util.spec_from_file_location(
        "pile_config", os.path.join(ROOT, "firmware", "pile", "config.py"))
    config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config)
    with open(os.path.join(ROOT, "firmware", "pile", "protocol.py")) as f:
        tree = ast.parse(f.read())
    services = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple) and \
                "START" in [t.id for t in node.targets[0].elts]:
            services = {e.value for e in node.value.elts}
    assert services, "protocol.py: START, STOP, FEE = ... not found"
    return config.DEFAULTS, services


def allows(rules, access, topic):
    """mosquitto's acl_file check: some rule with this access whose filter matches."""
    return any(access in a and mqtt.topic_matches_sub(f, topic) for a, f in rules)


def test_acl_grants_exactly_the_firmware_topics():
    cfg, services = firmware_topics()
    assert services == set(ps.SERVICES), "a service the platform's ACL has no reply for"
    pk, dn = "HCI-EVA7", "HCS220922001000"

    def t(key, cmd="+", pk=pk, dn=dn):
        return cfg[key].format(pk=pk, dn=dn, cmd=cmd)

    rules = ps.device_acl(pk, dn)
    # the pile subscribes to exactly what it may read
    assert ("read", t("topic_services")) in rules and ("read", t("topic_acks")) in rules
    events = ("firmwareEvt", "verInfoEvt", "totalFaultEvt", "startChaResEvt",
              "stopChaResEvt", "acGunRunIty", "orderUpdateEvt")
    for cmd in events:
        assert allows(rules, "write", t("topic_event", cmd)), cmd
        assert not allows(rules, "read", t("topic_event", cmd)), cmd
        ack = t("topic_acks").replace("+", cmd)
        assert allows(rules, "read", ack), cmd
        assert not allows(rules, "write", ack), cmd         # a forged acknowledgement
    for cmd in services:
        assert allows(rules, "write", t("topic_reply", cmd)), cmd
        service = t("topic_services").replace("+", cmd)
        assert allows(rules, "read", service), cmd
        assert not allows(rules, "write", service), cmd     # a service to itself
    for other in (dict(dn="HCS220922009999"), dict(pk="OTHER-PK")):
        for key in ("topic_event", "topic_reply"):
            for cmd in ("orderUpdateEvt", "stopChargeSrv"):
                assert not allows(rules, "write", t(key, cmd, **other))
                assert not allows(rules, "read", t(key, cmd, **other))
        for key in ("topic_services", "topic_acks"):
            topic = t(key, **other).replace("+", "stopChargeSrv")
            assert not allows(rules, "read", topic) and not allows(rules, "write", topic)
    assert not allows(rules, "write", t("topic_reply", "rebootSrv"))  # not a service we send
    for topic in ("/sys/%s/%s/thing/property/post" % (pk, dn), "/sys/x", "$SYS/broker"):
        assert not allows(rules, "write", topic) and not allows(rules, "read", topic), topic


# -- revoke and kick -------------------------------------------------------------

def test_revoke_disconnects_and_refuses(sim, broker, devices):
    dev = provisioned(sim, devices, "HCS000000000020")
    assert sim.revoke("HCS000000000020")
    dev.disconnects.get(timeout=5)
    assert dev.wait_connect() != 0          # paho retries: now refused
    assert "HCS000000000020" not in broker.users()


def test_kick_takes_over_the_client_id(sim, devices):
    dev = provisioned(sim, devices, "HCS000000000021")
    assert sim.kick("HCS000000000021")
    dev.disconnects.get(timeout=5)
    assert dev.wait_connect() == 0          # still valid: it comes back


# -- netem --------------------------------------------------------------------------

def test_netem_modes(sim, broker, devices):
    creds = credentials(provision(sim, "HCS000000000030"))
    with netem.Proxy("127.0.0.1", broker.port) as proxy:
        dev = devices(proxy.port, "HCS000000000030", creds["mqtt_password"])
        assert dev.wait_connect() == 0

        proxy.set_mode("blackhole")
        since = sim.mark()
        dev.publish(ps.event_topic(PK, "HCS000000000030", "verInfoEvt"),
                    event("HCS000000000030", "verInfoEvt", 1), wait=False)
        with socket.create_connection(("127.0.0.1", proxy.port), 1) as s:
            s.settimeout(0.3)
            s.sendall(b"\x10\x00")          # junk: the broker would hang up at once
            with pytest.raises(socket.timeout):
                s.recv(10)
        with pytest.raises(AssertionError):
            sim.wait_for("HCS000000000030", "verInfoEvt", since=since, timeout=0.3)

        proxy.set_mode("pass")              # held bytes flow again
        sim.wait_for("HCS000000000030", "verInfoEvt", since=since, timeout=5)

        proxy.set_mode("down")
        dev.disconnects.get(timeout=5)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), 1)

        proxy.set_mode("pass")
        assert dev.wait_connect() == 0

        proxy.set_mode("reset")
        dev.disconnects.get(timeout=5)
        proxy.set_mode("pass")
        assert dev.wait_connect() == 0


# -- the command line ---------------------------------------------------------------

def test_cli_serve_and_quit(tmp_path):
    script = os.path.join(TOOLS, "platform_sim.py")
    help_text = subprocess.run([sys.executable, script, "serve", "--help"],
                               capture_output=True, text=True, timeout=10).stdout
    assert "--broker-url" in help_text and "revoke DEV" in help_text
    proc = subprocess.Popen(
        [sys.executable, script, "serve", "--workdir", str(tmp_path),
         "--http-port", "0", "--mqtt-port", "0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("provisioning: http://127.0.0.1:")
        pid = int((tmp_path / "mosquitto.pid").read_text())
        proc.stdin.write("list\nbogus\nquit\n")
        proc.stdin.flush()
        assert proc.wait(10) == 0
        assert "commands:" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(ProcessLookupError):     # its mosquitto is gone too
        os.kill(pid, 0)
