"""A private mosquitto broker for host tests and bench demos.

This module owns everything about the test broker: its configuration file
(a plain listener, and a TLS one with a given certificate when asked: tls=),
its password file ($6$ SHA-512 lines, written here without mosquitto_passwd),
its ACL file (superuser "platform" may do anything; every other user only what
set_acl() granted it, nothing by default) and the lifetime of the mosquitto
process. It knows nothing of the protocol: which topics a device gets is the
platform's decision (tools/platform_sim.py, device_acl).
"""
import base64
import getpass
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time

PLATFORM_USER = "platform"
ACCESS = ("read", "write", "readwrite")
START_TIMEOUT = 10.0


def find_mosquitto():
    """Return the path of the mosquitto binary or raise with how to get it."""
    path = shutil.which("mosquitto")
    for candidate in (path, "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(
        "mosquitto not found: install it with `apt-get install mosquitto`")


def free_port(host="127.0.0.1"):
    """Ask the kernel for a TCP port that is free right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def hash_password(password, salt=None):
    """Mosquitto's "$6$" form: base64(salt) and base64(SHA512(password+salt))."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.sha512(password.encode() + salt).digest()
    b64 = base64.b64encode
    return "$6$%s$%s" % (b64(salt).decode(), b64(digest).decode())


def read_passwd(path):
    """Return {user: hash line part} from a mosquitto password file."""
    users = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                user, sep, hashed = line.strip().partition(":")
                if sep:
                    users[user] = hashed
    return users


def write_passwd(path, users):
    """Atomically replace the password file with {user: hash}."""
    text = "".join("%s:%s\n" % item for item in sorted(users.items()))
    _write_private(path, text)


def set_user(path, user, password):
    """Add a user to a password file, or give it a new password."""
    if ":" in user or not user:
        raise ValueError("bad MQTT user name %r" % user)
    users = read_passwd(path)
    users[user] = hash_password(password)
    write_passwd(path, users)


def remove_user(path, user):
    """Remove a user from a password file; return whether it was there."""
    users = read_passwd(path)
    found = users.pop(user, None) is not None
    write_passwd(path, users)
    return found


def acl_text(grants=None):
    """The ACL file: the platform may do anything; each user in grants
    ({user: [(access, topic filter), ...]}) exactly its rules; anyone else nothing.

    mosquitto denies what no line allows: a denied PUBLISH is acknowledged and
    dropped, a delivery the subscriber may not read is skipped.
    """
    lines = ["user %s" % PLATFORM_USER, "topic readwrite #"]
    for user, rules in sorted((grants or {}).items()):
        lines += ["", "user %s" % user]
        lines += ["topic %s %s" % rule for rule in rules]
    return "\n".join(lines) + "\n"


def check_rules(user, rules):
    """Raise ValueError unless user and rules can be written as ACL lines."""
    if not user or user == PLATFORM_USER or _spaced(user):
        raise ValueError("bad MQTT user name for an ACL %r" % user)
    for access, topic in rules:
        if access not in ACCESS:
            raise ValueError("bad ACL access %r" % access)
        if not topic or _spaced(topic):
            raise ValueError("bad ACL topic %r" % topic)


def _spaced(text):
    """A blank or control character would end or split the ACL line."""
    return any(c.isspace() or ord(c) < 32 for c in text)


