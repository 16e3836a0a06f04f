"""TLS to the broker (mqtts://) and for provisioning (https://), certificates checked.

A test CA and server certificates are made here with openssl; mosquitto gets a TLS
listener (tools/broker.py) and the platform simulator hands that address to the pile.
Right CA: the pile comes online and runs a whole charge session over TLS.  A server
certificate from another CA, self-signed, for another host name, or expired: the pile
refuses it and logs why, and the broker never sees a CONNECT (so never the password:
mosquitto logs the client id of every CONNECT it reads).  A TLS URL without a CA
configured is refused, never tried in plain TCP; TLS waits until the board's clock is
trusted (docs/decisions.md "TLS").
"""
import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from broker import Broker
from conftest import DEV, charging, give_model, online
from pile_proc import wait_until
from platform_sim import PROVISION_PATH, PlatformSim

import factory      # tools/ is on the path (conftest)

FAST = dict(keepalive_s=5, backoff_min_ms=200, backoff_max_ms=800, connect_timeout_ms=3000,
            provision_timeout_ms=3000)
EXT = "basicConstraints=critical,CA:FALSE\nsubjectAltName=%s\nextendedKeyUsage=serverAuth\n"


class PKI:
    """A test CA, a rogue CA and the server certificates of every test, made with openssl
    (EC P-256: fast) in one directory."""

    def __init__(self, d):
        self.d = d
        os.makedirs(d, exist_ok=True)
        self.ca = self._ca("ca", "Pile Test CA")
        self.rogue = self._ca("rogue", "Rogue CA")
        self.certs = {
            "good": self._leaf("good", "DNS:localhost", self.ca),
            "wrong_host": self._leaf("wrong_host", "DNS:broker.example", self.ca),
            "wrong_ca": self._leaf("wrong_ca", "DNS:localhost", self.rogue),
            "self_signed": self._leaf("self_signed", "DNS:localhost", None),
            "expired": self._leaf("expired", "DNS:localhost", self.ca,
                                  dates=("20200101000000Z", "20210101000000Z")),
        }

    def path(self, name):
        return os.path.join(self.d, name)

    def openssl(self, *args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True,
                       cwd=self.d)

    def _key(self, name):
        self.openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-out", self.path(name + ".key"))
        return self.path(name + ".key")

    def _ca(self, name, cn):
        key = self._key(name)
        self.openssl("req", "-x509", "-new", "-key", key, "-days", "3650", "-subj", "/CN=" + cn,
                     "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                     "-out", self.path(name + ".pem"))
        return self.path(name + ".pem"), key

    def _leaf(self, name, san, ca, dates=None):
        key = self._key(name)
        pem = self.path(name + ".pem")
        if ca is None:          # self-signed, for the right name
            self.openssl("req", "-x509", "-new", "-key", key, "-days", "365",
                         "-subj", "/CN=localhost", "-addext", "subjectAltName=" + san,
                         "-out", pem)
            return pem, key
        csr = self.path(name + ".csr")
        ext = self.path(name + ".ext")
        with open(ext, "w") as f:
            f.write(EXT % san)
        self.openssl("req", "-new", "-key", key, "-subj", "/CN=" + san.split(":")[1],
                     "-out", csr)
        if dates is None:
            self.openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1],
                         "-CAcreateserial", "-days", "365", "-extfile", ext, "-out", pem)
            return pem, key
        # validity in the past: only `openssl ca` takes explicit dates (OpenSSL 3.0)
        db = self.path(name + ".db")
        open(db, "w").close()
        cnf = self.path(name + ".cnf")
        with open(cnf, "w") as f:
            f.write("[ca]\ndefault_ca=d\n[d]\ndatabase=%s\nnew_certs_dir=%s\nserial=%s\n"
                    "default_md=sha256\npolicy=p\nunique_subject=no\n[p]\ncommonName=supplied\n"
                    "[x]\n%s" % (db, self.d, self.path(name + ".serial"), EXT % san))
        with open(self.path(name + ".serial"), "w") as f:
            f.write("1000\n")
        self.openssl("ca", "-batch", "-config", cnf, "-cert", ca[0], "-keyfile", ca[1],
                     "-in", csr, "-out", pem, "-startdate", dates[0], "-enddate", dates[1],
                     "-extensions", "x", "-notext")
        return pem, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture
