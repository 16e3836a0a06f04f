"""A TCP proxy on 127.0.0.1 that can fail on demand, for network tests.

This module owns the proxy thread and its sockets. Point the device at
Proxy.port instead of the broker, then switch modes:

  pass       forward both ways
  down       listener closed (connection refused); existing connections closed
  reset      existing connections reset (RST); new ones accepted, then reset
  blackhole  connections stay open, new ones are accepted, nothing moves either
             way; queued bytes are kept (not lost) and flow again on "pass"

One thread runs everything with select(); set_mode() returns once the mode is
in force; close() stops the thread and closes every socket.
"""
import queue
import select
import socket
import struct
import threading

MODES = ("pass", "down", "reset", "blackhole")
CONNECT_TIMEOUT = 2.0
SEND_TIMEOUT = 5.0


def _rst_close(sock):
    """Close so that the peer sees a reset, not an orderly end."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class Proxy:
    def __init__(self, target_host, target_port, listen_port=0):
        self.target = (target_host, target_port)
        self.mode = "pass"
        self._peer = {}                      # socket -> the other end
        self._requests = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._listener = self._listen(listen_port)
        self.port = self._listener.getsockname()[1]
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="netem", daemon=True)
        self._thread.start()

    # -- public ---------------------------------------------------------

    def set_mode(self, mode):
        if mode not in MODES:
            raise ValueError("mode must be one of %s" % (MODES,))
        self._call(mode)

    def connections(self):
        """Number of client connections currently held."""
        return len(self._peer) // 2

    def close(self):
        if self._closed or not self._thread.is_alive():
            return
        self._call("close")
        self._thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the proxy thread -----------------------------------------------

    def _call(self, request):
        done = threading.Event()
        self._requests.put((request, done))
        self._wake_w.send(b"x")
        if not done.wait(5):
            raise RuntimeError("netem thread did not answer")

    def _listen(self, port):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(16)
        return s

    def _run(self):
        try:
            while not self._closed:
                self._step()
        finally:
            self._drop_all(_rst_close)
            if self._listener:
                self._listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def _step(self):
        readers = [self._wake_r]
        if self._listener:
            readers.append(self._listener)
        if self.mode == "pass":
            readers.extend(self._peer)
        ready, _, _ = select.select(readers, [], [], 1.0)
        for sock in ready:
            if sock is self._wake_r:
                self._handle_requests()
            elif sock is self._listener:
                self._accept()
            elif sock in self._peer and self.mode == "pass":
                self._forward(sock)

    def _handle_requests(self):
        self._wake_r.recv(1024)
        while not self._requests.empty():
            request, done = self._requests.get()
            if request == "close":
                self._closed = True
            else:
                self._apply(request)
            done.set()

    def _apply(self, mode):
        self.mode = mode
        if mode == "down":
            if self._listener:
                self._listener.close()
                self._listener = None
            self._drop_all(socket.socket.close)
            return
        if self._listener is None:
            self._listener = self._listen(self.port)
        if mode == "reset":
            self._drop_all(_rst_close)

    def _accept(self):
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        if self.mode == "reset":
            _rst_close(client)
            return
        try:
            upstream = socket.create_connection(self.target, CONNECT_TIMEOUT)
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.settimeout(SEND_TIMEOUT)
        self._peer[client] = upstream
        self._peer[upstream] = client

    def _forward(self, sock):
        other = self._peer[sock]
        try:
            data = sock.recv(65536)
            if data:
                other.sendall(data)
                return
        except OSError:
            pass
        self._drop(sock, socket.socket.close)

    def _drop(self, sock, closer):
        other = self._peer.pop(sock, None)
        self._peer.pop(other, None)
        closer(sock)
        if other is not None:
            closer(other)

    def _drop_all(self, closer):
        for sock in list(self._peer):
            if sock in self._peer:
                self._drop(sock, closer)