def _write_private(path, text):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Broker:
    """One mosquitto process listening on host:port, configured in workdir."""

    def __init__(self, workdir, port=None, host="127.0.0.1", tls=None):
        """tls=(certfile, keyfile): a second listener, TLS on tls_port, with that server
        certificate (the chain the clients are given in certfile)."""
        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        self.tls = tls
        self.tls_port = free_port(host) if tls else None
        self.conf_path = os.path.join(self.workdir, "mosquitto.conf")
        self.passwd_path = os.path.join(self.workdir, "passwd")
        self.acl_path = os.path.join(self.workdir, "acl")
        self.log_path = os.path.join(self.workdir, "mosquitto.log")
        self.platform_password = secrets.token_hex(16)
        self.grants = {}             # user -> [(access, topic filter)]
        self.proc = None
        self._write_files()

    @property
    def url(self):
        return "mqtt://127.0.0.1:%d" % self.port

    @property
    def admin(self):
        """(user, password) of the superuser."""
        return PLATFORM_USER, self.platform_password

    def _write_files(self):
        write_passwd(self.passwd_path, {})
        set_user(self.passwd_path, PLATFORM_USER, self.platform_password)
        _write_private(self.acl_path, acl_text(self.grants))
        _write_private(self.conf_path, self._conf_text())

    def _conf_text(self):
        lines = [
            "listener %d %s" % (self.port, self.host),
            "allow_anonymous false",
            "password_file " + self.passwd_path,
            "acl_file " + self.acl_path,
            "pid_file " + os.path.join(self.workdir, "mosquitto.pid"),
            "persistence false",
            "log_dest file " + self.log_path,
            "log_type all",
            "log_timestamp_format %H:%M:%S",
            "connection_messages true",
            # forward at once, as a production broker tuned for commands would
            "set_tcp_nodelay true",
            # When run as root mosquitto would drop to user "mosquitto",
            # which cannot read a private workdir: stay who we are.
            "user " + getpass.getuser(),
        ]
        if self.tls:        # last: the lines after a listener line are that listener's
            lines += ["listener %d %s" % (self.tls_port, self.host),
                      "certfile " + self.tls[0], "keyfile " + self.tls[1]]
        return "\n".join(lines) + "\n"

    def set_user(self, user, password):
        """Add or change a user; call reload() to make it count.  A user may use no
        topic until set_acl() grants it some."""
        set_user(self.passwd_path, user, password)

    def set_acl(self, user, rules):
        """Grant user exactly rules, [(access, topic filter)], replacing what it had;
        call reload() to make it count."""
        rules = [tuple(rule) for rule in rules]
        check_rules(user, rules)
        self.grants[user] = rules
        _write_private(self.acl_path, acl_text(self.grants))

    def remove_user(self, user):
        """Remove a user and its ACL; call reload() to make it count."""
        if self.grants.pop(user, None) is not None:
            _write_private(self.acl_path, acl_text(self.grants))
        return remove_user(self.passwd_path, user)

    def users(self):
        return sorted(read_passwd(self.passwd_path))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        if self.running():
            return self
        stderr = open(os.path.join(self.workdir, "mosquitto.stderr"), "ab")
        with stderr:
            self.proc = subprocess.Popen(
                [find_mosquitto(), "-c", self.conf_path],
                stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
        self._wait_listening()
        return self

    def _wait_listening(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail("mosquitto exited with code %s" % self.proc.returncode)
            if _accepts(self.host, self.port) and \
                    (not self.tls or _accepts(self.host, self.tls_port)):
                return
            time.sleep(0.02)
        self._fail("mosquitto did not listen on port %d within %.0f s"
                   % (self.port, START_TIMEOUT))

    def _fail(self, why):
        self.stop()
        raise RuntimeError("%s\n--- log tail ---\n%s" % (why, self.log_tail()))

    def log_tail(self, lines=30):
        text = ""
        for name in ("mosquitto.stderr", "mosquitto.log"):
            path = os.path.join(self.workdir, name)
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    text += f.read()
        return "\n".join(text.splitlines()[-lines:])

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def reload(self, timeout=5.0):
        """SIGHUP: re-read password and ACL files; return once it is done.

        mosquitto is single-threaded, so once "Reloading config" is in the
        log every later connection is checked against the new files.
        """
        if not self.running():
            return
        before = self._log_count("Reloading config")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self._log_count("Reloading config") <= before:
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto did not reload\n" + self.log_tail())
            time.sleep(0.01)

    def _log_count(self, text):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read().count(text)
        except FileNotFoundError:
            return 0

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _accepts(host, port):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False
