"""Configuration: the one place for every *ours* decision, and the factory settings.

DEFAULTS holds what PROTOCOL.md marks *ours* or *model* (topics, cadences, timeouts,
codes that a real platform might want different); a pile's ``config.json`` (written by
the factory tool, never printed back) overrides any of it and adds the identity and
secrets: app_id, cpu_id, product_type, secret_key, provision_url, wifi_ssid,
wifi_password.  load() never raises: a missing or broken file gives a clear error list.
"""
import json

# dict(name=...) rather than {"name": ...}: a keyword name is an interned qstr, a string
# key over 10 characters would be a heap string object of its own
DEFAULTS = dict(
    app_id="hci",
    cpu_id="",            # default: the board's own id
    dev_id="",            # default: cpu_id
    product_type="HCI-EVA7",
    secret_key="",
    provision_url="http://127.0.0.1:8779/publicCloud/oneKeyLink/v1",
    wifi_ssid="",
    wifi_password="",
    ntp_host="pool.ntp.org",
    tz_min=480,           # local time for the fee model: UTC+8
    sw_ver="0100000001",
    sdk_ver="2.5.0",
    # topics (PROTOCOL.md §3, ours)
    topic_event="/sys/{pk}/{dn}/thing/event/{cmd}/post",
    topic_reply="/sys/{pk}/{dn}/thing/service/{cmd}_reply",
    topic_services="/sys/{pk}/{dn}/thing/service/+",
    topic_acks="/sys/{pk}/{dn}/thing/event/+/post_reply",
    # link
    keepalive_s=60,
    connect_timeout_ms=5000,
    backoff_min_ms=1000,
    backoff_max_ms=5000,        # each wait drawn from half to all of it (jitter)
    reprovision_s=600,          # the stored broker not reached this long: provision again
    provision_timeout_ms=8000,
    ca_file="",           # TLS (https, ssl, mqtts): the CA file (DER or PEM) the server's
                          # certificate must chain to, beside config.json; "": TLS refused
    # cadences (PROTOCOL.md §6, model)
    telemetry_fast_s=5,
    telemetry_fast_for_s=60,
    telemetry_slow_s=90,
    heartbeat_s=120,
    fault_repeat_s=600,
    ack_wait_s=10,
    ack_backoff_max_s=300,
    offline_charge_s=300,
    start_timeout_s=120,
    start_max_age_s=120,  # a startChargeSrv older than this (head.timestamp) is refused
    power_loss_reason=1001,
    wdt_ms=8000,          # watchdog: real ms without every critical task going round
    vehicle_pause_s=300,  # vehicle back in B this long: session ends with 1010
    stop_wait_ms=3000,    # a normal stop: PWM off, the relay opens when the vehicle leaves
                          # C, at most this long after (IEC 61851-1 EVSE-initiated stop)
    relay_min_open_s=10,  # the contactor closes again only this long after it opened
    fail_safe_ms=100,     # no control step has run this long (out of memory): relay open,
                          # PWM off; the session ends with 6006 (pile.gun.fail_safe)
    status_min_ms=1000,   # changes of work_status reported at most this often (coalesced)
    # stopChargeSrv stop_reason -> stop code (ours; 1002 for any other reason)
    stop_codes={"10": 1009, "11": 1012, "12": 1013, "13": 1002, "14": 1002},
    register_save_mwh=100000,   # meter register: written every 0.1 kWh ...
    register_save_s=60,         # ... or every 60 s while it moves
    meter_creep_mw=5000,        # no-load threshold: below 5 W no energy is counted
)

_loaded = False


def load(path):
    """Return (cfg, errors): DEFAULTS overlaid with the JSON object in ``path``.

    The first load overlays DEFAULTS in place and returns it: the running configuration,
    one dict in RAM instead of two.  Later loads (pile.diag at the REPL) return a copy, so
    they never change the running pile."""
    global _loaded
    cfg = dict(DEFAULTS) if _loaded else DEFAULTS
    _loaded = True
    errors = []
    try:
        with open(path) as f:
            user = json.load(f)
        if not isinstance(user, dict):
            raise ValueError("not a JSON object")
    except OSError:
        user = {}
        errors.append("%s missing" % path)
    except ValueError as e:
        user = {}
        errors.append("%s unreadable: %s" % (path, e))
    for key, value in user.items():
        if key in cfg and type(value) is not type(cfg[key]):
            errors.append("config key %s: expected %s" % (key, type(cfg[key]).__name__))
        else:
            cfg[key] = value
    for key in ("app_id", "product_type", "secret_key", "provision_url"):
        if not cfg.get(key):
            errors.append("config key %s is required" % key)
    ca = cfg["ca_file"]
    if ca and ca[0] != "/" and "/" in path:     # a relative name: beside config.json
        cfg["ca_file"] = path.rsplit("/", 1)[0] + "/" + ca
    return cfg, errors


def public(cfg):
    """The configuration with its secrets masked, for the REPL and the logs."""
    out = {}
    for key, value in cfg.items():
        out[key] = "***" if value and ("key" in key or "password" in key) else value
    return out
