"""tools/factory.py: a pile's config.json from arguments and a hidden prompt for secrets."""
import json
import os
import ssl
import stat
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import factory  # noqa: E402

SECRET = "bc0e921e1132c98628197baea2edd65d)"
WIFI_PW = "correct horse battery"
BASE = ["--cpu-id", "HCS220922001000", "--provision-url", "http://10.1.2.3:8779/publicCloud/"
        "oneKeyLink/v1", "--wifi-ssid", "site-7"]


def run(args, **env):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "factory.py")] + args,
                          env=dict(os.environ, **env), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)


def test_prompts_for_secrets_and_masks_them(tmp_path, monkeypatch, capsys):
    asked = []

    def prompt(text):
        asked.append(text)
        return SECRET if "secret" in text else WIFI_PW
    monkeypatch.setattr(factory.getpass, "getpass", prompt)
    monkeypatch.delenv("PILE_SECRET_KEY", raising=False)
    monkeypatch.delenv("PILE_WIFI_PASSWORD", raising=False)
    out = tmp_path / "pile.json"
    assert factory.main(BASE + ["--tz-min", "420", "--set", "heartbeat_s=60",
                                "--out", str(out)]) == 0
    assert len(asked) == 2
    cfg = json.loads(out.read_text())
    assert cfg == {"app_id": "hci", "cpu_id": "HCS220922001000", "product_type": "HCI-EVA7",
                   "provision_url": "http://10.1.2.3:8779/publicCloud/oneKeyLink/v1",
                   "wifi_ssid": "site-7", "wifi_password": WIFI_PW, "secret_key": SECRET,
                   "tz_min": 420, "heartbeat_s": 60}
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    printed = capsys.readouterr()
    assert SECRET not in printed.out + printed.err and WIFI_PW not in printed.out
    assert "secret_key     ***" in printed.out and "wifi_password  ***" in printed.out
    assert not list(tmp_path.glob("*.tmp"))


def test_secrets_from_the_environment_default_path_under_build(tmp_path):
    cpu = "FACTORYTEST%d" % os.getpid()
    res = run(["--cpu-id", cpu, "--provision-url", "http://p.example/x"],
              PILE_SECRET_KEY=SECRET)
    path = os.path.join(ROOT, "build", "piles", cpu + ".json")
    try:
        assert res.returncode == 0, res.stderr
        assert SECRET not in res.stdout + res.stderr and path in res.stdout
        cfg = json.load(open(path))
        assert cfg["secret_key"] == SECRET and "wifi_password" not in cfg   # no Wi-Fi asked
        # the firmware reads it back without complaint
        sys.path.insert(0, os.path.join(ROOT, "firmware"))
        from pile import config
        loaded, errors = config.load(path)
        assert errors == [] and loaded["cpu_id"] == cpu
    finally:
        if os.path.exists(path):
            os.remove(path)


@pytest.mark.parametrize("args, why", [
    (["--provision-url", "ftp://x", "--cpu-id", "A"], "provision_url: expected http"),
    (BASE + ["--tz-min", "900"], "tz_min: expected -720..840"),
    (BASE + ["--set", "heartbeat_s=\"sixty\""], "heartbeat_s: expected int"),
    (BASE + ["--set", "no_such_key=1"], "--set no_such_key"),
    (BASE + ["--out", os.path.join(ROOT, "firmware", "config.json")], "inside the repository"),
])
def test_bad_input_is_refused_and_nothing_written(tmp_path, args, why):
    if "--out" not in args:
        args = args + ["--out", str(tmp_path / "c.json")]
    res = run(args, PILE_SECRET_KEY=SECRET, PILE_WIFI_PASSWORD=WIFI_PW)
    assert res.returncode != 0 and why in res.stderr, res.stderr
    assert SECRET not in res.stdout + res.stderr
    assert not (tmp_path / "c.json").exists()
    assert not os.path.exists(os.path.join(ROOT, "firmware", "config.json"))


