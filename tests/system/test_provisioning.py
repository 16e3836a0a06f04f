"""One-key cloud link against the platform simulator (PROTOCOL.md §1): success, every
failure the platform can show, a refused signature, revoked credentials.

Each failure must leave a clear reason in the console, be retried with back-off, and end
in a provisioned, connected pile once the fault is cleared.  Secrets never reach the console.
"""
import json
import os
import re
import time

import pytest

from conftest import DEV, online
from netem import Proxy
from pile_proc import VENDOR_KEY
from platform_sim import md5_upper

FAST = dict(keepalive_s=3, backoff_min_ms=200, backoff_max_ms=1000, connect_timeout_ms=2000,
            provision_timeout_ms=1000)


def read_creds(pile):
    """The stored credentials: the JSON line of creds.json (pile/store.py adds a CRC line)."""
    with open(os.path.join(pile.dir, "creds.json")) as f:
        for line in f:
            if line.startswith("{"):
                return json.loads(line)
    raise AssertionError("no JSON document in creds.json")


def has_creds(pile):
    return os.path.exists(os.path.join(pile.dir, "creds.json"))


def retry_waits(pile):
    return [int(w) for w in re.findall(r"\[prov\] failed: .*; retry in (\d+) ms", pile.output())]


def assert_backoff(waits, lo=200, hi=1000):
    """Each wait is the delay plus up to 50 % jitter; the delay doubles up to the cap."""
    delay = lo
    for w in waits:
        assert delay <= w <= delay * 3 // 2, (waits, delay)
        delay = min(delay * 2, hi)


def assert_no_secrets(pile, platform):
    out = pile.output()
    assert VENDOR_KEY not in out
    assert VENDOR_KEY.rstrip(")") not in out
    assert md5_upper(VENDOR_KEY) not in out
    for password in platform.passwords.values():
        assert password not in out
    if has_creds(pile):
        assert read_creds(pile)["mqtt_password"] not in out


def test_provisioning_success(platform, make_pile):
    pile = make_pile(**FAST)
    online(platform)
    creds = read_creds(pile)
    assert creds == {"mqtt_account": DEV, "mqtt_id": DEV,
                     "mqtt_password": platform.passwords[DEV],
                     "mqtt_server_addr": platform.mqtt_addr_for_devices}
    assert platform.provision_count[DEV] == 1
    st = pile.status()
    assert st["link"] and st["provision_error"] is None
    pile.wait_output(r"\[prov\] provisioned: account %s" % DEV)
    assert_no_secrets(pile, platform)

    # a restart uses the stored credentials: no second request
    pile.stop()
    mark = platform.mark()
    pile.start()
    online(platform, since=mark)
    assert platform.provision_count[DEV] == 1
    assert read_creds(pile) == creds
    assert_no_secrets(pile, platform)


@pytest.mark.parametrize("fault,why", [
    ("http500", r"HTTP 500"),
    ("badjson", r"answer is not JSON"),
    ("badcode", r"refused: JCLOUD0500 simulated platform failure"),
    ("hang", r"HTTP timeout from 127\.0\.0\.1:\d+"),
], ids=["http500", "badjson", "badcode", "hang"])
def test_platform_fault_then_recovery(platform, make_pile, fault, why):
    platform.provision_fault = fault
    pile = make_pile(**FAST)
    tries = 2 if fault == "hang" else 3
    pile.wait_output(r"\[prov\] failed: %s; retry in \d+ ms" % why, count=tries, timeout=15)
    assert not has_creds(pile)
    assert not platform.messages(DEV)
    st = pile.status()
    assert not st["link"] and re.search(why, st["provision_error"]), st
    assert_backoff(retry_waits(pile))

    mark = platform.mark()
    platform.provision_fault = None
    online(platform, since=mark, timeout=15)
    assert has_creds(pile)
    assert platform.provision_count[DEV] >= tries + 1
    st = pile.status()
    assert st["link"] and st["provision_error"] is None
    assert_no_secrets(pile, platform)


def test_http_server_down_then_up(platform, make_pile):
    """Connection refused (the provisioning port closed), then the server comes back."""
    port = int(platform.http_url.rsplit(":", 1)[1])
    with Proxy("127.0.0.1", port) as proxy:
        proxy.set_mode("down")
        url = "http://127.0.0.1:%d/publicCloud/oneKeyLink/v1" % proxy.port
        pile = make_pile(provision_url=url, **FAST)
        pile.wait_output(r"\[prov\] failed: .*127\.0\.0\.1:%d.*ECONNREFUSED.*; retry in"
                         % proxy.port, count=3, timeout=10)
        assert platform.provision_count[DEV] == 0 and not has_creds(pile)
        assert_backoff(retry_waits(pile))
        proxy.set_mode("pass")
        online(platform, timeout=15)
    assert platform.provision_count[DEV] == 1 and has_creds(pile)
    assert_no_secrets(pile, platform)


def test_bad_signature_is_refused(platform, make_pile):
    wrong = "0123456789abcdef0123456789abcdef"
    pile = make_pile(secret_key=wrong, **FAST)
    pile.wait_output(r"\[prov\] failed: refused: JCLOUD0002 signature mismatch.*; retry in",
                     count=3, timeout=10)
    time.sleep(0.3)
    assert not has_creds(pile)
    assert DEV not in platform.passwords
    assert not platform.messages(DEV)
    st = pile.status()
    assert not st["link"] and "signature mismatch" in st["provision_error"]
    assert_backoff(retry_waits(pile))
    out = pile.output()
    assert wrong not in out and md5_upper(wrong) not in out


def test_revoked_credentials_provision_again(platform, make_pile):
    pile = make_pile(**FAST)
    online(platform)
    old = read_creds(pile)["mqtt_password"]
    assert platform.provision_count[DEV] == 1

    mark = platform.mark()
    assert platform.revoke(DEV)
    fw = platform.wait_for(DEV, "firmwareEvt", since=mark, timeout=15)
    ver = platform.wait_for(DEV, "verInfoEvt", since=mark, timeout=5)
    assert fw["t"] <= ver["t"]
    assert platform.provision_count[DEV] == 2
    new = read_creds(pile)["mqtt_password"]
    assert new != old and new == platform.passwords[DEV]
    pile.wait_output(r"dropping stored credentials: broker refused the credentials \(CONNACK [45]\)")
    st = pile.status()
    assert st["link"] and st["connects"] == 2, st
    out = pile.output()
    assert old not in out and new not in out
    assert_no_secrets(pile, platform)


def test_host_names_are_resolved(broker, platform, make_pile):
    """Provisioning URL and mqtt_server_addr by name, as the seed's are (DNS lookup in a
    thread, net.resolve)."""
    platform.mqtt_addr_for_devices = "tcp://localhost:%d" % broker.port
    url = platform.provision_url.replace("127.0.0.1", "localhost")
    pile = make_pile(provision_url=url, **FAST)
    online(platform)
    assert read_creds(pile)["mqtt_server_addr"] == "tcp://localhost:%d" % broker.port
    pile.wait_output(r"\[link\] connecting to localhost:%d" % broker.port)
    assert pile.status()["link"]
