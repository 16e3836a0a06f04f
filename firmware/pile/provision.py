"""One-key cloud link (PROTOCOL.md §1): the signed request that yields MQTT credentials.

Provisioner.creds() returns the stored credentials, or provisions (retrying with
back-off and jitter, logging each reason) until it has some; forget() drops them when
the broker refuses them.  The secret key and the MQTT password are never logged.
"""
import asyncio
import json
import random
from binascii import hexlify
from hashlib import md5

from pile import log, net, store

FILE = "creds.json"
OK_CODE = "JCLOUD0001"
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
    if doc.get("result_code") != OK_CODE:
        raise ProvisionError("refused: %s %s" % (doc.get("result_code"), doc.get("message")))
    plats = doc.get("platform_params")
    if not isinstance(plats, list):
        raise ProvisionError("platform_params is not a list")
    for plat in plats:
        if isinstance(plat, dict) and plat.get("plat_type") == "jsIOT":
            return _creds(plat.get("params"))
    raise ProvisionError("no jsIOT entry in platform_params")


def _creds(params):
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


class Provisioner:
    def __init__(self, cfg):
        self.cfg = cfg
        self.last_error = None
        self.attempts = 0
        self.stored = store.load(FILE)
        if self.stored is not None:
            try:
                self.stored = _creds(self.stored)
            except ProvisionError as e:
                self.forget("stored credentials unusable: %s" % e)

    async def creds(self):
        delay = self.cfg["backoff_min_ms"]
        while not self.stored:
            try:
                self.stored = await self.provision_once()
            except Exception as e:  # any failure: keep the reason, wait, try again
                self.last_error = str(e) or repr(e)
                wait = delay + random.getrandbits(10) * delay // 2048
                log.warn("prov", "failed: %s; retry in %d ms" % (self.last_error, wait))
                await asyncio.sleep_ms(wait)
                delay = min(delay * 2, self.cfg["backoff_max_ms"])
        return self.stored

    async def provision_once(self):
        self.attempts += 1
        log.info("prov", "requesting credentials for %s from %s"
                 % (self.cfg["cpu_id"], self.cfg["provision_url"]))
        status, body = await net.http_get(request_url(self.cfg),
                                          self.cfg["provision_timeout_ms"])
        creds = parse(status, body)
        store.save(FILE, creds)
        self.last_error = None
        log.info("prov", "provisioned: account %s at %s"
                 % (creds["mqtt_account"], creds["mqtt_server_addr"]))
        return creds

    def forget(self, why):
        log.warn("prov", "dropping stored credentials: %s" % why)
        self.stored = None
        store.remove(FILE)
