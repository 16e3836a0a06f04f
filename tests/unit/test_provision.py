"""Provisioning, the pure parts (PROTOCOL.md §1): signature, answer parsing, URLs (all in
pile/onekey.py, which pile/provision.py loads on demand), and the retry loop with the
network stubbed out.  Runs inside MicroPython."""
import asyncio
import json
import os
from binascii import hexlify
from hashlib import md5

from pile import log, net, onekey, provision, store
from pile.onekey import ProvisionError, parse, sign

KEY = "bc0e921e1132c98628197baea2edd65d)"      # the seed's key, stray ")" included
PARAMS = {"app_id": "hci", "cpu_id": "HCS220922001000", "product_type": "HCI-EVA7",
          "sign_type": "MD5"}
GOOD = {"mqtt_account": "HCS220922001000", "mqtt_server_addr": "tcp://testmq.jslife.com.cn:1883",
        "mqtt_id": "HCS220922001000", "mqtt_password": "5ac4cdb0fa09288bd58c06308c64043b"}


def _md5(text):
    return hexlify(md5(text.encode()).digest()).decode().upper()


def _answer(params=None, code="JCLOUD0001", plats=None):
    if plats is None:
        plats = [{"plat_type": "jsIOT", "params": dict(GOOD) if params is None else params}]
    return json.dumps({"result_code": code, "message": "ok",
                       "common_params": {"project_no": "p300627001"},
                       "platform_params": plats})


def _refused(body, status=200, why=None):
    try:
        parse(status, body)
    except ProvisionError as e:
        if why is not None:
            assert why in str(e), "%r lacks %r" % (str(e), why)
        return str(e)
    raise AssertionError("accepted %r" % (body,))


# --- signature ------------------------------------------------------------------------

def test_md5_of_the_seed_key():
    assert onekey.md5_hex(KEY) == "8AACB50F5AC43A0C49F75180E7A26C5E"


def test_sign_known_vector():
    # written out by hand: sorted params, &key=<secretKey>&<MD5(secretKey)>
    text = ("app_id=hci&cpu_id=HCS220922001000&product_type=HCI-EVA7&sign_type=MD5"
            "&key=bc0e921e1132c98628197baea2edd65d)&8AACB50F5AC43A0C49F75180E7A26C5E")
    assert sign(PARAMS, KEY) == _md5(text)
    # the same value from CPython's hashlib and tools/platform_sim.make_sign
    assert sign(PARAMS, KEY) == "AB0A7CBDCB2AB986696957B8D6EA13B7"


def test_sign_ignores_sign_and_order():
    shuffled = {"sign_type": "MD5", "sign": "6A374609174AFE42FA507276CAACE96F",
                "product_type": "HCI-EVA7", "cpu_id": "HCS220922001000", "app_id": "hci"}
    assert sign(shuffled, KEY) == sign(PARAMS, KEY)


def test_sign_other_key_and_values_unquoted():
    # signed over raw values (not URL-encoded), upper-case hex
    text = "a=1&b=x y&key=secret&" + _md5("secret")
    assert sign({"b": "x y", "a": "1"}, "secret") == _md5(text)
    assert _md5(text) == "290EDAF0C82E67326842CD8A7DFC6D52"
    assert sign(PARAMS, KEY + "x") != sign(PARAMS, KEY)


def test_request_url():
    cfg = dict(PARAMS, secret_key=KEY, provision_url="http://h:8779/publicCloud/oneKeyLink/v1")
    url = onekey.request_url(cfg)
    assert url == ("http://h:8779/publicCloud/oneKeyLink/v1?app_id=hci&cpu_id=HCS220922001000"
                   "&product_type=HCI-EVA7&sign=AB0A7CBDCB2AB986696957B8D6EA13B7&sign_type=MD5")
    assert KEY not in url and "bc0e921e" not in url


def test_request_url_quotes():
    cfg = dict(PARAMS, cpu_id="A B&c=d", secret_key="k", provision_url="http://h/p")
    url = onekey.request_url(cfg)
    assert "cpu_id=A%20B%26c%3Dd&" in url
    assert onekey.quote("a-b_c.d~E9") == "a-b_c.d~E9"
    assert onekey.quote("é") == "%C3%A9"


# --- parse: the good answers -------------------------------------------------------------

def test_parse_seed_answer():
    assert parse(200, _answer()) == GOOD
    assert parse(200, _answer().encode()) == GOOD


