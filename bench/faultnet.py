"""The network between one MQTT client and the broker, failing on demand (for bench_link.py).

Path(broker_port) chains two proxies on 127.0.0.1:
    client -> netem.Proxy (tools/netem.py) -> Delay -> broker
and set(mode) switches them together:
  pass       everything flows
  down       the broker is gone: connections closed, new ones refused (netem "down")
  blackhole  connections stay open and new ones are accepted, nothing moves (netem)
  slow       the broker is slow to answer: every byte from it reaches the client
             SLOW_MS late (Delay), in order; the client's bytes go at once
Path.port is where the client connects.  Delay is a thread per direction and connection:
for a handful of benchmark clients, not a load tool.
"""
import collections
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tools"))

from netem import Proxy  # noqa: E402

SLOW_MS = 1500
MODES = ("pass", "down", "blackhole", "slow")


class Delay:
    """A TCP proxy that holds what the server sends for `delay` seconds (0: none)."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.delay = 0.0
        self._socks = set()
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, 2)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._socks.update((client, server))
            pending = collections.deque()
            ready = threading.Condition()
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._hold, args=(server, client, pending, ready),
                             daemon=True).start()
            threading.Thread(target=self._release, args=(client, pending, ready),
                             daemon=True).start()

    def _pump(self, src, dst):
        """Client -> server, at once."""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        self._drop(src, dst)

    def _hold(self, src, dst, pending, ready):
        """Server -> queue, each chunk stamped with when it may go."""
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            with ready:
                pending.append((time.monotonic() + self.delay, data))
                ready.notify()
            if not data:
                return

    def _release(self, dst, pending, ready):
        """Queue -> client, each chunk when its time has come, in order."""
        while True:
            with ready:
                while not pending:
                    ready.wait()
                due, data = pending.popleft()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                if not data:
                    raise OSError("server closed")
                dst.sendall(data)
            except OSError:
                self._drop(dst)
                return

    def _drop(self, *socks):
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
            with self._lock:
                self._socks.discard(s)

    def close(self):
        self._closed = True
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        self._drop(*socks)


class Path:
    def __init__(self, broker_port):
        self.delay = Delay(broker_port)
        self.netem = Proxy("127.0.0.1", self.delay.port)
        self.port = self.netem.port
        self.mode = "pass"

    def set(self, mode):
        if mode not in MODES:
            raise ValueError("mode must be one of %s" % (MODES,))
        self.delay.delay = SLOW_MS / 1000 if mode == "slow" else 0.0
        self.netem.set_mode("pass" if mode == "slow" else mode)
        self.mode = mode

    def close(self):
        self.netem.close()
        self.delay.close()
