"""Write one pile's factory configuration (config.json) for `make deploy CONFIG=...`.

    python tools/factory.py --cpu-id HCS220922001000 \
        --provision-url http://host/publicCloud/oneKeyLink/v1 --wifi-ssid site \
        [--app-id hci] [--product-type HCI-EVA7] [--tz-min 480] [--set key=JSON ...] [--out PATH]

Secrets (the vendor's secret_key, the Wi-Fi password) are asked for with a hidden prompt;
for unattended use take them from the environment (PILE_SECRET_KEY, PILE_WIFI_PASSWORD)
or, less safely (other users see a command line), --secret-key / --wifi-password.  They
are written to the file only and printed masked.  --set overrides any other key of
firmware/pile/config.py DEFAULTS (the value is JSON: --set heartbeat_s=60).

The file is written atomically with mode 0600 to build/piles/<cpu_id>.json by default.
It must stay out of the repository: a path inside the repository must be under build/ or
run/ (both git-ignored).
"""
import argparse
import getpass
import json
import os
import sys

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
    if type(cfg.get("tz_min")) is int and not -720 <= cfg["tz_min"] <= 840:
        errors.append("tz_min: expected -720..840 minutes east of UTC")
    if cfg.get("wifi_password") and not cfg.get("wifi_ssid"):
        errors.append("wifi_password given without wifi_ssid")
    return errors


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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-id", required=True, help="the id registered with the platform")
    ap.add_argument("--app-id", default=DEFAULTS["app_id"])
    ap.add_argument("--product-type", default=DEFAULTS["product_type"])
    ap.add_argument("--provision-url", required=True)
    ap.add_argument("--wifi-ssid", default="")
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
        try:
            cfg[key] = json.loads(value)
        except ValueError:
            cfg[key] = value            # a bare string
    path = out_path(a.out, a.cpu_id)
    for key, env, what in SECRETS:
        value = getattr(a, key) or os.environ.get(env)
        if value is None and (key == "secret_key" or cfg["wifi_ssid"]):
            value = getpass.getpass("%s for %s: " % (what, a.cpu_id))
        if value:
            cfg[key] = value
    errors = check(cfg)
    if errors:
        sys.exit("factory: configuration refused:\n  " + "\n  ".join(errors))
    write(path, cfg)
    shown = public(cfg)
    print("factory: wrote %s (mode 0600; secrets masked below)" % path)
    for key in sorted(shown):
        print("  %-14s %s" % (key, shown[key]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
