"""What a TLS session to the broker costs the pile: MicroPython heap bytes and time.

Run with CPython:  python3 bench/bench_tls.py [--runs N]
A test CA and server certificates (ECDSA P-256 and RSA-2048) are made with openssl; a
private mosquitto serves each over TLS.  In the unix port, pile.net opens the session
as the Link does (CA and host name checked), sends an MQTT CONNECT and reads the
CONNACK; the same over plain TCP for comparison.  Prints figures only:
  - the MicroPython heap (gc.mem_alloc after gc.collect): the ssl modules, the SSLContext
    with its CA (made once, kept), a connection while it is open, what is allocated
    while it opens (garbage included: the collector is off meanwhile), the heap after
    each round of connections (mbedtls allocates its record buffers and handshake state
    outside that heap: malloc here, the ESP-IDF heap on the board; gc.mem_alloc cannot
    see them);
  - connect + handshake + CONNECT/CONNACK time on this host (median, min, max of N).
On the ESP32 the board's other heap needs about 21 KB per connection for mbedtls's record
buffers alone (docs/decisions.md "TLS"), and the handshake takes far longer.
"""
import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from broker import Broker  # noqa: E402
from mprun import MICROPYTHON, MPYPATH, ROOT  # noqa: E402

SCRIPT = r"""
import asyncio, gc, time
from pile import net

TLS_PORT, PORT, CA, USER, PW, RUNS = %d, %d, %r, %r, %r, %d


def live():
    gc.collect()
    return gc.mem_alloc()


def packet(cid):
    def s(b):
        return bytes((len(b) >> 8, len(b) & 255)) + b
    body = b"\x00\x04MQTT\x04\xc2\x00\x3c" + s(cid) + s(USER.encode()) + s(PW.encode())
    return bytes((0x10, len(body))) + body


CONNECT = packet(b"bench-tls")
BUF = bytearray(16)


async def session(ca):
    r, w = await net.connect("localhost", TLS_PORT if ca else PORT, 5000, ca)
    w.write(CONNECT)                    # TLS: the handshake runs first
    await w.drain()
    n = 0
    while n < 4:
        got = await r.readinto(memoryview(BUF)[n:4])
        if got is None:
            continue
        if not got:
            raise OSError("closed")
        n += got
    assert BUF[:4] == b"\x20\x02\x00\x00", bytes(BUF[:4])
    return w


async def measure(ca, k=4):
    # (us to CONNACK, bytes allocated meanwhile) of each of k connections opened one
    # after the other, and the live bytes per connection while the k are open
    a0 = live()
    ws, runs = [], []
    for _ in range(k):
        a = live()
        gc.disable()
        t0 = time.ticks_us()
        ws.append(await session(ca))
        runs.append((time.ticks_diff(time.ticks_us(), t0), gc.mem_alloc() - a))
        gc.enable()
    held = live() - a0
    for w in ws:
        net.close(w)
    ws = w = None
    await asyncio.sleep_ms(20)
    return runs, held // k


async def main():
    base = live()
    import ssl, tls
    mods = live() - base
    from pile import tls
    tls.context(CA)
    kept = live() - base - mods
    print("R", mods, kept)
    for name, ca in (("T", CA), ("P", None)):
        for i in range(RUNS):
            runs, held = await measure(ca)
            for dt, churn in runs:
                print(name, i, dt, churn, held, live())

asyncio.run(main())
"""


def openssl(d, *args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, cwd=d)


def pki(d, kind):
    """((certificate, key) of localhost, CA file) with keys of kind "ec" or "rsa"."""
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ec" else \
        ["-newkey", "rsa:2048"]
    openssl(d, "req", "-x509", *key, "-nodes", "-keyout", kind + "-ca.key", "-days", "30",
            "-subj", "/CN=Bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-out", kind + "-ca.pem")
    openssl(d, "x509", "-in", kind + "-ca.pem", "-outform", "DER", "-out", kind + "-ca.der")
    openssl(d, "req", "-new", *key, "-nodes", "-keyout", kind + ".key", "-subj", "/CN=localhost",
            "-out", kind + ".csr")
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n")
    openssl(d, "x509", "-req", "-in", kind + ".csr", "-CA", kind + "-ca.pem", "-CAkey",
            kind + "-ca.key", "-CAcreateserial", "-days", "30", "-extfile", "ext",
            "-out", kind + ".pem")
    return (os.path.join(d, kind + ".pem"), os.path.join(d, kind + ".key")), \
        os.path.join(d, kind + "-ca.der")


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def bench(work, kind, runs):
    """(module and context bytes, {"T": TLS runs, "P": plain runs}) from one MicroPython run."""
    cert, ca = pki(work, kind)
    broker = Broker(os.path.join(work, "broker-" + kind), tls=cert).start()
    try:
        code = SCRIPT % (broker.tls_port, broker.port, ca, broker.admin[0], broker.admin[1],
                         runs)
        res = subprocess.run([MICROPYTHON, "-c", code], cwd=ROOT, capture_output=True,
                             text=True, timeout=300, env=dict(os.environ, MICROPYPATH=MPYPATH))
        lines = [line.split() for line in res.stdout.splitlines() if line[:1] in "RTP"]
        if res.returncode or not lines:
            sys.exit("bench_tls: the MicroPython run failed:\n" + res.stdout + res.stderr)
    finally:
        broker.stop()
    rows = {"T": [], "P": []}
    for line in lines[1:]:
        rows[line[0]].append([int(x) for x in line[1:]])
    return [int(x) for x in lines[0][1:]], rows


def report(kind, r, rows):
    t, p = rows["T"], rows["P"]

    def first(rs, col):         # the first round: one-time allocations too
        return [x[col] for x in rs if x[0] == 0][0]

    def later(rs, col):
        return [x[col] for x in rs if x[0] > 0]

    rounds = max(x[0] for x in t) + 1
    print("server certificate %s (%d rounds of 4 connections open at once; plain TCP for "
          "comparison):" % ("ECDSA P-256" if kind == "ec" else "RSA-2048", rounds))
    print("  MicroPython heap, bytes (gc.mem_alloc after gc.collect):")
    print("    the ssl and tls modules, imported            %6d" % r[0])
    print("    SSLContext with the CA, made once and kept   %6d" % r[1])
    print("    a connection, while open                     %6d   (plain TCP %d)"
          % (median(later(t, 3)), median(later(p, 3))))
    print("    allocated while one opens (garbage too)      %6d   (plain TCP %d)"
          % (median(later(t, 2)), median(later(p, 2))))
    print("    the first round, per connection: open %d, allocated up to %d (one-time "
          "allocations)" % (first(t, 3), max(x[2] for x in t if x[0] == 0)))
    print("    the whole heap after each round: %s   (the same every round: no leak)"
          % " ".join(str(x[4]) for x in t[::4]))
    dts = [x[1] / 1000 for x in t]
    print("  connect + handshake + CONNECT/CONNACK: median %.1f ms (%.1f..%.1f); "
          "plain TCP %.1f ms (both include the 20 ms DNS poll of net.resolve)"
          % (median(dts), min(dts), max(dts), median([x[1] / 1000 for x in p])))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="rounds of 4 connections")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-tls-")
    print("TLS to mosquitto from the unix port (64-bit: its objects are larger than on the "
          "ESP32's 32-bit port)")
    for kind in ("ec", "rsa"):
        report(kind, *bench(work, kind, max(a.runs, 2)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