def test_parse_picks_the_jsiot_entry():
    plats = [{"plat_type": "other", "params": {}}, "junk",
             {"plat_type": "jsIOT", "params": dict(GOOD, extra=1)}]
    assert parse(200, _answer(plats=plats)) == GOOD


def test_parse_accepts_tls_and_default_port():
    for addr in ("ssl://h:8883", "mqtts://h", "mqtt://h", "tcp://10.0.0.1"):
        assert parse(200, _answer(dict(GOOD, mqtt_server_addr=addr)))["mqtt_server_addr"] == addr


# --- parse: every bad shape ------------------------------------------------------------

def test_parse_http_status():
    _refused(_answer(), 500, "HTTP 500")
    _refused(_answer(), 404, "HTTP 404")
    _refused(b"", 302, "HTTP 302")


def test_parse_not_json():
    _refused(b'{"result_code": "JCLOUD0001", "message": ', why="not JSON")   # platform's badjson
    _refused(b"", why="not JSON")
    _refused(b"<html>500</html>", why="not JSON")
    _refused(b'"\xff\xfe"', why="not JSON")


def test_parse_not_an_object():
    for body in ("[]", "1", '"JCLOUD0001"', "null", "true"):
        _refused(body, why="not an object")


def test_parse_result_code():
    why = _refused(json.dumps({"result_code": "JCLOUD0500", "message": "simulated failure"}))
    assert "JCLOUD0500" in why and "simulated failure" in why
    _refused(json.dumps({"result_code": "JCLOUD0002", "message": "signature mismatch"}),
             why="signature mismatch")
    _refused(json.dumps({"message": "no code"}), why="refused")
    _refused(_answer(code="jcloud0001"), why="refused")
    _refused(_answer(code=1), why="refused")


def test_parse_platform_params():
    for plats in (None, 5, "jsIOT", {"plat_type": "jsIOT", "params": GOOD}, True):
        _refused(json.dumps({"result_code": "JCLOUD0001", "platform_params": plats}),
                 why="platform_params")
    _refused(json.dumps({"result_code": "JCLOUD0001"}), why="platform_params")
    for plats in ([], [1, "x", None], [{"plat_type": "jsiot", "params": GOOD}],
                  [{"params": GOOD}]):
        _refused(_answer(plats=plats), why="no jsIOT entry")


def test_parse_params():
    for params in (None, [], "x", 5):
        _refused(_answer(plats=[{"plat_type": "jsIOT", "params": params}]),
                 why="params missing")
    _refused(_answer(plats=[{"plat_type": "jsIOT"}]), why="params missing")
    for key in GOOD:
        bad = dict(GOOD)
        del bad[key]
        _refused(_answer(bad), why="params.%s missing" % key)
        for value in ("", 1, None, ["x"], {"a": 1}):
            _refused(_answer(dict(GOOD, **{key: value})), why="params.%s missing" % key)


def test_parse_server_addr():
    for addr in ("testmq.jslife.com.cn:1883", "http://h:80", "https://h", "tcp://:1883",
                 "tcp://h:port", "ws://h:80", "tcp:/h:1883"):
        _refused(_answer(dict(GOOD, mqtt_server_addr=addr)))


# --- split_url -------------------------------------------------------------------------

def test_split_url():
    s = net.split_url
    assert s("http://218.17.23.106:8779/publicCloud/oneKeyLink/v1?a=1&b=2") == \
        ("http", "218.17.23.106", 8779, "/publicCloud/oneKeyLink/v1?a=1&b=2")
    assert s("tcp://testmq.jslife.com.cn:1883") == ("tcp", "testmq.jslife.com.cn", 1883, "")
    assert s("http://h") == ("http", "h", 80, "")
    assert s("http://h/") == ("http", "h", 80, "/")
    assert s("https://h/x") == ("https", "h", 443, "/x")
    assert s("mqtt://h") == ("mqtt", "h", 1883, "")
    assert s("ssl://h") == ("ssl", "h", 8883, "")
    assert s("mqtts://h:9") == ("mqtts", "h", 9, "")


def test_split_url_bad():
    for url in ("", "h:80", "://h", "http://", "http://:80/x", "ftp://h", "http://h:8o/",
                "http://h:-1/", "HTTP://h"):
        try:
            net.split_url(url)
        except net.NetError:
            continue
        raise AssertionError("accepted %r" % url)