def server_cert():
    """The broker's certificate (a key of PKI.certs); tests parametrize it."""
    return "good"


@pytest.fixture
def broker(tmp_path, pki, server_cert):
    b = Broker(str(tmp_path / "broker"), tls=pki.certs[server_cert])
    b.start()
    yield b
    b.stop()


@pytest.fixture
def platform(broker):
    sim = PlatformSim(broker, mqtt_addr_for_devices="mqtts://localhost:%d" % broker.tls_port)
    sim.start()
    yield sim
    sim.stop()


def pile_ca(tmp_path, pki, *pems, name="pile"):
    """The CA file tools/factory.py writes (DER) for a pile trusting pems (default: the
    test CA), "deployed" beside the config.json of make_pile(name); returns the ca_file
    setting."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"".join(open(p, "rb").read() for p in pems or (pki.ca[0],)))
    (tmp_path / name).mkdir(exist_ok=True)
    out = tmp_path / "factory" / "pile.json"
    assert factory.main(["--cpu-id", DEV, "--provision-url", "http://x/y", "--secret-key",
                         "unused", "--ca-file", str(bundle), "--out", str(out)]) == 0
    cfg = json.loads(out.read_text())
    shutil.copy(tmp_path / "factory" / cfg["ca_file"], tmp_path / name / cfg["ca_file"])
    return cfg["ca_file"]


def broker_log(broker):
    with open(broker.log_path, errors="replace") as f:
        return f.read()


def sockets(pile):
    """The number of sockets the pile's process holds open."""
    fd_dir = "/proc/%d/fd" % pile.proc.pid
    n = 0
    for fd in os.listdir(fd_dir):
        try:
            n += os.readlink(os.path.join(fd_dir, fd)).startswith("socket:")
        except OSError:
            pass
    return n


class TLSFront(threading.Thread):
    """A TLS server (certificate and key given) in front of a plain TCP backend: what it
    decrypts goes to the backend and back.  Records its handshakes (True: passed, or the
    error) and every byte a client sent it.  At the end of an answer it sends close_notify
    and closes, as web servers do; hold=True: the answer and its close_notify leave in
    one TCP segment and it then waits for the client to close (a server that waits for
    the client's close_notify)."""

    def __init__(self, cert, backend, hold=False):
        super().__init__(daemon=True)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(*cert)
        self.backend, self.hold = backend, hold
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.handshakes, self.received = [], b""
        self._done = False

    def run(self):
        self.lsock.settimeout(0.1)
        while not self._done:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        conn.settimeout(5)
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.handshakes.append(str(e))
            conn.close()
            return
        self.handshakes.append(True)
        back = socket.create_connection(self.backend)
        try:
            if self.hold:
                tls.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            while True:
                ready = [tls] if tls.pending() else select.select([tls, back], [], [], 5)[0]
                if not ready:
                    break
                if tls in ready:
                    data = tls.recv(4096)
                    if not data:
                        break
                    self.received += data
                    back.sendall(data)
                if back in ready:
                    data = back.recv(4096)
                    if not data:
                        self._end(tls)
                        break
                    tls.sendall(data)
        except (ssl.SSLError, OSError):
            pass
        finally:
            back.close()
            tls.close()

    def _end(self, tls):
        tls.settimeout(0)
        try:
            tls.unwrap()                # sends close_notify, then wants the client's
        except (ssl.SSLError, OSError):
            pass
        if self.hold:
            tls.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)     # all at once
            select.select([tls], [], [], 5)         # until the client closes

    def close(self):
        self._done = True
        self.join(2)
        self.lsock.close()


