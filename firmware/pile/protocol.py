"""The jsIOT wire (PROTOCOL.md): topics, envelopes, every body the pile sends and the
strict decoding of every message the platform sends (the JSON itself: pile.strictjson).

The one module that knows wire names and wire units.  The rest of the firmware hands it
internal values and gets internal values back:

    voltage mV, current mA, power mW, energy mWh, temperature 0.1 degC, money 0.0001
    yuan, wall clock Unix-epoch ms, durations ms; work_status, charge_mode, start_result,
    stop and fault codes are the protocol's own numbers (PROTOCOL.md section 4).

Uplink: every builder (firmware, version, status, faults, start_result, stop_result,
order, reply) encodes one whole message into the preallocated buffer ``buf`` (no fresh
message-sized string per message: those fragment a small heap) and returns
``(session_id, topic, payload)``; the payload is a memoryview of ``buf``, valid until the
next builder runs (Link.publish copies it at once).  head.timestamp is the wall clock
once it is trusted, 0 before (docs/decisions.md: only the announcements and service
replies go out before; everything else waits for the clock).

Downlink: decode(topic, payload) returns one of
    ("service", cmd, session_id, args, ts)   a valid service for this pile, args internal:
                 START (gun, pre_trade_no, charge_mode, limit), STOP (gun, pre_trade_no,
                 stop_reason), FEE a compact fee model (pile.fees) not yet vetted
    ("ack", cmd, session_id, ok, ts)     an acknowledgement of one of our events
    ("drop", why)                        our own reply echoed back: ignore silently
    ("bad", why, cmd, session_id, args)  malformed: log, maybe answer 11, change nothing;
                                         args: what identifies the request (for the
                                         reply), as far as it can be read, else None
ts is head.timestamp (Unix ms) when it is a plausible integer, else None.  Anything that
is not RFC 8259 JSON is "bad" before MicroPython's lenient json.loads sees it.
"""
import json
import random

from micropython import const

from pile import fees, log, store
from pile.strictjson import strict

SUCCESS, FAILURE = 10, 11
START, STOP, FEE = "startChargeSrv", "stopChargeSrv", "feeModelUpdateSrv"
_BUF = const(1024)          # the longest message (orderUpdateEvt) is about 750 bytes
_SEQ_FILE = const("seq.json")
_SEQ_STEP = const(1000)

# Body fields of each service, one "name kind lo hi" per comma: kind i an integer lo..hi,
# s a string of lo..hi characters, l a list of lo..hi integers (each 0..2**30, or the
# row's 5th and 6th numbers), t a list of lo..hi "HHMM" strings; upper case: optional.
# One text per service: split when a message arrives, so no table of tuples stays
# in the heap.
_FIELDS = {
    START: "gun_no i 1 8,pre_trade_no s 1 64,charge_mode i 10 15,limit_data I 0 1073741824,"
           "start_type I 0 99,start_mode I 0 99,insert_gun_time I 0 4294967295,"
           "dev_id S 1 64",
    STOP: "gun_no i 1 8,pre_trade_no s 1 64,stop_reason i 10 99,dev_id S 1 64",
    FEE: "ele_model_id s 1 64,time_num i 1 14,time_seg t 1 14,seg_flag l 1 14 10 13,"
         "charge_fee l 4 4,serviceFee l 4 4,dev_id S 1 64",
}
# limit_data (0.01 yuan, 0.1 kWh, min, 0.1 kW by charge_mode 11, 12, 14, 15) to the
# session's units: 0.0001 yuan, Wh (the reported total_elect), ms, W
_LIMIT_UNIT = {11: 100, 12: 100, 14: 60000, 15: 100}
# the body of each message the pile sends, its wire names in order (the values: below)
_FIRMWARE = ("dev_sn ele_model_id bt_mac im_mac sim_no in_meter out_meter dev_type "
             "stake_model vendor_code port_num mea_type ct grid_type latitude longitude "
             "height ot_rate ot_cur ot_max_vol ot_min_vol")
_VERSION = "dev_reg_method pile_hardware_ver pile_software_ver sdk_ver"
_STATUS = ("gun_no pre_trade_no trade_no work_status con_status e_lock_status "
           "out_relay_status pwm_duty_radio ac_vol_a ac_cur_a real_power gun_temp chg_time "
           "total_elect sharp_elect peak_elect flat_elect valley_elect total_cost "
           "total_power_cost total_serv_cost")
_FAULTS = "gun_no fault_su warn_sum fault_value warnValue"
_START_RES = "gun_no pre_trade_no start_result fault_code"
_STOP_RES = "gun_no pre_trade_no stop_result stop_fail_reson result_code"
_ORDER = ("gun_no pre_trade_no charge_start_time charge_endTime ele_model_id time_div_type "
          "sum_start sum_end start_soc end_soc sharp_elect sharp_power_cost sharp_serv_cost "
          "peak_elect peak_power_cost peak_serv_cost flat_elect flat_power_cost "
          "flat_serv_cost valley_elect valley_power_cost valley_serv_cost total_elect "
          "total_power_cost total_serv_cost reason")


