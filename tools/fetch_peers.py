"""Fetch the peer MQTT clients the link benchmark compares the firmware's Link with, each
pinned by version and sha256 like tools/fetch_lib.py pins umqtt.simple.

They are bench material, never firmware: they go to bench/peers/ (git-ignored), which
only the benchmark's MicroPython scripts put on their path.  Each is a pure-Python wheel
on the package index; pip resolves and downloads the pinned name and version (no
dependencies: the ones needed are pinned here too), the file is checked against the
pinned sha256, and only the listed top-level modules are unpacked.
  - aiomqttc: an asyncio MQTT client "for MicroPython and Python" (one module);
  - chumicro-mqtt: a non-blocking, tick-driven MQTT client, with the two libraries it
    runs on here (chumicro-sockets for the socket, chumicro-timing for ticks; its third
    dependency, chumicro-config, only serves from_config, which the bench does not use).
Not fetched: micropython-mqtt 0.7b4 (a 2020 fork of mqtt_as): it needs network.WLAN
and, without it, a cpy_fix module that its archive does not hold, so it cannot start on
the unix port.
Usage: python tools/fetch_peers.py [DIR]   (default bench/peers)
"""
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (name, version, sha256 of the wheel, top-level entries unpacked)
PEERS = (
    ("aiomqttc", "1.0.7",
     "edced4a29120d00e116732eb8e1e22ac3804ff18c14981d14816f9987b2f33ea", ("aiomqttc.py",)),
    ("chumicro-mqtt", "0.30.3",
     "9752586bb10e29389e5f5c443594ce0b5f2f1343ba9aefb3fc9909e33d234482", ("chumicro_mqtt",)),
    ("chumicro-sockets", "0.21.3",
     "ade59b6045db5bdb03b7992748a8b1111efdda482c165d09bd6e7eb25b34f3b6",
     ("chumicro_sockets",)),
    ("chumicro-timing", "0.8.4",
     "f637c0331a30659a77d98828cf3fb9608402204059934e73c916b0f82b33703c", ("chumicro_timing",)),
)
# candidates looked at and not fetched, with why (the benchmark table says so)
UNUSABLE = (
    ("mqtt_as", "not on the package index in a usable form"),
    ("micropython-mqtt 0.7b4 (a 2020 fork of mqtt_as)", "needs network.WLAN and, without it, "
     "a cpy_fix module that its archive does not hold: it cannot start on the unix port"),
)
STAMP = "PINNED"        # in DIR: one "name version sha256" line per peer fetched


def wheel(name, version, sha256, tmp):
    """Path of the pinned wheel, downloaded by pip and checked against sha256."""
    res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                          "--only-binary", ":all:", "-d", tmp, "%s==%s" % (name, version)],
                         capture_output=True, text=True)
    found = glob.glob(os.path.join(tmp, "*.whl"))
    if res.returncode or len(found) != 1:
        sys.exit("fetch_peers: pip could not get %s==%s:\n%s"
                 % (name, version, res.stderr[-2000:]))
    with open(found[0], "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != sha256:
        sys.exit("fetch_peers: sha256 mismatch for %s %s: got %s" % (name, version, digest))
    return found[0]


def unpack(path, keep, out):
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n.split("/")[0] in keep and not n.endswith("/")]
        if not names:
            sys.exit("fetch_peers: %s holds none of %s" % (os.path.basename(path), keep))
        for n in names:
            dest = os.path.join(out, *n.split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as f:
                f.write(z.read(n))


def fetch(out):
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    lines = []
    for name, version, sha256, keep in PEERS:
        with tempfile.TemporaryDirectory() as tmp:
            unpack(wheel(name, version, sha256, tmp), keep, out)
        lines.append("%s %s %s\n" % (name, version, sha256))
        print("fetch_peers: %s %s -> %s" % (name, version, out))
    with open(os.path.join(out, STAMP), "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    fetch(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "bench", "peers"))
