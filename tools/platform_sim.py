"""jsIOT platform simulator: a library for host tests and a CLI for the bench.

This module owns the platform's side of PROTOCOL.md sections 1-4:
  - the oneKeyLink provisioning endpoint over HTTP (signature check, fresh
    per-device MQTT password and ACL installed in the broker, fault injection);
  - what a device may do on the broker (device_acl): publish its own events
    and its replies to the platform's services, read its own services and
    event acknowledgements, nothing else;
  - the platform's MQTT client, as superuser "platform": it records every
    device event and service reply, acknowledges events, and sends services
    (fee model, start, stop, raw payloads);
  - waiting helpers for tests (wait_for, messages, mark);
  - the `serve` command line.
It does not own the broker (tools/broker.py) nor the network faults
(tools/netem.py).

Recorded messages are dicts {topic, dev, cmd, msg, raw, t}: cmd is the topic's
command, so a service reply's cmd is "<service>_reply" (its head.cmd is
"<service>Reply"); msg is the parsed JSON or None.
"""
import argparse
import collections
import hashlib
import http.server
import itertools
import json
import logging
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
import urllib.parse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from broker import Broker  # noqa: E402

log = logging.getLogger("platform_sim")

PROVISION_PATH = "/publicCloud/oneKeyLink/v1"
DEFAULT_VENDORS = {"hci": "bc0e921e1132c98628197baea2edd65d)"}
OK_CODE = "JCLOUD0001"
ERROR_CODE = "JCLOUD0002"
FAULT_CODE = "JCLOUD0500"
REQUIRED_PARAMS = ("app_id", "cpu_id", "product_type", "sign_type", "sign")
FAULTS = (None, "http500", "badjson", "badcode", "hang", "html", "garbage")
HTML_PAGE = (b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
             b"<body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>")
HANG_LIMIT = 30.0
EVENTS_SUB = "/sys/+/+/thing/event/+/post"
SERVICES_SUB = "/sys/+/+/thing/service/+"
FEE, START, STOP = "feeModelUpdateSrv", "startChargeSrv", "stopChargeSrv"
SERVICES = (FEE, START, STOP)      # every service the platform sends, each answered


# -- signature and topics -----------------------------------------------

def md5_upper(text):
    return hashlib.md5(text.encode("utf-8")).hexdigest().upper()


def sign_string(params, secret):
    """The text that is signed: sorted params except sign, then the key."""
    pairs = "&".join("%s=%s" % (k, params[k]) for k in sorted(params) if k != "sign")
    return "%s&key=%s&%s" % (pairs, secret, md5_upper(secret))


def make_sign(params, secret):
    return md5_upper(sign_string(params, secret))


def event_topic(pk, dn, cmd):
    return "/sys/%s/%s/thing/event/%s/post" % (pk, dn, cmd)


def ack_topic(pk, dn, cmd):
    return event_topic(pk, dn, cmd) + "_reply"


def service_topic(pk, dn, cmd):
    return "/sys/%s/%s/thing/service/%s" % (pk, dn, cmd)


def reply_topic(pk, dn, cmd):
    return service_topic(pk, dn, cmd) + "_reply"


def device_acl(pk, dn):
    """[(access, topic filter)]: all a device's account may do on the broker.

    A device publishes its events and its replies and reads its services and the
    acknowledgements of its events, each under its own product key and id only.
    Acknowledgements and services are the platform's words: a device that could
    publish them could acknowledge its own billing record (and drop it from its
    journal) or order itself to start.  An ACL filter cannot match "<service>_reply"
    (a wildcard takes a whole level), so each service's reply topic is listed;
    the ack topic ends in .../post_reply, one level that "+/post" does not match.
    """
    return ([("write", event_topic(pk, dn, "+"))]
            + [("write", reply_topic(pk, dn, cmd)) for cmd in SERVICES]
            + [("read", service_topic(pk, dn, "+")), ("read", ack_topic(pk, dn, "+"))])


def ack_payload(dn, cmd, session_id, result=10):
    """The acknowledgement of a device's event cmd #session_id (PROTOCOL.md section 3)."""
    return json.dumps({"head": {"cmd": cmd + "Reply", "dev_id": dn, "session_id": session_id,
                                "timestamp": now_ms(), "status": 0, "ttl": -1,
                                "version": "1.0.0"},
                       "body": {"result": result}})