class Protocol:
    def __init__(self, cfg, board_cfg, clock, trusted):
        self.cfg = cfg
        self.board_cfg = board_cfg
        self.clock = clock          # the wall clock, Unix ms ...
        self.trusted = trusted      # ... and whether it is known (head.timestamp 0 if not)
        self.dn = cfg["dev_id"]
        self.buf = bytearray(_BUF)
        self.n = 0
        self.cmd = None             # the cmd of the last message made (for the log)
        self.seq = self._seq_base()

    # --- event ids ------------------------------------------------------------------------
    def _seq_base(self):
        """Event ids keep increasing across reboots: reserved in blocks of SEQ_STEP in
        seq.json (and, by the journal, in journal.json: reserve()).  With every copy lost
        the ids start from a random block below 2**30 (a new pile too): an acknowledgement
        still on its way from before cannot match a new event but by a chance of the
        earlier ids' count in 2**30."""
        base = store.load(_SEQ_FILE, {}, _seq_ok).get("next")
        if base is None:
            base = (random.getrandbits(20) + 1) * _SEQ_STEP
            log.warn("wire", "no event ids on flash: from %d on" % base)
        store.save(_SEQ_FILE, {"next": base + _SEQ_STEP})
        return base

    def reserve(self, at_least):
        """Never below at_least (the journal's copy of the next free id)."""
        if at_least > self.seq:
            self.seq = at_least
            store.save(_SEQ_FILE, {"next": at_least + _SEQ_STEP})

    # --- encoding -------------------------------------------------------------------------
    def _put(self, text):
        """Append str or bytes to the message (a str as its UTF-8 bytes, no copy)."""
        m = memoryview(text)
        end = self.n + len(m)
        if end > _BUF:
            raise ValueError("message over %d bytes" % _BUF)
        self.buf[self.n:end] = m
        self.n = end

    def _value(self, x):
        if type(x) is str:
            self._put(json.dumps(x))        # quotes and escapes
        elif type(x) is list:
            self._put("[")
            for k in range(len(x)):
                if k:
                    self._put(",")
                self._value(x[k])
            self._put("]")
        else:
            self._put("%d" % x)

    def _encode(self, cmd, names, values, status=0, reply_to=None, item_id=None):
        """(session_id, topic, payload) of the message: the head, then the body: the wire
        names in `names` (one text, space-separated: a long text is one heap object,
        where each name would be an interned name of its own) with `values`, in order."""
        if reply_to is None:
            self.seq += 1
            sid, kind = self.seq, "topic_event"
            if sid % _SEQ_STEP == 0:
                store.save(_SEQ_FILE, {"next": sid + _SEQ_STEP})
        else:
            sid, kind = reply_to, "topic_reply"
        self.n, self.cmd = 0, cmd
        put = self._put
        put('{"head":{"cmd":"')
        put(cmd)
        put('Reply","dev_id":' if reply_to is not None else '","dev_id":')
        self._value(self.dn)
        if reply_to is None:
            put(',"seq_id":%d' % sid)
        put(',"session_id":%d,"status":%d,"timestamp":%d,"ttl":-1,"version":0}'
            % (sid, status, self.clock() if self.trusted() else 0))
        if item_id:
            put(',"item_id":"%s"' % item_id)
        put(',"body":{"')
        m, i = memoryview(names), 0
        for k in range(len(values)):
            j = names.find(" ", i)
            j = len(names) if j < 0 else j
            put(m[i:j])
            put('":')
            self._value(values[k])
            put(',"' if k + 1 < len(values) else "}}")
            i = j + 1
        topic = self.cfg[kind].format(pk=self.cfg["product_type"], dn=self.dn, cmd=cmd)
        return sid, topic, memoryview(self.buf)[:self.n]

    # --- what the pile sends ----------------------------------------------------------------
    def firmware(self, model_id, mac):
        """firmwareEvt: the board file's identity and ratings (firmwareEvt's own names and
        units, boards/*/board.json), the fee model in force and the network MAC."""
        i, r = self.board_cfg["identity"], self.board_cfg["ratings"]
        return self._encode("firmwareEvt", _FIRMWARE, (
            self.dn, model_id, " ", mac, "", [], [], i["dev_type"], i["stake_model"],
            i["vendor_code"], i["port_num"], i["mea_type"], i["ct"], i["grid_type"],
            i["latitude"], i["longitude"], i["height"], r["ot_rate"], r["ot_cur"],
            r["ot_max_vol"], r["ot_min_vol"]))

    def version(self, sw_ver):
        i = self.board_cfg["identity"]
        return self._encode("verInfoEvt", _VERSION, (
            i["dev_reg_method"], i["hardware_ver"], sw_ver, self.cfg["sdk_ver"]))

    def status(self, g):
        """acGunRunIty from the gun's status list g (pile.reports._gun_status: work_status,
        plugged, locked, relay closed, duty %, mV, mA, mW, 0.1 degC or None, trade,
        charged ms, energy per band in mWh, the model or None).  Nothing negative goes
        out: a field that cannot be negative is clamped at 0."""
        ws, plugged, locked, closed, duty, mv, ma, mw, temp, trade, chg_ms, e, model = g
        t = 500 if temp is None else max(0, temp + 500)     # 0.1 degC, +50 degC offset
        p, s = (model["power"], model["service"]) if model else (None, None)
        p, s = fees.money(e, p), fees.money(e, s)
        return self._encode("acGunRunIty", _STATUS, (
            1, trade or "", " ", ws, 10 if plugged else 11, 11 if locked else 10,
            11 if closed else 10, duty if 0 < duty < 100 else 0, max(0, mv // 100),
            max(0, ma // 100), max(0, mw // 100000), t, chg_ms // 60000, fees.wh(e),
            e[0] // 1000, e[1] // 1000, e[2] // 1000, e[3] // 1000, p + s, p, s))

    def faults(self, codes, warns, item_id):
        """totalFaultEvt: active fault and warning codes, in 30 and 10 slots."""
        return self._encode("totalFaultEvt", _FAULTS, (
            1, len(codes), len(warns), (codes + [0] * 30)[:30], (warns + [0] * 10)[:10]),
            status=1, item_id=item_id)

    def start_result(self, trade, result, fault):
        return self._encode("startChaResEvt", _START_RES, (1, trade, result, fault))

    def stop_result(self, trade, result, fail, code):
        return self._encode("stopChaResEvt", _STOP_RES, (1, trade, result, fail, code))

    def order(self, trade, start_ms, end_ms, model_id, power, service, sum_start, e, code):
        """orderUpdateEvt of a session: times in Unix ms, the model it was billed with (its
        id and 4 power and 4 service prices), the meter register at its start and the
        energy per band in mWh, its stop code."""
        v = [1, trade, str(start_ms // 1000), str(end_ms // 1000), model_id, 10,
             str(sum_start // 1000), str((sum_start + sum(e)) // 1000), 0, 0]
        for b in range(4):
            v += (e[b] // 1000, fees.cost(e[b], power[b]), fees.cost(e[b], service[b]))
        v += (fees.wh(e), fees.money(e, power), fees.money(e, service), code)
        return self._encode("orderUpdateEvt", _ORDER, v)

    def wire_order(self, values):
        """orderUpdateEvt of an order journaled by firmware 0100000001: its body's values,
        in the same field order as order() writes."""
        return self._encode("orderUpdateEvt", _ORDER, values)

    def reply(self, cmd, sid, result, args, why):
        """The reply to service `cmd` request `sid`, naming what it was about (args as
        decode gave them, or None) and, on failure, why."""
        names, v = "result", [result]
        if cmd == FEE and args:
            names, v = "result ele_model_id", [result, args["id"]]
        elif args:
            names, v = "result gun_no pre_trade_no", [result, args[0], args[1]]
        if why:
            names, v = names + " reason", v + [why[:160]]   # a reply always fits the buffer
        return self._encode(cmd, names, v, reply_to=sid)

    # --- decoding ---------------------------------------------------------------------------
    def decode(self, topic, payload):
        if topic.endswith("_reply") and not topic.endswith("/post_reply"):
            return ("drop", "own reply")
        why = strict(payload)
        if why:
            return ("bad", "not JSON: " + why, None, None, None)
        try:
            msg = json.loads(payload)
        except (ValueError, UnicodeError):
            return ("bad", "not JSON: not UTF-8", None, None, None)
        head = msg.get("head") if type(msg) is dict else None
        if type(head) is not dict:
            return ("bad", "no head object", None, None, None)
        ts = head.get("timestamp")
        if type(ts) is not int or ts < 1500000000000:
            ts = None
        cmd, sid, body = head.get("cmd"), head.get("session_id"), msg.get("body")
        if type(sid) is not int:
            sid = None
            sid_why = "head.session_id %s" % ("missing" if "session_id" not in head else
                                               "must be an integer")
        if type(cmd) is not str:
            return ("bad", "head.cmd missing or not a string", None, sid, None)
        if topic.endswith("/post_reply"):       # an acknowledgement of one of our events
            if sid is None or not cmd.endswith("Reply"):
                return ("bad", "acknowledgement without session_id or Reply cmd", cmd, sid,
                        None)
            ok = type(body) is dict and body.get("result") == SUCCESS
            return ("ack", cmd[:-5], sid, ok, ts)
        if cmd.endswith("Reply"):
            return ("drop", "reply on a service topic")
        why = None
        if cmd not in _FIELDS:
            why = "unknown cmd " + cmd[:40]
        elif not topic.endswith("/" + cmd):
            why = "cmd %s on topic %s" % (cmd, topic[-60:])
        if type(body) is not dict:
            body = {}
            why = why or "body is not an object"
        if "control_equip_id" not in msg and "dev_id" not in head:
            why = why or "addressed to nobody, not this pile"
        for who in (msg.get("control_equip_id", self.dn), head.get("dev_id", self.dn),
                    body.get("dev_id", self.dn)):
            if who != self.dn:
                why = why or "addressed to %s, not this pile" % str(who)[:40]
        if sid is None:
            why = why or sid_why
        why = why or _check(body, _FIELDS[cmd])
        if why:
            return ("bad", why, cmd, sid, _ids(cmd, body))
        return ("service", cmd, sid, _args(cmd, body), ts)


def _seq_ok(doc):
    n = doc.get("next")
    return None if type(n) is int and 0 <= n < 1 << 40 else "not an event id"


def _show(x):
    """repr of a value for a reason text, cut short (it comes from the network)."""
    r = repr(x)
    return r if len(r) <= 24 else r[:21] + "..."


def _check(body, rows):
    """None when body has every field of `rows` (see _FIELDS) right, else the reason."""
    for row in rows.split(","):
        row = row.split()
        name, kind, lo, hi = row[0], row[1], int(row[2]), int(row[3])
        if name not in body:
            if kind.islower():
                return "body.%s missing" % name
            continue
        x, kind = body[name], kind.lower()
        if kind == "i" or kind == "s":
            t = int if kind == "i" else str
            if type(x) is not t:
                return "body.%s must be %s" % (name, "an integer" if kind == "i" else
                                                "a string")
            if not lo <= (x if kind == "i" else len(x)) <= hi:
                return "body.%s out of range" % name
            continue
        if type(x) is not list or not lo <= len(x) <= hi:
            return "body.%s must be a list of %d..%d items" % (name, lo, hi)
        ilo, ihi = (int(row[4]), int(row[5])) if len(row) > 4 else (0, 1 << 30)
        for k in range(len(x)):
            y = x[k]
            if kind == "t":
                ok = type(y) is str and _minute(y) >= 0
            else:
                ok = type(y) is int and ilo <= y <= ihi
            if not ok:
                return "body.%s[%d] %s is not %s" % (
                    name, k, _show(y), "a valid HHMM time" if kind == "t"
                    else "an integer %d..%d" % (ilo, ihi))
    if "time_seg" in rows:                                  # feeModelUpdateSrv
        segs = body["time_seg"]
        if not body["time_num"] == len(segs) == len(body["seg_flag"]):
            return "body.time_seg and seg_flag must both have time_num items"
        for k in range(1, len(segs)):
            if _minute(segs[k]) <= _minute(segs[k - 1]):
                return "body.time_seg[%d] %s is not after time_seg[%d]" % (
                    k, _show(segs[k]), k - 1)
    return None


def _ids(cmd, body):
    """What identifies a request that was refused, as far as its body says (reply)."""
    if cmd == FEE:
        x = body.get("ele_model_id")
        return {"id": x} if type(x) is str and 0 < len(x) <= 64 else None
    gun, trade = body.get("gun_no"), body.get("pre_trade_no")
    return (gun, trade) if type(gun) is int and 1 <= gun <= 8 and type(trade) is str and \
        0 < len(trade) <= 64 else None


def _minute(hhmm):
    """Minute of the day of an "HHMM" text, -1 when it is not one."""
    if len(hhmm) != 4 or not hhmm.isdigit():
        return -1
    h, m = int(hhmm[:2]), int(hhmm[2:])
    return h * 60 + m if h < 24 and m < 60 else -1


def _args(cmd, body):
    """The service's arguments in the firmware's own terms (see the module's text)."""
    if cmd == FEE:
        return {"id": body["ele_model_id"], "starts": [_minute(s) for s in body["time_seg"]],
                "bands": [f - 10 for f in body["seg_flag"]],
                "power": body["charge_fee"], "service": body["serviceFee"]}
    if cmd == STOP:
        return (body["gun_no"], body["pre_trade_no"], body["stop_reason"])
    mode = body["charge_mode"]
    return (body["gun_no"], body["pre_trade_no"], mode,
            body.get("limit_data", 0) * _LIMIT_UNIT.get(mode, 0))
