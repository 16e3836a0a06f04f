"""Write one pile's factory configuration (config.json) for `make deploy CONFIG=...`.

    python tools/factory.py --cpu-id HCS220922001000 \
        --provision-url http://host/publicCloud/oneKeyLink/v1 --wifi-ssid site \
        [--ca-file CA.pem] [--app-id hci] [--product-type HCI-EVA7] [--tz-min 480] \
        [--set key=JSON ...] [--out PATH]

Secrets (the vendor's secret_key, the Wi-Fi password) are asked for with a hidden prompt;
for unattended use take them from the environment (PILE_SECRET_KEY, PILE_WIFI_PASSWORD)
or, less safely (other users see a command line), --secret-key / --wifi-password.  They
are written to the file only and printed masked.  --set overrides any other key of
firmware/pile/config.py DEFAULTS (the value is JSON: --set heartbeat_s=60).

--ca-file names the CA certificate(s) the pile checks TLS servers with (https:// for
provisioning, ssl:// or mqtts:// for the broker; docs/decisions.md "TLS"): PEM (one or
more certificates) or DER.  Each must be a CA certificate that has not expired; they are
written as DER, back to back, beside the configuration (<out without .json>.ca.der), and
the configuration names that file (ca_file), which `make deploy` copies beside
/config.json.  An https:// provision_url needs --ca-file: the pile never provisions over
a TLS connection it cannot check.

The file is written atomically with mode 0600 to build/piles/<cpu_id>.json by default.
It must stay out of the repository: a path inside the repository must be under build/ or
run/ (both git-ignored).
"""
import argparse
import getpass
import json
import os
import re
import ssl
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "firmware"))

from pile.config import DEFAULTS, public  # noqa: E402

SECRETS = (("secret_key", "PILE_SECRET_KEY", "vendor secret key"),
           ("wifi_password", "PILE_WIFI_PASSWORD", "Wi-Fi password"))
IGNORED = ("build", "run")


def check(cfg):
    """Errors of a factory configuration (empty when it is good)."""
    errors = []
    for key, value in cfg.items():
        if key in DEFAULTS and type(value) is not type(DEFAULTS[key]):
            errors.append("%s: expected %s" % (key, type(DEFAULTS[key]).__name__))
    for key in ("app_id", "cpu_id", "product_type", "secret_key", "provision_url"):
        if not cfg.get(key):
            errors.append("%s is required" % key)
    url = cfg.get("provision_url", "")
    if url and not url.startswith(("http://", "https://")):
        errors.append("provision_url: expected http://host[:port]/path")
    if url.startswith("https://") and not cfg.get("ca_file"):
        errors.append("provision_url https:// needs --ca-file (the CA that signed the "
                      "server's certificate)")
    if type(cfg.get("tz_min")) is int and not -720 <= cfg["tz_min"] <= 840:
        errors.append("tz_min: expected -720..840 minutes east of UTC")
    if cfg.get("wifi_password") and not cfg.get("wifi_ssid"):
        errors.append("wifi_password given without wifi_ssid")
    return errors


def ders(data):
    """The certificates of a PEM or DER file, as DER."""
    if b"-----BEGIN" in data:
        return [ssl.PEM_cert_to_DER_cert(m.decode()) for m in re.findall(
            rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.S)]
    out = []
    while len(data) >= 2 and data[0] == 0x30:   # SEQUENCE, short or long form length
        n, head = data[1], 2
        if n & 0x80:
            head += n & 0x7F
            n = int.from_bytes(data[2:head], "big")
        out.append(data[:head + n])
        data = data[head + n:]
    return out + [data] if out and data else out    # trailing bytes: refused by load_ca