def parse_topic(topic):
    """(pk, dn, cmd, "event"|"reply") for a device message topic, else None."""
    p = topic.split("/")
    if len(p) < 7 or p[:2] != ["", "sys"] or p[4] != "thing":
        return None
    if len(p) == 8 and p[5] == "event" and p[7] == "post":
        return p[2], p[3], p[6], "event"
    if len(p) == 7 and p[5] == "service" and p[6].endswith("_reply"):
        return p[2], p[3], p[6], "reply"
    return None


def now_ms():
    return int(time.time() * 1000)


def _json_or_none(raw):
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _head(msg):
    head = msg.get("head") if isinstance(msg, dict) else None
    return head if isinstance(head, dict) else {}


def describe(rec, width=None):
    """One readable line for a recorded message."""
    stamp = time.strftime("%H:%M:%S", time.localtime(rec["t"]))
    if rec["msg"] is None:
        text = "unparsable %r" % rec["raw"][:200]
    else:
        sid = _head(rec["msg"]).get("session_id")
        body = rec["msg"].get("body") if isinstance(rec["msg"], dict) else rec["msg"]
        text = "sid=%s %s" % (sid, json.dumps(body, separators=(",", ":")))
    line = "%s %s %s %s" % (stamp, rec["dev"], rec["cmd"], text)
    return line if width is None else line[:width]


# -- brokers --------------------------------------------------------------

class ExternalBroker:
    """A broker run by someone else, used without touching its configuration.

    Limitation: users cannot be created or removed, so the password that
    provisioning returns is not installed anywhere; the broker must accept
    the device by its own means, and revoke() can only kick.  Nor is the
    device's ACL: confining it (device_acl) is that broker's job.
    """
    manages_users = False

    def __init__(self, url, admin):
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme != "mqtt" or not parsed.hostname:
            raise ValueError("broker url must look like mqtt://host:port")
        self.host = parsed.hostname
        self.port = parsed.port or 1883
        user, sep, password = admin.partition(":")
        if not sep:
            raise ValueError("broker admin must be user:password")
        self.admin = (user, password)

    def set_user(self, user, password):
        pass

    def set_acl(self, user, rules):
        pass

    def remove_user(self, user):
        return False

    def reload(self):
        pass


def _client_host(broker):
    return "127.0.0.1" if broker.host in ("", "0.0.0.0") else broker.host


# -- HTTP -----------------------------------------------------------------

class _ProvisionHandler(http.server.BaseHTTPRequestHandler):
    sim = None  # set on a subclass per simulator

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != PROVISION_PATH:
            self._send(404, b'{"message": "not found"}')
            return
        params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        answer = self.sim.handle_provision(params)
        if answer is None:
            self.close_connection = True
            return
        self._send(*answer)

    def _send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "text/html" if body.startswith(b"<!") else
                         "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        log.debug("http %s %s", self.address_string(), fmt % args)


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """A client that hung up (e.g. a pile that gave up on a "hang" fault) is routine:
        one debug line, not a traceback on the console."""
        log.debug("http client %s went away: %s", client_address, sys.exc_info()[1])


def _json_bytes(obj):
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


# -- the simulator --------------------------------------------------------

