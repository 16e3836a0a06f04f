"""One-key cloud link (PROTOCOL.md §1), the heavy part: the signed request, the HTTP GET
and the parsing of the answer.

Provisioning runs rarely (first boot, credentials refused), so pile/provision.py imports
this module only then and drops it from memory afterwards.  The secret key and the MQTT
password are never logged.
"""
import asyncio
import json
import random
from binascii import hexlify
from hashlib import md5

from pile import log, net, store
from pile.provision import FILE

SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"


class ProvisionError(Exception):
    pass


def md5_hex(text):
    return hexlify(md5(text.encode()).digest()).decode().upper()


def sign(params, secret):
    """The seed's signature over every parameter but sign."""
    text = "&".join("%s=%s" % (k, params[k]) for k in sorted(params) if k != "sign")
    return md5_hex("%s&key=%s&%s" % (text, secret, md5_hex(secret)))


def quote(value):
    return "".join(c if c in SAFE else "".join("%%%02X" % b for b in c.encode())
                   for c in value)


def request_url(cfg):
    params = {"app_id": cfg["app_id"], "cpu_id": cfg["cpu_id"],
              "product_type": cfg["product_type"], "sign_type": "MD5"}
    params["sign"] = sign(params, cfg["secret_key"])
    query = "&".join("%s=%s" % (k, quote(params[k])) for k in sorted(params))
    return cfg["provision_url"] + "?" + query


async def http_get(url, timeout_ms, limit=4096):
    """GET url; return (status, body bytes).  Raises NetError on any failure."""
    scheme, host, port, path = net.split_url(url)
    reader, writer = await net.connect(host, port, timeout_ms, scheme == "https")
    try:
        req = "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path or "/", host)
        writer.write(req.encode())
        await asyncio.wait_for_ms(writer.drain(), timeout_ms)
        data = b""
        while len(data) <= limit:
            chunk = await asyncio.wait_for_ms(reader.read(512), timeout_ms)
            if not chunk:
                break
            data += chunk
    except asyncio.TimeoutError:
        raise net.NetError("HTTP timeout from %s:%d" % (host, port))
    except OSError as e:
        raise net.NetError("HTTP error from %s:%d: %s" % (host, port, e))
    finally:
        await net.close(writer)
    if len(data) > limit:
        raise net.NetError("HTTP answer over %d bytes" % limit)
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)
    if len(status) < 2 or not status[1].isdigit():
        raise net.NetError("not an HTTP answer")
    return int(status[1]), body


def parse(status, body):
    """Credentials from an HTTP answer, or ProvisionError with the reason."""
    if status != 200:
        raise ProvisionError("HTTP %d" % status)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeError):
        raise ProvisionError("answer is not JSON")
    if not isinstance(doc, dict):
        raise ProvisionError("answer is not an object")
    if doc.get("result_code") != "JCLOUD0001":
        raise ProvisionError("refused: %s %s" % (doc.get("result_code"), doc.get("message")))
    plats = doc.get("platform_params")
    if not isinstance(plats, list):
        raise ProvisionError("platform_params is not a list")
    for plat in plats:
        if isinstance(plat, dict) and plat.get("plat_type") == "jsIOT":
            return creds(plat.get("params"))
    raise ProvisionError("no jsIOT entry in platform_params")


def creds(params):
    """The four credentials out of jsIOT params (or a stored copy), or ProvisionError."""
    if not isinstance(params, dict):
        raise ProvisionError("jsIOT params missing")
    out = {}
    for key in ("mqtt_account", "mqtt_password", "mqtt_id", "mqtt_server_addr"):
        if not isinstance(params.get(key), str) or not params[key]:
            raise ProvisionError("jsIOT params.%s missing" % key)
        out[key] = params[key]
    try:
        scheme = net.split_url(out["mqtt_server_addr"])[0]
    except net.NetError as e:
        raise ProvisionError(str(e))
    if scheme not in ("tcp", "mqtt", "ssl", "mqtts"):
        raise ProvisionError("mqtt_server_addr scheme %s unsupported" % scheme)
    return out


async def provision(prov):
    """Request credentials until it works, store and return them.  Every failure is
    logged, kept in prov.last_error and retried with back-off and jitter."""
    cfg = prov.cfg
    delay = cfg["backoff_min_ms"]
    while True:
        prov.attempts += 1
        log.info("prov", "requesting credentials for %s from %s"
                 % (cfg["cpu_id"], cfg["provision_url"]))
        try:
            status, body = await http_get(request_url(cfg), cfg["provision_timeout_ms"])
            got = parse(status, body)
            store.save(FILE, got)
            prov.last_error = None
            log.info("prov", "provisioned: account %s at %s"
                     % (got["mqtt_account"], got["mqtt_server_addr"]))
            return got
        except Exception as e:  # any failure: keep the reason, wait, try again
            prov.last_error = str(e) or repr(e)
            wait = delay + random.getrandbits(10) * delay // 2048
            log.warn("prov", "failed: %s; retry in %d ms" % (prov.last_error, wait))
            await asyncio.sleep_ms(wait)
            delay = min(delay * 2, cfg["backoff_max_ms"])