def test_resolve_ip_literal_and_name():
    assert asyncio.run(net.resolve("10.1.2.3", 80)) == "10.1.2.3"
    assert asyncio.run(net.resolve("localhost", 80)) == "127.0.0.1"


# --- the Provisioner with the network stubbed -------------------------------------------

def _tmpdir(name):
    path = "/tmp/pile-unit-%s-%d" % (name, os.getpid() if hasattr(os, "getpid") else 0)
    try:
        os.mkdir(path)
    except OSError:
        pass
    for f in os.listdir(path):
        os.remove(path + "/" + f)
    return path


class _Clock:
    """The board as the Provisioner sees it: a wall clock, trusted or not."""

    def __init__(self, trusted=True):
        self.trusted, self.set_to = trusted, None

    def time_trusted(self):
        return self.trusted

    def set_time_ms(self, ms):
        self.set_to, self.trusted = ms, True


def _cfg():
    return dict(PARAMS, secret_key=KEY, provision_url="http://127.0.0.1:9/x",
                backoff_min_ms=5, backoff_max_ms=20, provision_timeout_ms=100)


def test_provisioner_retries_every_failure_then_stores():
    store.root = _tmpdir("prov")
    log.echo = False
    answers = [net.NetError("connect to 127.0.0.1:9 failed: [Errno 111]"),
               (500, b"simulated internal error"), (200, b'{"result_code": '),
               (200, b'{"result_code": "JCLOUD0500", "message": "simulated platform failure"}'),
               (200, b'{"result_code": "JCLOUD0001", "platform_params": 7}'),
               OSError(28), (200, _answer().encode())]
    urls = []

    async def fake_get(url, timeout_ms, limit=2048):
        urls.append(url)
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        head = b"HTTP/1.0 %d X" % a[0]
        if not answers:     # the good answer carries a Date header (a time source)
            head += b"\r\nDate: Thu, 01 Jan 2026 00:00:07 GMT"
        return a[0], head, a[1]

    # the Provisioner imports pile.onekey only to provision and drops it afterwards: put
    # a module with the network stubbed where that import finds it
    import sys
    from pile import onekey as heavy
    heavy.http_get = fake_get
    board = _Clock(trusted=False)
    p = provision.Provisioner(_cfg(), board)
    assert p.stored is None
    assert asyncio.run(p.creds()) == GOOD
    assert board.set_to == 1767225607000        # the clock set from the answer's Date
    assert "pile.onekey" not in sys.modules     # dropped once provisioned
    assert p.attempts == 7 and not answers and p.last_error is None
    text = "\n".join(log.lines())
    for why in ("Errno 111", "HTTP 500", "not JSON", "JCLOUD0500", "platform_params", "28"):
        assert why in text, why
    assert KEY not in text and GOOD["mqtt_password"] not in text
    waits = [int(line.split("retry in ")[1].split()[0]) for line in log.lines()
             if "retry in" in line]
    assert len(waits) == 6
    assert 5 <= waits[0] <= 8 and 10 <= waits[1] <= 15 and max(waits) <= 30, waits
    assert "sign=AB0A7CBDCB2AB986696957B8D6EA13B7" in urls[0]
    # stored: a fresh Provisioner uses the file without asking
    assert provision.Provisioner(_cfg(), _Clock()).stored == GOOD


def test_provisioner_drops_unusable_stored_creds():
    store.root = _tmpdir("stored")
    log.echo = False
    for bad in ({"mqtt_account": "x"}, [1, 2], "creds",
                dict(GOOD, mqtt_server_addr="http://h:1")):
        store.save(provision.FILE, bad)
        p = provision.Provisioner(_cfg(), _Clock())
        assert p.stored is None, bad
        assert provision.FILE not in os.listdir(store.root)
    store.save(provision.FILE, GOOD)
    assert provision.Provisioner(_cfg(), _Clock()).stored == GOOD


def test_forget():
    store.root = _tmpdir("forget")
    log.echo = False
    store.save(provision.FILE, GOOD)
    p = provision.Provisioner(_cfg(), _Clock())
    p.forget("broker refused the credentials (CONNACK 5)")
    assert p.stored is None and provision.FILE not in os.listdir(store.root)
    assert GOOD["mqtt_password"] not in "\n".join(log.lines())