class PlatformSim:
    """The platform: provisioning over HTTP, events and services over MQTT."""

    def __init__(self, broker, http_port=0, mqtt_addr_for_devices=None,
                 vendors=None, http_host="127.0.0.1"):
        self.broker = broker
        self.vendors = dict(DEFAULT_VENDORS if vendors is None else vendors)
        self.mqtt_addr_for_devices = (
            mqtt_addr_for_devices or "tcp://%s:%d" % (_client_host(broker), broker.port))
        self.provision_fault = None
        self.provision_delay = 0.0   # seconds before each provisioning answer (a slow server)
        self.provision_count = collections.Counter()
        self.passwords = {}          # cpu_id -> password issued last
        self.issued = []             # every password issued, oldest first (tests)
        self.ack = True
        self.no_ack = set()
        self.on_record = None        # callable(record), e.g. the CLI printer
        self.project_no = "p300627001"
        self._pk = {}
        self._records = []
        self._cond = threading.Condition()
        self._users_lock = threading.Lock()
        self._sessions = itertools.count(1000)
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._http = self._make_http(http_host, http_port)
        self.http_url = "http://%s:%d" % (http_host, self._http.server_address[1])
        self._http_thread = None
        self._mqtt = None

    # -- lifetime

    def start(self):
        self._http_thread = threading.Thread(
            target=self._http.serve_forever, name="platform-http", daemon=True)
        self._http_thread.start()
        self._start_mqtt()
        return self

    def stop(self):
        self._stopping.set()
        if self._http_thread:
            self._http.shutdown()
            self._http_thread = None
        self._http.server_close()
        if self._mqtt:
            self._mqtt.disconnect()
            self._mqtt.loop_stop()
            self._mqtt = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def provision_url(self):
        return self.http_url + PROVISION_PATH

    # -- provisioning

    def _make_http(self, host, port):
        handler = type("Handler", (_ProvisionHandler,), {"sim": self})
        server = _HTTPServer((host, port), handler)
        return server

    def handle_provision(self, params):
        """(status, body bytes) for a oneKeyLink request, None to hang up."""
        cpu_id = params.get("cpu_id", "")
        with self._users_lock:
            self.provision_count[cpu_id] += 1
        if self.provision_delay:
            self._stopping.wait(self.provision_delay)
        fault = self._wait_while_hanging()
        if fault == "hang":
            return None
        if fault == "http500":
            return 500, b"simulated internal error"
        if fault == "badjson":
            return 200, b'{"result_code": "JCLOUD0001", "message": '
        if fault == "html":             # a captive portal or a proxy's error page
            return 200, HTML_PAGE
        if fault == "garbage":
            return 200, bytes(range(256)) * 4
        if fault == "badcode":
            return 200, _json_bytes({"result_code": FAULT_CODE,
                                     "message": "simulated platform failure"})
        error = self._check_request(params)
        if error:
            log.info("provisioning refused for %r: %s", cpu_id, error)
            return 200, _json_bytes({"result_code": ERROR_CODE, "message": error})
        return 200, _json_bytes(self._provision(params["cpu_id"], params["product_type"]))

    def _wait_while_hanging(self):
        deadline = time.monotonic() + HANG_LIMIT
        while self.provision_fault == "hang" and time.monotonic() < deadline:
            if self._stopping.wait(0.05):
                return "hang"
        return self.provision_fault

    def _check_request(self, params):
        missing = [k for k in REQUIRED_PARAMS if not params.get(k)]
        if missing:
            return "missing parameter: " + ",".join(missing)
        for name in ("cpu_id", "product_type"):
            if any(c in params[name] for c in "/+#: \t"):
                return "invalid %s" % name
        secret = self.vendors.get(params["app_id"])
        if secret is None:
            return "unknown app_id"
        if params["sign_type"] != "MD5":
            return "unsupported sign_type"
        if params["sign"] != make_sign(params, secret):
            return "signature mismatch (expected 32 upper-case hex digits)"
        return None

    def _provision(self, cpu_id, pk):
        password = secrets.token_hex(16)
        with self._users_lock:
            self.broker.set_user(cpu_id, password)
            self.broker.set_acl(cpu_id, device_acl(pk, cpu_id))
            self.broker.reload()
            self.passwords[cpu_id] = password
            self.issued.append(password)
            self._pk[cpu_id] = pk
        log.info("provisioned %s (%s), request #%d",
                 cpu_id, pk, self.provision_count[cpu_id])
        if not getattr(self.broker, "manages_users", True):
            log.warning("external broker: the password given to %s and its ACL are not "
                        "installed", cpu_id)
        params = {"mqtt_account": cpu_id, "mqtt_server_addr": self.mqtt_addr_for_devices,
                  "mqtt_id": cpu_id, "mqtt_password": password}
        return {"result_code": OK_CODE, "message": "成功",
                "common_params": {"project_no": self.project_no},
                "platform_params": [{"plat_type": "jsIOT", "params": params}]}

    def revoke(self, cpu_id):
        """Remove a device's account and kick its live connection."""
        with self._users_lock:
            self.broker.remove_user(cpu_id)
            self.broker.reload()
            self.passwords.pop(cpu_id, None)
        return self.kick(cpu_id)

    def kick(self, client_id, timeout=5.0):
        """Disconnect a client by taking over its client id as superuser."""
        connected = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=True)
        client.username_pw_set(*self.broker.admin)

        def on_connect(client, userdata, flags, reason_code, properties):
            if not reason_code.is_failure:
                connected.set()
        client.on_connect = on_connect
        client.connect(_client_host(self.broker), self.broker.port, keepalive=10)
        client.loop_start()
        ok = connected.wait(timeout)
        client.disconnect()
        client.loop_stop()
        log.info("kicked %s: %s", client_id, "done" if ok else "failed")
        return ok

    # -- MQTT

    def _start_mqtt(self, timeout=10.0):
        client = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id="platform-sim-" + secrets.token_hex(4))
        if self.broker.admin[0]:
            client.username_pw_set(*self.broker.admin)
        client.on_connect = self._on_connect
        client.on_subscribe = lambda c, u, mid, codes, p: self._subscribed.set()
        client.on_message = self._on_message
        client.reconnect_delay_set(0.1, 2)
        client.connect_async(_client_host(self.broker), self.broker.port, keepalive=30)
        client.loop_start()
        self._mqtt = client
        if not self._subscribed.wait(timeout):
            self.stop()
            raise RuntimeError("platform could not connect to the broker at %s:%d"
                               % (self.broker.host, self.broker.port))

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("platform connect refused: %s", reason_code)
            return
        client.subscribe([(EVENTS_SUB, 1), (SERVICES_SUB, 1)])

    def _on_message(self, client, userdata, message):
        parsed = parse_topic(message.topic)
        if parsed is None:
            return                     # our own services come back here
        pk, dn, cmd, kind = parsed
        msg = _json_or_none(message.payload)
        self._pk.setdefault(dn, pk)
        if kind == "event":
            self._acknowledge(pk, dn, cmd, msg)
        rec = {"topic": message.topic, "dev": dn, "cmd": cmd, "msg": msg,
               "raw": message.payload, "t": time.time()}
        with self._cond:
            self._records.append(rec)
            self._cond.notify_all()
        if self.on_record:
            self.on_record(rec)

    def _acknowledge(self, pk, dn, cmd, msg):
        session_id = _head(msg).get("session_id")
        if not self.ack or cmd in self.no_ack or session_id is None:
            return
        self._mqtt.publish(ack_topic(pk, dn, cmd), ack_payload(dn, cmd, session_id), qos=1)

    def acknowledge(self, dev, cmd, session_id, pk=None):
        """Acknowledge event cmd #session_id of dev now (one held back by no_ack)."""
        self._publish(ack_topic(self.pk_for(dev, pk), dev, cmd),
                      ack_payload(dev, cmd, session_id))

    def _publish(self, topic, data):
        info = self._mqtt.publish(topic, data, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError("publish to %s failed: %s" % (topic, mqtt.error_string(info.rc)))
        info.wait_for_publish(5)

    def pk_for(self, dev, pk=None):
        pk = pk or self._pk.get(dev)
        if not pk:
            raise KeyError("product_type of %s unknown: provision it, wait for a "
                           "message from it, or pass pk=" % dev)
        return pk

    # -- services

    def next_session_id(self):
        return next(self._sessions)

    def _service(self, dev, cmd, body, priority=1, reliability=1, pk=None):
        sid = self.next_session_id()
        payload = {"control_equip_id": dev, "version": "1.0.0",
                   "priority": priority, "reliability": reliability,
                   "compress": 0, "media_type": 0, "request_type": 1,
                   "head": {"version": "1.0.0", "session_id": sid, "cmd": cmd,
                            "status": 0, "ttl": -1, "timestamp": now_ms(),
                            "dev_id": dev},
                   "body": body}
        self._publish(service_topic(self.pk_for(dev, pk), dev, cmd), json.dumps(payload))
        return sid

    def set_fee_model(self, dev, ele_model_id, time_seg, seg_flag, charge_fee,
                      serviceFee, pk=None):
        body = {"ele_model_id": str(ele_model_id), "time_num": len(time_seg),
                "time_seg": list(time_seg), "seg_flag": list(seg_flag),
                "charge_fee": list(charge_fee), "serviceFee": list(serviceFee)}
        return self._service(dev, FEE, body, pk=pk)

    def start_charge(self, dev, pre_trade_no, charge_mode=10, limit_data=0,
                     start_type=10, gun_no=1, pk=None):
        body = {"dev_id": dev, "gun_no": gun_no, "charge_mode": charge_mode,
                "limit_data": limit_data, "insert_gun_time": 1000, "start_mode": 0,
                "pre_trade_no": pre_trade_no, "start_type": start_type}
        return self._service(dev, START, body, 2, 2, pk=pk)

    def stop_charge(self, dev, pre_trade_no, stop_reason=10, gun_no=1, pk=None):
        body = {"gun_no": gun_no, "pre_trade_no": pre_trade_no,
                "stop_reason": stop_reason}
        return self._service(dev, STOP, body, pk=pk)

    def send_raw(self, dev, payload, cmd=None, pk=None):
        """Publish any payload on a service topic; return its session_id if any."""
        sid = None
        if isinstance(payload, dict):
            cmd = cmd or _head(payload).get("cmd")
            sid = _head(payload).get("session_id")
            payload = json.dumps(payload)
        self._publish(service_topic(self.pk_for(dev, pk), dev, cmd or "rawSrv"), payload)
        return sid

    # -- records and waiting

    def mark(self):
        with self._cond:
            return len(self._records)

    def messages(self, dev=None, cmd=None):
        with self._cond:
            return [r for r in self._records if _matches(r, dev, cmd, None)]

    def wait_for(self, dev, cmd, pred=None, timeout=10, since=None):
        """First message from dev with cmd (and pred(msg)) at index >= since."""
        start = since or 0
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for rec in self._records[start:]:
                    if _matches(rec, dev, cmd, pred):
                        return rec
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            received = self._records[start:]
        raise AssertionError(_summary(dev, cmd, pred, timeout, start, received))

    def devices(self):
        """{dev: {"pk", "messages", "last", "provisions"}} for every known device."""
        out = {}
        with self._cond:
            for dev in sorted(set(self._pk) | set(self.provision_count) - {""}):
                recs = [r for r in self._records if r["dev"] == dev]
                out[dev] = {"pk": self._pk.get(dev), "messages": len(recs),
                            "last": describe(recs[-1], 100) if recs else None,
                            "provisions": self.provision_count.get(dev, 0)}
        return out


def _matches(rec, dev, cmd, pred):
    if dev is not None and rec["dev"] != dev:
        return False
    if cmd is not None and rec["cmd"] != cmd:
        return False
    if pred is None:
        return True
    if rec["msg"] is None:
        return False
    try:
        return bool(pred(rec["msg"]))
    except (KeyError, IndexError, TypeError):
        return False


def _summary(dev, cmd, pred, timeout, start, received):
    what = "%s from %s%s" % (cmd, dev, " matching the predicate" if pred else "")
    lines = ["no %s within %s s; %d message(s) since index %d%s"
             % (what, timeout, len(received), start, ":" if received else ".")]
    lines += ["  " + describe(r, 160) for r in received[-20:]]
    return "\n".join(lines)


# -- command line ---------------------------------------------------------

COMMANDS_HELP = """commands:
  fee DEV MODEL_ID TIMES FLAGS CHARGE_FEES SERVICE_FEES
      e.g. fee CLA333333333333 1223213 0000,0800,1200 13,11,12 10000,50000,20000,10000 20000,20000,20000,10000
  start DEV TRADE [MODE LIMIT]   start charging (mode 10 unlimited ... 15 power)
  stop DEV TRADE [REASON]        stop charging (reason 10 app stop ...)
  list                           known devices
  revoke DEV                     delete a device's MQTT account and kick it
  help                           this text
  quit                           stop everything"""


SERVE_EPILOG = COMMANDS_HELP + """

Device messages are printed one per line; every event is acknowledged.
If stdin is closed the simulator keeps running until Ctrl-C.

A pile on the LAN: serve --bind 0.0.0.0 --advertise <this PC's IP>, then set the
pile's provisioning URL to http://<this PC's IP>:8779/publicCloud/oneKeyLink/v1.
Port 0 picks a free port; the URL printed at start shows it.

With --broker-url the simulator cannot create MQTT accounts: provisioning answers
with that broker's address and a fresh password that is installed nowhere, so the
broker must accept the device by its own means, and revoke only kicks it. Nor is
the device's ACL installed: that broker must confine each device to its own
topics itself (README.md, "What the broker must enforce")."""


def _ints(text):
    return [int(x) for x in text.split(",")]


def _cmd_fee(sim, args):
    dev, model, times, flags, fees, serv = args
    return sim.set_fee_model(dev, model, times.split(","), _ints(flags), _ints(fees), _ints(serv))


def _cmd_start(sim, args):
    dev, trade = args[:2]
    mode, limit = (int(args[2]), int(args[3])) if len(args) >= 4 else (10, 0)
    return sim.start_charge(dev, trade, charge_mode=mode, limit_data=limit)


def _cmd_stop(sim, args):
    dev, trade = args[:2]
    return sim.stop_charge(dev, trade, stop_reason=int(args[2]) if len(args) > 2 else 10)


def _cmd_list(sim, args):
    for dev, info in sim.devices().items():
        print("%s pk=%s provisions=%d messages=%d last: %s"
              % (dev, info["pk"], info["provisions"], info["messages"], info["last"]))


def _cmd_revoke(sim, args):
    (dev,) = args
    print("revoked %s, kick %s" % (dev, "done" if sim.revoke(dev) else "failed"))


COMMANDS = {"fee": _cmd_fee, "start": _cmd_start, "stop": _cmd_stop,
            "list": _cmd_list, "revoke": _cmd_revoke}


def run_command(sim, line):
    """Run one stdin command; return False on quit."""
    words = line.split()
    if not words:
        return True
    name, args = words[0], words[1:]
    if name == "quit":
        return False
    if name == "help" or name not in COMMANDS:
        print(COMMANDS_HELP)
        return True
    try:
        sid = COMMANDS[name](sim, args)
        if sid is not None:
            print("-> %s sent, session_id %s" % (name, sid))
    except (ValueError, KeyError, RuntimeError) as e:
        print("error: %s\nusage: %s" % (e, _usage(name)))
    return True


def _usage(name):
    lines = [x.strip() for x in COMMANDS_HELP.splitlines()]
    return next(x for x in lines if x.split()[0] == name)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="jsIOT platform simulator for a charging pile on the bench.",
        epilog="See: %(prog)s serve --help",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="run a broker and the platform, read commands from stdin",
        description="Start a private mosquitto (or use --broker-url), the provisioning "
        "endpoint GET " + PROVISION_PATH + " and the platform's MQTT client.",
        epilog=SERVE_EPILOG)
    serve.add_argument("--workdir", metavar="DIR",
                       help="broker files go here (default: a new temp dir)")
    serve.add_argument("--http-port", metavar="N", type=int, default=8779,
                       help="provisioning port (default 8779, as the seed)")
    serve.add_argument("--mqtt-port", metavar="N", type=int, default=1883,
                       help="private broker's port (default 1883)")
    serve.add_argument("--bind", metavar="ADDR", default="127.0.0.1",
                       help="address to listen on; 0.0.0.0 to reach a pile on the LAN")
    serve.add_argument("--advertise", metavar="HOST",
                       help="host given to devices in mqtt_server_addr (default 127.0.0.1)")
    serve.add_argument("--broker-url", metavar="mqtt://HOST:PORT",
                       help="use this existing broker; its configuration is not touched")
    serve.add_argument("--broker-admin", metavar="USER:PASS",
                       help="superuser credentials for --broker-url")
    serve.add_argument("--vendors", metavar="FILE",
                       help='JSON {"app_id": "secretKey"}; default: the hci test key')
    args = parser.parse_args(argv)
    if bool(args.broker_url) != bool(args.broker_admin):
        parser.error("--broker-url and --broker-admin go together")
    return args


