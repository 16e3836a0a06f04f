"""The platform link: an MQTT session that never stalls the loop and always comes back.

umqtt.simple encodes and decodes the MQTT packets; this module owns the transport.
umqtt's socket is replaced by a _Pipe: its writes collect in a buffer that an asyncio
stream sends, and it is handed incoming bytes only once a whole packet has arrived, so
none of umqtt's blocking reads can block.  Acknowledgements (CONNACK, SUBACK, PUBACK)
are read here; PUBLISH and PINGRESP go to umqtt, which calls back and answers PUBACK.

Failures handled (each ends the session and reconnects with back-off and jitter): DNS
failure, connection refused or reset, credentials refused (CONNACK 4/5: the stored
credentials are dropped and provisioning runs again), a broker that accepts TCP and
never answers (CONNACK timeout), a silent link (no packet for 1.5 keepalive), a peer
that stops reading (bounded write wait), a malformed packet length.  A downlink over
MAX_PACKET bytes is skipped as it streams in (acknowledged, logged, never buffered).

After a reconnect the messages queued by on_connect (the announcements) go out before
the ones left over from the last session.

publish() only queues: QoS 1 messages stay in the outbox until PUBACK and are sent
again after a reconnect; QoS 0 messages are dropped while offline.  Incoming messages
wait in a small inbox; while it is full the link stops reading (TCP pushes back on the
broker) rather than drop a message it has acknowledged.
"""
import asyncio
import random
import time

from umqtt import simple

from pile import log, net

OUTBOX = 24
INBOX = 8
MAX_PACKET = 8192
WRITE_WAIT_MS = 3000


class _Pending(Exception):
    """umqtt asked for bytes that have not arrived: the packet it wrote is complete."""


class _Pipe:
    def __init__(self):
        self.tx = bytearray()
        self.rx = b""
        self.gated = True

    def write(self, data, n=None):
        self.tx += data if n is None else memoryview(data)[:n]

    def read(self, n):
        if self.gated or len(self.rx) < n:
            raise _Pending()
        out, self.rx = self.rx[:n], self.rx[n:]
        return out

    def setblocking(self, flag):
        pass

    def connect(self, addr):
        pass

    def close(self):
        pass


class _Sockets:
    """Stands in for the socket module inside umqtt.simple."""
    pipe = None

    @classmethod
    def socket(cls, *args):
        return cls.pipe

    @staticmethod
    def getaddrinfo(host, port, *args):
        return [(0, 0, 0, "", (host, port))]


simple.socket = _Sockets


def header(buf):
    """(fixed header bytes, remaining length) of the packet at the start of buf, or None
    while the header is incomplete; ValueError when the length field is malformed."""
    n = shift = 0
    for i in range(1, min(len(buf), 5)):
        n |= (buf[i] & 0x7F) << shift
        if not buf[i] & 0x80:
            return 1 + i, n
        shift += 7
    if len(buf) >= 5:
        raise ValueError("malformed packet length")
    return None


def packet_size(buf):
    """Length of the first whole MQTT packet in buf, or 0 when it is not all there."""
    h = header(buf)
    return h[0] + h[1] if h and len(buf) >= h[0] + h[1] else 0