class Trickle(threading.Thread):
    """A TCP proxy that passes what the server sends a few bytes at a time, so that the
    client's reads end in the middle of TLS records."""

    def __init__(self, target, chunk=7):
        super().__init__(daemon=True)
        self.target, self.chunk = target, chunk
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.lsock.settimeout(0.1)
        self._done = False

    def run(self):
        while not self._done:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                continue
            server = socket.create_connection(self.target)
            for a, b, n in ((conn, server, 65536), (server, conn, self.chunk)):
                threading.Thread(target=self._pipe, args=(a, b, n), daemon=True).start()

    def _pipe(self, src, dst, n):
        try:
            while True:
                data = src.recv(4096)
                if not data:
                    break
                for i in range(0, len(data), n):
                    dst.sendall(data[i:i + n])
                    if n < 4096:
                        time.sleep(0.0005)
        except OSError:
            pass
        finally:
            src.close()
            dst.close()

    def close(self):
        self._done = True
        self.join(2)
        self.lsock.close()


# --- the broker over TLS ------------------------------------------------------------------

def test_charge_session_over_tls(tmp_path, pki, broker, platform, make_pile):
    # the factory's DER file, two CAs back to back (another one first)
    pile = make_pile(speed=60, ca_file=pile_ca(tmp_path, pki, pki.rogue[0], pki.ca[0]))
    online(platform)
    pile.wait_output(r"\[link\] connecting to localhost:%d \(TLS\)" % broker.tls_port)
    assert pile.status()["link"]
    log = broker_log(broker)
    assert "on port %d" % broker.tls_port in log            # TLS listener, not plain
    assert "as %s" % DEV in log
    give_model(platform)
    body = charging(platform, pile, "TLS1")
    assert (body["start_result"], body["fault_code"]) == (10, 0)
    pile.wait_state(lambda s: s["relay_closed"])
    time.sleep(0.5)                     # some energy: 7 kW x 30 board seconds
    mark = platform.mark()
    platform.stop_charge(DEV, "TLS1")
    order = platform.wait_for(DEV, "orderUpdateEvt", since=mark, timeout=15,
                              pred=lambda m: m["body"]["pre_trade_no"] == "TLS1")
    assert order["msg"]["body"]["total_elect"] > 0
    pile.wait_status(lambda s: s["orders_pending"] == 0)    # acknowledged over TLS
    st = pile.status()
    assert st["link"] and st["connects"] == 1, st           # one session, no reconnect
    assert "session ended" not in pile.output()


def test_tls_records_split_by_the_network(tmp_path, pki, broker, platform, make_pile):
    """Reads that end inside a TLS record give no data yet (None), which is not the end
    of the stream: the session holds."""
    proxy = Trickle(("127.0.0.1", broker.tls_port))
    proxy.start()
    try:
        platform.mqtt_addr_for_devices = "mqtts://localhost:%d" % proxy.port
        pile = make_pile(ca_file=pile_ca(tmp_path, pki), **FAST)
        online(platform)
        give_model(platform)            # a downlink of a few records
        time.sleep(1)
        st = pile.status()
        assert st["link"] and st["connects"] == 1 and st["fee_model"] == "M1", st
        assert "session ended" not in pile.output()
    finally:
        proxy.close()


