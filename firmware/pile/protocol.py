"""The jsIOT wire format: topics, envelopes, and validation of every downlink message.

The only module that knows wire names.  Device messages are built by event() and
reply(); everything the platform sends goes through decode(), which returns one of
    ("service", cmd, session_id, body)   a valid service request for this pile
    ("ack", cmd, session_id, result)     an acknowledgement of one of our events
    ("drop", reason)                     our own reply echoed back: ignore silently
    ("bad", reason, cmd, session_id)     malformed: log, maybe answer 11, change nothing
"""
import json

SUCCESS, FAILURE = 10, 11
INT, STR = "int", "str"

# body schemas of the services we accept: field -> (kind, required, lowest, highest)
SERVICES = {
    "startChargeSrv": {
        "gun_no": (INT, True, 1, 8), "pre_trade_no": (STR, True, 1, 64),
        "charge_mode": (INT, True, 10, 15), "limit_data": (INT, False, 0, 1 << 30),
        "start_type": (INT, False, 0, 99), "start_mode": (INT, False, 0, 99),
        "insert_gun_time": (INT, False, 0, 1 << 30),
    },
    "stopChargeSrv": {
        "gun_no": (INT, True, 1, 8), "pre_trade_no": (STR, True, 1, 64),
        "stop_reason": (INT, True, 10, 99),
    },
    "feeModelUpdateSrv": {"ele_model_id": (STR, True, 1, 64)},  # the rest: fees.parse
}


class Protocol:
    def __init__(self, cfg, now_ms, seq=1):
        self.cfg = cfg
        self.now_ms = now_ms
        self.pk = cfg["product_type"]
        self.dn = cfg["dev_id"]
        self.seq = seq
        self.last_ts = None     # head.timestamp of the last platform message, if sane

    def topic(self, name, cmd=""):
        return self.cfg[name].format(pk=self.pk, dn=self.dn, cmd=cmd)

    def event(self, cmd, body, status=0, item_id=None):
        """Return (session_id, topic, payload bytes) of a device event."""
        self.seq += 1
        head = {"cmd": cmd, "dev_id": self.dn, "seq_id": self.seq, "session_id": self.seq,
                "status": status, "timestamp": self.now_ms(), "ttl": -1, "version": 0}
        msg = {"head": head, "body": body}
        if item_id:
            msg["item_id"] = item_id
        return self.seq, self.topic("topic_event", cmd), json.dumps(msg).encode()

    def reply(self, cmd, session_id, body):
        """Return (topic, payload) of the reply to service ``cmd`` (PROTOCOL.md §2)."""
        head = {"cmd": cmd + "Reply", "dev_id": self.dn, "session_id": session_id,
                "status": 0, "timestamp": self.now_ms(), "ttl": -1, "version": 0}
        msg = {"head": head, "body": body}
        return self.topic("topic_reply", cmd), json.dumps(msg).encode()

    def decode(self, topic, payload):
        if topic.endswith("_reply") and not topic.endswith("/post_reply"):
            return ("drop", "own reply")
        try:
            msg = json.loads(payload)
        except (ValueError, UnicodeError):
            return ("bad", "not JSON", None, None)
        if not isinstance(msg, dict) or not isinstance(msg.get("head"), dict):
            return ("bad", "no head", None, None)
        head = msg["head"]
        ts = head.get("timestamp")
        self.last_ts = ts if isinstance(ts, int) and ts > 1500000000000 else None
        cmd = head.get("cmd")
        sid = head.get("session_id")
        if not isinstance(cmd, str):
            return ("bad", "head.cmd missing", None, sid)
        if topic.endswith("/post_reply"):
            return self._ack(cmd, sid, msg.get("body"))
        if cmd.endswith("Reply"):
            return ("drop", "reply on a service topic")
        return self._service(msg, head, cmd, sid, topic)

    def _ack(self, cmd, sid, body):
        if not isinstance(sid, int) or not cmd.endswith("Reply"):
            return ("bad", "acknowledgement without session_id or Reply cmd", cmd, sid)
        result = body.get("result") if isinstance(body, dict) else None
        return ("ack", cmd[:-5], sid, result)

    def _service(self, msg, head, cmd, sid, topic):
        if cmd not in SERVICES:
            return ("bad", "unknown cmd %s" % cmd, cmd, sid)
        if not topic.endswith("/" + cmd):
            return ("bad", "cmd %s on topic %s" % (cmd, topic), cmd, sid)
        target = msg.get("control_equip_id", head.get("dev_id"))
        if target == self.dn:
            target = head.get("dev_id", self.dn)
        if target != self.dn:
            return ("bad", "addressed to %s, not this pile" % target, cmd, sid)
        if not isinstance(sid, int) or isinstance(sid, bool):
            return ("bad", "head.session_id missing", cmd, None)
        body = msg.get("body")
        why = check(SERVICES[cmd], body)
        if why:
            return ("bad", why, cmd, sid)
        return ("service", cmd, sid, body)


def check(schema, body):
    """Reason the body does not fit the schema, or None."""
    if not isinstance(body, dict):
        return "body is not an object"
    for field, (kind, required, low, high) in schema.items():
        if field not in body:
            if required:
                return "body.%s missing" % field
            continue
        value = body[field]
        if kind == INT:
            if not isinstance(value, int) or isinstance(value, bool):
                return "body.%s must be an integer" % field
            size = value
        else:
            if not isinstance(value, str):
                return "body.%s must be a string" % field
            size = len(value)
        if not low <= size <= high:
            return "body.%s out of range" % field
    return None
