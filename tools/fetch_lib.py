"""Fetch micropython-umqtt.simple into lib/, pinned by version and sha256.

The package on the index is a plain source archive that pip cannot install (no setup.py),
so pip is asked only to resolve the pinned name and version to its archive address; the
archive is then downloaded, checked against the pinned sha256 and unpacked.
Usage: python tools/fetch_lib.py [LIBDIR]
"""
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request

NAME, VERSION = "micropython-umqtt.simple", "1.3.4"
SHA256 = "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f"
MEMBER = "umqtt/simple.py"


def archive_url():
    """Let pip resolve name==version against the configured index; read the address it used."""
    with tempfile.TemporaryDirectory() as d:
        res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-v",
                              "-d", d, "%s==%s" % (NAME, VERSION)],
                             capture_output=True, text=True)
    m = re.search(r"(https?://\S+?\.tar\.gz)", res.stdout + res.stderr)
    if not m:
        sys.exit("fetch_lib: pip could not resolve %s==%s:\n%s" % (NAME, VERSION, res.stderr[-2000:]))
    return m.group(1)


def fetch(libdir):
    data = urllib.request.urlopen(archive_url(), timeout=60).read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        sys.exit("fetch_lib: sha256 mismatch for %s %s: got %s" % (NAME, VERSION, digest))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            if member.name.endswith("/" + MEMBER):
                out = os.path.join(libdir, MEMBER)
                os.makedirs(os.path.dirname(out), exist_ok=True)
                with open(out, "wb") as f:
                    f.write(tar.extractfile(member).read())
                print("fetch_lib: %s %s -> %s" % (NAME, VERSION, out))
                return
    sys.exit("fetch_lib: %s not in the archive" % MEMBER)


if __name__ == "__main__":
    fetch(sys.argv[1] if len(sys.argv) > 1 else "lib")