@pytest.mark.parametrize("server_cert, reason", [
    ("wrong_ca", "The certificate is not correctly signed by the trusted CA"),
    ("self_signed", "The certificate is not correctly signed by the trusted CA"),
    ("wrong_host", "The certificate Common Name (CN) does not match with the expected CN"),
    ("expired", "The certificate validity has expired"),
])
def test_bad_broker_certificate_refused(tmp_path, pki, broker, platform, make_pile,
                                        server_cert, reason):
    pile = make_pile(ca_file=pile_ca(tmp_path, pki), **FAST)
    pattern = r"\[link\] session ended: NetError: server certificate refused: " + \
        reason.replace("(", r"\(").replace(")", r"\)")
    pile.wait_output(pattern, count=2)
    before = sockets(pile)
    pile.wait_output(pattern, count=6, timeout=15)
    assert sockets(pile) <= before + 1      # a refused handshake leaves no socket behind
    assert not pile.status()["link"]
    assert platform.passwords.get(DEV)      # provisioned: it had a password to send
    wait_until(lambda: broker_log(broker).count("on port %d" % broker.tls_port) >= 6, 3,
               "six TLS connections in the broker's log")       # it did try, over TLS
    assert DEV not in broker_log(broker)    # and no CONNECT ever reached the broker
    assert not platform.messages(DEV)


@pytest.mark.parametrize("ca_file, why", [
    ("", r"mqtts:// refused: no CA \(config key ca_file\)"),
    ("missing.der", r"CA file /.*/missing.der unusable: \[Errno 2\] ENOENT"),
])
def test_tls_without_a_usable_ca_is_refused(broker, platform, make_pile, ca_file, why):
    tries = broker_log(broker).count("on port %d" % broker.tls_port)   # the start's probe
    pile = make_pile(ca_file=ca_file, **FAST)
    pile.wait_output(r"\[link\] session ended: NetError: " + why, count=3)
    log = broker_log(broker)
    assert log.count("on port %d" % broker.tls_port) == tries   # not even plain TCP
    assert DEV not in log and not pile.status()["link"]


# --- provisioning over https -------------------------------------------------------------

@pytest.mark.parametrize("front_cert, hold", [("good", False), ("good", True),
                                              ("self_signed", False)])
def test_https_provisioning(tmp_path, pki, platform, make_pile, front_cert, hold):
    front = TLSFront(pki.certs[front_cert],
                     ("127.0.0.1", int(platform.http_url.rsplit(":", 1)[1])), hold)
    front.start()
    try:
        url = "https://localhost:%d%s" % (front.port, PROVISION_PATH)
        pile = make_pile(provision_url=url, ca_file=pile_ca(tmp_path, pki), **FAST)
        if front_cert == "good":
            online(platform)
            assert "[prov] failed" not in pile.output()     # the first answer did
            assert platform.provision_count[DEV] == 1 and front.handshakes == [True]
            assert b"GET %s?" % PROVISION_PATH.encode() in front.received
            return
        pile.wait_output(r"\[prov\] failed: server certificate refused: The certificate is "
                         r"not correctly signed by the trusted CA", count=2)
        assert platform.provision_count[DEV] == 0      # the request never left the pile
        assert front.received == b"" and True not in front.handshakes
        assert len(front.handshakes) >= 2
    finally:
        front.close()


# --- the clock -------------------------------------------------------------------------

def test_tls_waits_for_a_trusted_clock(tmp_path, pki, platform, make_pile):
    """A pile whose clock is not trusted opens no TLS connection; the plain-http
    provisioning answer's Date sets its clock, and then it connects over TLS."""
    front = TLSFront(pki.certs["good"], ("127.0.0.1", int(platform.http_url.rsplit(":", 1)[1])))
    front.start()
    try:
        ca = pile_ca(tmp_path, pki, name="https")
        url = "https://localhost:%d%s" % (front.port, PROVISION_PATH)
        pile = make_pile("https", trusted=False, provision_url=url, ca_file=ca, **FAST)
        pile.wait_output(r"\[prov\] failed: TLS waits for the clock \(NTP\)", count=2)
        assert front.handshakes == [] and platform.provision_count[DEV] == 0
        pile.stop()
    finally:
        front.close()
    pile = make_pile("http", trusted=False, ca_file=pile_ca(tmp_path, pki, name="http"),
                     **FAST)                                        # http provisioning
    online(platform)
    out = pile.output()
    assert out.index("clock set from the provisioning answer's Date") < \
        out.index("(TLS) as %s" % DEV)
    wait_until(lambda: pile.status()["link"], 5, "link up")
