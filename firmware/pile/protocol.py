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
INT, STR = int, str

# body schemas of the services we accept: field -> (type, required, lowest, highest); for
# a string the bounds are on its length.  dict(name=...): the names are interned qstrs.
SERVICES = dict(
    startChargeSrv=dict(
        gun_no=(INT, True, 1, 8), pre_trade_no=(STR, True, 1, 64),
        charge_mode=(INT, True, 10, 15), limit_data=(INT, False, 0, 1 << 30),
        start_type=(INT, False, 0, 99), start_mode=(INT, False, 0, 99),
        insert_gun_time=(INT, False, 0, 1 << 30),
    ),
    stopChargeSrv=dict(
        gun_no=(INT, True, 1, 8), pre_trade_no=(STR, True, 1, 64),
        stop_reason=(INT, True, 10, 99),
    ),
    feeModelUpdateSrv=dict(ele_model_id=(STR, True, 1, 64)),  # the rest: feemodel.parse
)


class Protocol:
    def __init__(self, cfg, now_ms, seq=1):
        self.cfg = cfg
        self.now_ms = now_ms
        self.dn = cfg["dev_id"]
        self.seq = seq
        self.last_ts = None     # head.timestamp of the last platform message, if sane

    def event(self, cmd, body, status=0, item_id=None, reply_to=None):
        """Return (session_id, topic, payload) of a device event; with reply_to, of the
        reply to service ``cmd`` request reply_to (PROTOCOL.md §2).  The payload is the
        JSON text itself, not a bytes copy of it (Link.publish sends it as UTF-8)."""
        head = {"cmd": cmd, "dev_id": self.dn, "session_id": reply_to, "status": status,
                "timestamp": self.now_ms(), "ttl": -1, "version": 0}
        if reply_to is None:
            self.seq += 1
            head["seq_id"] = head["session_id"] = self.seq
            name = "topic_event"
        else:
            head["cmd"] = cmd + "Reply"
            name = "topic_reply"
        msg = {"head": head, "body": body}
        if item_id:
            msg["item_id"] = item_id
        topic = self.cfg[name].format(pk=self.cfg["product_type"], dn=self.dn, cmd=cmd)
        return head["session_id"], topic, json.dumps(msg)

    def reply(self, cmd, session_id, body):
        """Return (topic, payload) of the reply to service ``cmd`` (PROTOCOL.md §2)."""
        return self.event(cmd, body, reply_to=session_id)[1:]

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
        body = msg.get("body")
        if topic.endswith("/post_reply"):       # an acknowledgement of one of our events
            if not isinstance(sid, int) or not cmd.endswith("Reply"):
                return ("bad", "acknowledgement without session_id or Reply cmd", cmd, sid)
            return ("ack", cmd[:-5], sid, body.get("result") if isinstance(body, dict) else None)
        if cmd.endswith("Reply"):
            return ("drop", "reply on a service topic")
        why = None
        target = msg.get("control_equip_id", head.get("dev_id"))
        if target == self.dn:
            target = head.get("dev_id", self.dn)
        if cmd not in SERVICES:
            why = "unknown cmd " + cmd
        elif not topic.endswith("/" + cmd):
            why = "cmd %s on topic %s" % (cmd, topic)
        elif target != self.dn:
            why = "addressed to %s, not this pile" % target
        elif not isinstance(sid, int) or isinstance(sid, bool):
            return ("bad", "head.session_id missing", cmd, None)
        elif not isinstance(body, dict):
            why = "body is not an object"
        else:
            for field, (kind, required, low, high) in SERVICES[cmd].items():
                if field not in body:
                    if required:
                        why = "body.%s missing" % field
                        break
                    continue
                value = body[field]
                if not isinstance(value, kind) or isinstance(value, bool):
                    why = "body.%s must be %s" % (field, "an integer" if kind is INT
                                                  else "a string")
                    break
                if not low <= (value if kind is INT else len(value)) <= high:
                    why = "body.%s out of range" % field
                    break
        if why:
            return ("bad", why, cmd, sid)
        return ("service", cmd, sid, body)