class Link:
    def __init__(self, cfg, provisioner, on_message, on_connect):
        self.cfg = cfg
        self.prov = provisioner
        self.on_message = on_message
        self.on_connect = on_connect
        self.outbox = []          # [topic, payload, qos, pid or None]
        self.inbox = []
        self.connected = False
        self.connects = 0
        self.last_error = None
        self._client = None
        self._wake = asyncio.Event()

    # --- what the application calls -----------------------------------------------------
    def publish(self, topic, payload, qos=1):
        if qos == 0 and not self.connected:
            return False
        if len(self.outbox) >= OUTBOX:
            victim = self._victim()
            log.warn("link", "outbox full: dropping %s" % self.outbox[victim][0])
            self.outbox.pop(victim)
        self.outbox.append([topic, payload, qos, None])
        self._wake.set()
        return True

    def _victim(self):
        for i, entry in enumerate(self.outbox):
            if entry[2] == 0:
                return i
        return 0

    # --- the session loop ---------------------------------------------------------------
    async def run(self):
        delay = self.cfg["backoff_min_ms"]
        while True:
            try:
                await self._session(await self.prov.creds())
            except Exception as e:  # every failure ends the session the same way
                self.last_error = "%s: %s" % (type(e).__name__, e) if str(e) else repr(e)
                log.warn("link", "session ended: %s" % self.last_error)
                if self.connected:
                    delay = self.cfg["backoff_min_ms"]
            self._drop()
            wait = delay + random.getrandbits(10) * delay // 2048
            log.info("link", "reconnect in %d ms" % wait)
            await asyncio.sleep_ms(wait)
            delay = min(delay * 2, self.cfg["backoff_max_ms"])

    def _drop(self):
        self.connected = False
        if self._writer:
            w, self._writer = self._writer, None
            asyncio.create_task(net.close(w))
        for entry in self.outbox:
            entry[3] = None

    _writer = None

    async def _session(self, creds):
        scheme, host, port, _ = net.split_url(creds["mqtt_server_addr"])
        log.info("link", "connecting to %s:%d as %s" % (host, port, creds["mqtt_id"]))
        reader, self._writer = await net.connect(host, port, self.cfg["connect_timeout_ms"],
                                                 scheme in ("ssl", "mqtts"))
        pipe = _Pipe()
        _Sockets.pipe = pipe
        client = simple.MQTTClient(creds["mqtt_id"], host, port, creds["mqtt_account"],
                                   creds["mqtt_password"], self.cfg["keepalive_s"])
        client.set_callback(self._deliver)
        self._pipe, self._client, self._reader = pipe, client, reader
        self._acks = {}
        self._skip = 0
        self._encode(client.connect)
        await self._flush()
        rc = await self._expect("connack", self.cfg["connect_timeout_ms"])
        if rc in (4, 5):
            self.prov.forget("broker refused the credentials (CONNACK %d)" % rc)
            raise OSError("credentials refused")
        if rc:
            raise OSError("CONNACK %d" % rc)
        for name in ("topic_services", "topic_acks"):
            self._encode(client.subscribe, self._topic(name), 1)
            await self._flush()
            if await self._expect(client.pid, self.cfg["connect_timeout_ms"]) == 0x80:
                raise OSError("subscription to %s refused" % self._topic(name))
        self.connected = True
        self.connects += 1
        log.info("link", "connected (session %d)" % self.connects)
        left = len(self.outbox)
        try:
            self.on_connect()
        except Exception as e:
            log.error("link", "on_connect failed: %r" % e)
        self.outbox = self.outbox[left:] + self.outbox[:left]
        await self._serve()

    def _topic(self, name):
        return self.cfg[name].format(pk=self.cfg["product_type"], dn=self.cfg["dev_id"], cmd="")

    def _encode(self, fn, *args):
        self._pipe.gated = True
        try:
            fn(*args)
        except _Pending:
            pass
        finally:
            self._pipe.gated = False

    async def _flush(self):
        if self._pipe.tx:
            data, self._pipe.tx = bytes(self._pipe.tx), bytearray()
            self._writer.write(data)
            try:
                await asyncio.wait_for_ms(self._writer.drain(), WRITE_WAIT_MS)
            except asyncio.TimeoutError:
                raise OSError("peer stopped reading")

    async def _expect(self, key, timeout_ms):
        """Read packets until the acknowledgement `key` arrives; return its code."""
        start = time.ticks_ms()
        while key not in self._acks:
            left = timeout_ms - time.ticks_diff(time.ticks_ms(), start)
            if left <= 0:
                raise OSError("no answer from the broker")
            await self._read(left)
        return self._acks.pop(key)

    async def _read(self, timeout_ms):
        try:
            chunk = await asyncio.wait_for_ms(self._reader.read(1024), timeout_ms)
        except asyncio.TimeoutError:
            return False
        if not chunk:
            raise OSError("connection closed by the broker")
        self._pipe.rx += chunk
        self._last_rx = time.ticks_ms()
        self._dispatch()
        return True

    def _dispatch(self):
        pipe = self._pipe
        while pipe.rx:
            if self._skip:
                n = min(self._skip, len(pipe.rx))
                pipe.rx, self._skip = pipe.rx[n:], self._skip - n
                continue
            try:
                h = header(pipe.rx)
            except ValueError as e:
                raise OSError(str(e))
            if not h:
                return
            size = h[0] + h[1]
            if size > MAX_PACKET:
                if len(pipe.rx) < 512:
                    return          # wait for the topic and packet id
                self._oversize(h[0], size)
                continue
            if len(pipe.rx) < size:
                return
            kind = pipe.rx[0] & 0xF0
            if kind == 0x30 and self.connected and len(self.inbox) >= INBOX:
                return                      # _serve calls again once the inbox drains
            if kind in (0x30, 0xD0):
                self._client.wait_msg()     # whole packet buffered: cannot block
                continue
            packet, pipe.rx = pipe.rx[:size], pipe.rx[size:]
            if kind == 0x20:
                self._acks["connack"] = packet[3]
            elif kind == 0x90:
                self._acks[packet[2] << 8 | packet[3]] = packet[4]
            elif kind == 0x40:
                self._puback(packet[2] << 8 | packet[3])

    def _oversize(self, start, size):
        """Skip a packet too big to hold; acknowledge it if it is a QoS 1 PUBLISH."""
        rx, topic = self._pipe.rx, "?"
        if rx[0] & 0xF0 == 0x30:
            end = start + 2 + (rx[start] << 8 | rx[start + 1])
            if end + 2 <= len(rx):
                topic = repr(bytes(rx[start + 2:end]))
                if rx[0] & 6:
                    self._pipe.tx += bytes((0x40, 2, rx[end], rx[end + 1]))
        log.warn("link", "dropped a %d-byte packet on %s: over %d bytes"
                 % (size, topic, MAX_PACKET))
        self._skip = size

    def _puback(self, pid):
        for i, entry in enumerate(self.outbox):
            if entry[3] == pid:
                self.outbox.pop(i)
                return

    def _deliver(self, topic, msg):
        if len(self.inbox) >= INBOX:        # only while connecting: see _dispatch
            log.warn("link", "inbox full: message on %s dropped" % topic)
            return
        self.inbox.append((topic.decode(), msg))

    async def _serve(self):
        keep_ms = self.cfg["keepalive_s"] * 1000
        self._last_rx = last_ping = time.ticks_ms()
        self._reader_error = None
        reader = asyncio.create_task(self._reader_loop())
        try:
            while True:
                # cleared before the work, so a publish() made while handling a message
                # wakes the next round at once instead of waiting out the 50 ms
                self._wake.clear()
                if reader.done():
                    raise OSError(self._reader_error or "reader stopped")
                self._send_outbox()
                while self.inbox:
                    try:
                        self.on_message(*self.inbox.pop(0))
                    except Exception as e:
                        log.error("link", "on_message failed: %r" % e)
                    if not self.inbox and self._pipe.rx:
                        self._dispatch()    # messages held back while the inbox was full
                now = time.ticks_ms()
                # ping every half keepalive, busy or not: QoS 0 traffic alone gets no
                # answer, and the broker's silence must be told from a dead link
                if time.ticks_diff(now, last_ping) > keep_ms // 2:
                    self._encode(self._client.ping)
                    last_ping = now
                if self._pipe.tx:
                    await self._flush()
                if time.ticks_diff(now, self._last_rx) > keep_ms * 3 // 2:
                    raise OSError("no packet from the broker for %d s" % (keep_ms * 3 // 2000))
                try:
                    await asyncio.wait_for_ms(self._wake.wait(), 50)
                except asyncio.TimeoutError:
                    pass
        finally:
            reader.cancel()

    _reader_error = None

    async def _reader_loop(self):
        try:
            while True:
                while len(self.inbox) >= INBOX:
                    await asyncio.sleep_ms(10)
                await self._read(1000)
                if self.inbox or self._pipe.tx:
                    self._wake.set()
        except Exception as e:
            self._reader_error = str(e) or repr(e)

    def _send_outbox(self):
        for entry in self.outbox:
            if entry[3] is None:
                if self._client.pid >= 0xFFFF:
                    self._client.pid = 0
                self._encode(self._client.publish, entry[0], entry[1], False, entry[2])
                entry[3] = self._client.pid if entry[2] else -1
        self.outbox = [e for e in self.outbox if e[3] != -1]
