"""Billing exactness: the firmware prices thousands of generated sessions exactly as an
independent reference does (PROTOCOL.md section 5).

The reference below is plain CPython integer arithmetic and does not import firmware
code: local time through datetime, the fee model straight from the wire body
(feeModelUpdateSrv), truncating integer money.  The firmware side runs in one MicroPython
process, the path a real message takes: protocol.decode of the feeModelUpdateSrv text and
tariff.vet, Session.add for every energy increment at its wall time (fees.local_minute
and fees.band_at), Session.record and protocol.order (the orderUpdateEvt body) at the
end, protocol.status for acGunRunIty's total_cost.  A session is a list of (epoch_ms, mWh) increments; sessions cross band boundaries,
local midnight, run under several time zones, and some deliver no energy at all.
"""
import datetime
import json
import os
import random
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
MPYPATH = ".frozen:" + os.path.join(ROOT, "firmware")
SESSIONS = 2000

RUNNER = r"""
import json, sys
from pile import config, store
from pile.protocol import Protocol
from pile.session import Session
from pile.tariff import vet
store.save = lambda name, obj: True         # checkpoints, event ids: not measured here

cfg = dict(config.DEFAULTS, dev_id="D")
proto = Protocol(cfg, {}, lambda: 0, lambda: True)
TOPIC = "/sys/HCI-EVA7/D/thing/service/feeModelUpdateSrv"


def body(msg):
    return json.loads(bytes(msg[2]))["body"]


out = open(sys.argv[2], "w")
for line in open(sys.argv[1]):
    x = json.loads(line)
    srv = {"head": {"cmd": "feeModelUpdateSrv", "dev_id": "D", "session_id": 1},
           "body": x["model"]}
    got = proto.decode(TOPIC, json.dumps(srv))
    why = got[1] if got[0] == "bad" else vet(got[3])
    if why:
        out.write(json.dumps({"refused": why}) + "\n")
        continue
    model = got[3]
    s = Session(x["trade"], 10, 0, model, 0)
    s.begin(0, x["start_ms"], x["sum_start"])
    for ms, mwh in x["incs"]:
        s.add(mwh, ms, x["tz"])
    s.advance(x["end_ms"] - x["start_ms"])
    r = s.record(x["reason"], x["end_ms"])
    order = body(proto.order(r[1], r[2], r[3], r[4], r[7], r[8], r[5], r[6], r[9]))
    st = body(proto.status((13, True, True, True, 53, 0, 0, 0, None, x["trade"], 0, s.e,
                            model)))
    order["total_cost"] = st["total_cost"]           # acGunRunIty's
    out.write(json.dumps(order) + "\n")
out.close()
"""

BANDS = ("sharp", "peak", "flat", "valley")
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


# --- the reference -------------------------------------------------------------------------

def ref_band(body, local):
    """Band index (0 sharp .. 3 valley) of the segment in force at a local datetime."""
    minute = local.hour * 60 + local.minute
    starts = [int(t[:2]) * 60 + int(t[2:]) for t in body["time_seg"]]
    seg = len(starts) - 1           # before the first start: the day's last segment
    for i, start in enumerate(starts):
        if start <= minute:
            seg = i
    return body["seg_flag"][seg] - 10