def load_ca(path):
    """(DER certificates, errors) of a CA file: each must be a CA certificate (basic
    constraints CA:TRUE) that has not expired."""
    try:
        with open(path, "rb") as f:
            certs = ders(f.read())
    except OSError as e:
        return [], ["--ca-file: %s" % e]
    if not certs:
        return [], ["--ca-file %s: no certificate in it (PEM or DER expected)" % path]
    errors = []
    for i, der in enumerate(certs, 1):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            ctx.load_verify_locations(cadata=der)
        except (ssl.SSLError, ValueError) as e:
            errors.append("--ca-file %s: certificate %d unreadable (%s)" % (path, i, e))
            continue
        info = ctx.get_ca_certs()       # only certificates that are CAs
        if not info:
            errors.append("--ca-file %s: certificate %d is not a CA certificate" % (path, i))
        elif ssl.cert_time_to_seconds(info[0]["notAfter"]) < time.time():
            errors.append("--ca-file %s: certificate %d expired %s"
                          % (path, i, info[0]["notAfter"]))
    return certs, errors


def describe_ca(der):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=der)
    info = ctx.get_ca_certs()[0]
    subject = ", ".join("%s=%s" % kv for rdn in info["subject"] for kv in rdn)
    return "%s (until %s)" % (subject, info["notAfter"])


def out_path(path, cpu_id):
    path = os.path.abspath(path or os.path.join(ROOT, "build", "piles", cpu_id + ".json"))
    rel = os.path.relpath(path, ROOT)
    if not rel.startswith(".."):
        if rel.split(os.sep)[0] not in IGNORED:
            sys.exit("factory: %s is inside the repository; write it under build/ (ignored "
                     "by git) or outside the repository" % rel)
    return path


def write(path, cfg):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f, indent=1, sort_keys=True)
        f.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_ca(path, certs):
    """The CA certificates as DER back to back (not secret: mode 0644)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(b"".join(certs))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-id", required=True, help="the id registered with the platform")
    ap.add_argument("--app-id", default=DEFAULTS["app_id"])
    ap.add_argument("--product-type", default=DEFAULTS["product_type"])
    ap.add_argument("--provision-url", required=True)
    ap.add_argument("--wifi-ssid", default="")
    ap.add_argument("--ca-file", help="CA certificate(s), PEM or DER, for https:// and "
                    "mqtts:// servers")
    ap.add_argument("--tz-min", type=int, default=DEFAULTS["tz_min"])
    ap.add_argument("--secret-key", help="prefer the prompt or PILE_SECRET_KEY")
    ap.add_argument("--wifi-password", help="prefer the prompt or PILE_WIFI_PASSWORD")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON")
    ap.add_argument("--out", help="output file (default build/piles/<cpu_id>.json)")
    a = ap.parse_args(argv)
    cfg = {"app_id": a.app_id, "cpu_id": a.cpu_id, "product_type": a.product_type,
           "provision_url": a.provision_url, "wifi_ssid": a.wifi_ssid, "tz_min": a.tz_min}
    for item in a.set:
        key, sep, value = item.partition("=")
        if not sep or key not in DEFAULTS:
            sys.exit("factory: --set %s: expected KEY=JSON with a key of config.DEFAULTS"
                     % key)
        if key == "ca_file":
            sys.exit("factory: --set ca_file: use --ca-file FILE (checked, written beside "
                     "the configuration)")
        try:
            cfg[key] = json.loads(value)
        except ValueError:
            cfg[key] = value            # a bare string
    path = out_path(a.out, a.cpu_id)
    certs, ca_errors = load_ca(a.ca_file) if a.ca_file else ([], [])
    ca_path = os.path.splitext(path)[0] + ".ca.der"
    if a.ca_file:
        cfg["ca_file"] = os.path.basename(ca_path)      # beside config.json on the pile too
    for key, env, what in SECRETS:
        value = getattr(a, key) or os.environ.get(env)
        if value is None and (key == "secret_key" or cfg["wifi_ssid"]):
            value = getpass.getpass("%s for %s: " % (what, a.cpu_id))
        if value:
            cfg[key] = value
    errors = ca_errors + check(cfg)
    if errors:
        sys.exit("factory: configuration refused:\n  " + "\n  ".join(errors))
    if certs:       # first: the configuration never names a file that is not there
        write_ca(ca_path, certs)
        print("factory: wrote %s, the pile trusts:" % ca_path)
        for der in certs:
            print("  " + describe_ca(der))
    write(path, cfg)
    shown = public(cfg)
    print("factory: wrote %s (mode 0600; secrets masked below)" % path)
    for key in sorted(shown):
        print("  %-14s %s" % (key, shown[key]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