def test_missing_secret_is_refused(tmp_path):
    res = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, %r); "
                          "import factory; factory.getpass.getpass = lambda p: ''; "
                          "sys.exit(factory.main(sys.argv[1:]))" % os.path.join(ROOT, "tools")]
                         + BASE + ["--out", str(tmp_path / "c.json")],
                         env={k: v for k, v in os.environ.items() if not k.startswith("PILE_")},
                         capture_output=True, text=True)
    assert res.returncode != 0 and "secret_key is required" in res.stderr


# --- the CA file (--ca-file) ------------------------------------------------------------

def cert(tmp_path, name, ca=True):
    """A self-signed certificate made with openssl: a CA, or (ca=False) a server's."""
    ext = "basicConstraints=critical,CA:%s" % ("TRUE" if ca else "FALSE")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(tmp_path / "k.pem"),
                    "-days", "3650", "-subj", "/CN=" + name, "-addext", ext,
                    "-out", str(tmp_path / (name + ".pem"))], check=True, capture_output=True)
    return tmp_path / (name + ".pem")


def der(pem):
    return ssl.PEM_cert_to_DER_cert(pem.read_text())


HTTPS = ["--cpu-id", "HCS220922001000", "--provision-url", "https://10.1.2.3/publicCloud/"
         "oneKeyLink/v1", "--secret-key", SECRET]


def test_ca_file_written_as_der_beside_the_configuration(tmp_path, capsys):
    a, b = cert(tmp_path, "Root A"), cert(tmp_path, "Root B")
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(a.read_text() + "\n# a comment between them\n" + b.read_text())
    out = tmp_path / "piles" / "HCS220922001000.json"
    assert factory.main(HTTPS + ["--ca-file", str(bundle), "--out", str(out)]) == 0
    cfg = json.loads(out.read_text())
    assert cfg["ca_file"] == "HCS220922001000.ca.der"
    ca = tmp_path / "piles" / cfg["ca_file"]
    assert ca.read_bytes() == der(a) + der(b)       # DER, back to back, in order
    assert stat.S_IMODE(ca.stat().st_mode) == 0o644
    printed = capsys.readouterr().out
    assert "commonName=Root A (until" in printed and "commonName=Root B" in printed
    # the firmware finds it beside its config.json
    sys.path.insert(0, os.path.join(ROOT, "firmware"))
    from pile import config
    loaded, errors = config.load(str(out))
    assert errors == [] and loaded["ca_file"] == str(ca)
    # a DER file in: the same bytes out
    (tmp_path / "a.der").write_bytes(der(a))
    out2 = tmp_path / "p2.json"
    assert factory.main(HTTPS + ["--ca-file", str(tmp_path / "a.der"), "--out", str(out2)]) == 0
    assert (tmp_path / "p2.ca.der").read_bytes() == der(a)


def test_bad_ca_file_is_refused_and_nothing_written(tmp_path, monkeypatch):
    leaf = cert(tmp_path, "localhost", ca=False)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    root = cert(tmp_path, "Root")
    cases = [(["--ca-file", str(leaf)], "certificate 1 is not a CA certificate"),
             (["--ca-file", str(junk)], "no certificate in it"),
             (["--ca-file", str(tmp_path / "missing.pem")], "No such file"),
             ([], "provision_url https:// needs --ca-file"),
             (["--set", "ca_file=\"x.der\""], "use --ca-file")]
    for extra, why in cases:
        res = run(HTTPS + extra + ["--out", str(tmp_path / "c.json")])
        assert res.returncode != 0 and why in res.stderr, (extra, res.stderr)
    # a CA that has expired (the clock 20 years on)
    monkeypatch.setattr(factory.time, "time", lambda: time.time_ns() / 1e9 + 20 * 365 * 86400)
    with pytest.raises(SystemExit) as e:
        factory.main(HTTPS + ["--ca-file", str(root), "--out", str(tmp_path / "c.json")])
    assert "certificate 1 expired" in str(e.value)
    assert not (tmp_path / "c.json").exists() and not (tmp_path / "c.ca.der").exists()