def ref_order(x, seen=None):
    """The orderUpdateEvt body (and acGunRunIty's total_cost) of session x; seen gets the
    (band, local date) of every increment with energy."""
    body = x["model"]
    energy = [0, 0, 0, 0]
    for ms, mwh in x["incs"]:
        if mwh > 0:
            local = EPOCH + datetime.timedelta(milliseconds=ms, minutes=x["tz"])
            band = ref_band(body, local)
            energy[band] += mwh
            if seen is not None:
                seen.add((band, local.date()))
    order = {"gun_no": 1, "pre_trade_no": x["trade"],
             "charge_start_time": str(x["start_ms"] // 1000),
             "charge_endTime": str(x["end_ms"] // 1000),
             "ele_model_id": body["ele_model_id"], "time_div_type": 10,
             "sum_start": str(x["sum_start"] // 1000),
             "sum_end": str((x["sum_start"] + sum(energy)) // 1000),
             "start_soc": 0, "end_soc": 0, "reason": x["reason"]}
    totals = [0, 0, 0]
    for b, name in enumerate(BANDS):
        vals = (energy[b] // 1000,                                  # 0.001 kWh
                energy[b] * body["charge_fee"][b] // 1000000,        # 0.0001 yuan
                energy[b] * body["serviceFee"][b] // 1000000)
        for k, suffix in enumerate(("_elect", "_power_cost", "_serv_cost")):
            order[name + suffix] = vals[k]
            totals[k] += vals[k]
    order["total_elect"], order["total_power_cost"], order["total_serv_cost"] = totals
    order["total_cost"] = totals[1] + totals[2]
    return order


# --- the sessions --------------------------------------------------------------------------

def fee_model(rnd, k):
    n = rnd.randint(1, 14)
    pool = list(range(1440))
    if rnd.random() < 0.3:
        minutes = sorted(set([0, 750] + rnd.sample(pool, n)))[:n]      # 00:00 and 12:30
    else:
        minutes = sorted(rnd.sample(pool, n))
    price = lambda: rnd.choice((0, 1, 9999, 10000, 12345, 50000, 99999, rnd.randint(0, 300000)))
    return {"ele_model_id": "M%d" % k, "time_num": n,
            "time_seg": ["%02d%02d" % divmod(m, 60) for m in minutes],
            "seg_flag": [rnd.randint(10, 13) for _ in range(n)],
            "charge_fee": [price() for _ in range(4)],
            "serviceFee": [price() for _ in range(4)]}


def session(rnd, k):
    body = fee_model(rnd, k)
    tz = rnd.choice((480, 480, 480, 0, -300, 330, 345, 840, -720))
    base = rnd.randint(1577836800, 2051222400) // 86400 * 86400 * 1000     # a UTC midnight
    # start a little before a band boundary, or local midnight, or anywhere
    kind = rnd.random()
    if kind < 0.4:
        seg = rnd.choice(body["time_seg"])
        m = int(seg[:2]) * 60 + int(seg[2:])
    elif kind < 0.7:
        m = 0
    else:
        m = rnd.randint(0, 1439)
    start = base + ((m - tz) % 1440) * 60000 - rnd.randint(0, 1800000) + rnd.randint(0, 999)
    step = rnd.choice((50, 137, 1000, 3000, 30000, 120000))
    count = 0 if rnd.random() < 0.05 else rnd.randint(1, 300)
    power_mw = rnd.choice((0, 1380000, 7360000, rnd.randint(0, 7400000)))
    incs, t = [], start
    for _ in range(count):
        t += rnd.randint(step // 2, step * 3 // 2)
        mwh = power_mw * step // 3600000 + rnd.randint(-2, 2)
        incs.append([t, max(0, mwh) if rnd.random() > 0.03 else 0])
    return {"trade": "P%05d" % k, "model": body, "tz": tz, "start_ms": start,
            "end_ms": t + rnd.randint(0, 5000), "sum_start": rnd.randint(0, 10 ** 10),
            "reason": rnd.choice((1000, 1001, 1002, 1004, 1005, 1009, 3003)), "incs": incs}


def test_firmware_prices_every_session_like_the_reference(tmp_path):
    rnd = random.Random(20240611)
    sessions = [session(rnd, k) for k in range(SESSIONS)]
    src, dst = tmp_path / "sessions.jsonl", tmp_path / "orders.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in sessions))
    res = subprocess.run([MICROPYTHON, "-c", RUNNER, str(src), str(dst)], cwd=ROOT,
                         env=dict(os.environ, MICROPYPATH=MPYPATH), capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    got = [json.loads(line) for line in dst.read_text().splitlines()]
    assert len(got) == SESSIONS

    crossings = midnights = empty = 0
    mismatches = []
    for x, fw in zip(sessions, got):
        seen = set()
        want = ref_order(x, seen)
        if fw != want:
            diff = {k: (fw.get(k), want.get(k)) for k in set(fw) | set(want)
                    if fw.get(k) != want.get(k)}
            mismatches.append("%s: %s" % (x["trade"], diff))
        crossings += len({band for band, day in seen}) > 1
        midnights += len({day for band, day in seen}) > 1
        empty += want["total_elect"] == 0
    assert not mismatches, "%d of %d differ:\n%s" % (len(mismatches), SESSIONS,
                                                     "\n".join(mismatches[:10]))
    # the generated sessions cover what matters
    assert crossings > SESSIONS // 5 and midnights > SESSIONS // 20 and empty > 100, \
        (crossings, midnights, empty)


def test_reference_against_the_seed_order():
    # the seed's record: 21 Wh sharp at 5.0000 yuan/kWh power and service (21.7 Wh inside)
    body = {"ele_model_id": "130882763317428226", "time_num": 1, "time_seg": ["0000"],
            "seg_flag": [10], "charge_fee": [50000, 0, 0, 0], "serviceFee": [50000, 0, 0, 0]}
    x = {"trade": "002609666165302878395110218", "model": body, "tz": 480,
         "start_ms": 1652435604000, "end_ms": 1652435698000, "sum_start": 25947000,
         "reason": 1000, "incs": [[1652435650000, 21700]]}
    o = ref_order(x)
    assert (o["sharp_elect"], o["sharp_power_cost"], o["sharp_serv_cost"]) == (21, 1085, 1085)
    assert (o["sum_start"], o["sum_end"], o["total_elect"]) == ("25947", "25968", 21)
