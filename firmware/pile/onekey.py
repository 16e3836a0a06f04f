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

from micropython import const

from pile import log, net

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


_LIMIT = const(2048)
# the answer's buffer, made with the module: main.py imports this module first, so the
# buffer lies with its code at the bottom of the heap and goes with it (pile.provision),
# not in whatever hole a fragmented heap has left by the time provisioning runs
_BUF = bytearray(_LIMIT + 1)


async def http_get(url, timeout_ms, ca=None, limit=_LIMIT):
    """GET url (https: over TLS checked with the CA file ca, net.ca_file); return (status,
    head bytes, body bytes), the answer read into one buffer of `limit` bytes (allocated
    once per request).  Raises NetError on any failure."""
    scheme, host, port, path = net.split_url(url)
    if scheme == "https" and not ca:
        raise net.NetError("https:// refused: no CA (config key ca_file)")
    reader, writer = await net.connect(host, port, timeout_ms, ca if scheme == "https" else None)
    buf = _BUF if limit == _LIMIT else bytearray(limit + 1)
    n = 0
    try:
        req = "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path or "/", host)
        writer.write(req.encode())          # https: the handshake runs first
        await net.drain(writer, timeout_ms)
        view = memoryview(buf)
        while n <= limit:
            got = await net.recv(reader, view[n:], timeout_ms)
            if got is None:
                raise net.NetError("HTTP timeout from %s:%d" % (host, port))
            if not got:
                break
            n += got
            if whole(buf, n):       # TLS: the end is not always seen (below)
                break
    except ValueError as e:                 # TLS: the server's certificate refused
        from pile import tls
        raise tls.refused(e)
    except OSError as e:
        raise net.NetError("HTTP error from %s:%d: %s" % (host, port, e))
    finally:
        net.close(writer)
    if n > limit:
        raise net.NetError("HTTP answer over %d bytes" % limit)
    head, _, body = bytes(buf[:n]).partition(b"\r\n\r\n")
    status = head.split(b" ", 2)
    if len(status) < 2 or not status[1].isdigit():
        raise net.NetError("not an HTTP answer")
    return int(status[1]), head, body


def whole(buf, n):
    """Whether buf[:n] holds the whole answer by its Content-Length.  Over TLS a
    close_notify read in the same readinto() as the last data is lost (the stream keeps
    reading to fill the buffer and takes the end for a pause), and a server that then
    waits for ours never closes: the length tells the end."""
    head, sep, body = bytes(buf[:n]).partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:] if sep else ():
        if line[:15].lower() == b"content-length:":
            try:
                return len(body) >= int(line[15:].strip())
            except ValueError:
                return False
    return False


_MONTHS = "JanFebMarAprMayJunJulAugSepOctNovDec"


def date_ms(head):
    """Unix ms of the answer's Date header (RFC 9110 IMF-fixdate: "Sun, 06 Nov 1994
    08:49:37 GMT"), or None when it has none that reads."""
    for line in head.split(b"\r\n"):
        if line[:5].lower() != b"date:":
            continue
        try:
            _, d, mon, y, hms, _ = line[5:].decode().split()
            h, mi, sec = hms.split(":")
            m = _MONTHS.index(mon) // 3 + 1
            y, d = int(y), int(d)
            # days since 1970-01-01 of a civil date (the proleptic Gregorian calendar)
            y -= m <= 2
            era = y // 400
            yoe = y - era * 400
            doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
            days = era * 146097 + (yoe * 365 + yoe // 4 - yoe // 100 + doy) - 719468
            return ((days * 24 + int(h)) * 60 + int(mi)) * 60000 + int(sec) * 1000
        except (ValueError, IndexError):
            return None
    return None


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
    """Request credentials until it works; store them (prov.save) and return them.
    Every failure is logged, kept in prov.last_error and retried with back-off and
    jitter."""
    cfg = prov.cfg
    delay = cfg["backoff_min_ms"]
    while True:
        prov.attempts += 1
        log.info("prov", "requesting credentials for %s from %s"
                 % (cfg["cpu_id"], cfg["provision_url"]))
        try:
            url = request_url(cfg)
            ca = net.ca_file(net.split_url(url)[0], cfg, prov.board.time_trusted())
            status, head, body = await http_get(url, cfg["provision_timeout_ms"], ca)
            ms = date_ms(head)
            if ms and not prov.board.time_trusted():     # a time source for a new pile
                prov.board.set_time_ms(ms)
                log.warn("prov", "clock set from the provisioning answer's Date")
            got = parse(status, body)
            prov.save(got)
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