def _load_vendors(path):
    if not path:
        return None
    with open(path) as f:
        return json.load(f)


def serve(args):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S")
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    broker = None
    if args.broker_url:
        target = ExternalBroker(args.broker_url, args.broker_admin)
        addr = "tcp://%s:%d" % (target.host, target.port)
    else:
        workdir = args.workdir or tempfile.mkdtemp(prefix="platform_sim-")
        broker = target = Broker(workdir, args.mqtt_port, host=args.bind).start()
        addr = "tcp://%s:%d" % (args.advertise or "127.0.0.1", broker.port)
        if args.bind != "127.0.0.1" and not args.advertise:
            log.warning("devices are told 127.0.0.1: pass --advertise")
    try:
        with PlatformSim(target, args.http_port, addr, _load_vendors(args.vendors),
                         http_host=args.bind) as sim:
            sim.on_record = lambda rec: print(describe(rec), flush=True)
            print("provisioning: %s\ndevices get: %s" % (sim.provision_url, addr))
            for app_id, key in sorted(sim.vendors.items()):
                note = (" (the seed's key WITH its stray ')': the seed's own MD5 example"
                        " was computed with it)" if key == DEFAULT_VENDORS.get("hci") else "")
                print("vendor %s: secret key %r%s; --vendors FILE for others"
                      % (app_id, key, note))
            if broker:
                print("broker files and log: %s" % broker.workdir)
            print("type 'help' for commands", flush=True)
            _read_commands(sim)
    finally:
        if broker:
            broker.stop()


def _read_commands(sim):
    for line in sys.stdin:
        if not run_command(sim, line):
            return
    print("stdin closed; running until Ctrl-C", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def main(argv=None):
    args = parse_args(argv)
    try:
        serve(args)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
