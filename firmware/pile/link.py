"""The platform link: an MQTT session that never stalls the loop and always comes back.

umqtt.simple encodes and decodes the MQTT packets; this module owns the transport.
The Link itself stands in for umqtt's socket (and socket module): umqtt's writes collect
in a buffer that an asyncio stream sends, and it is handed incoming bytes only once a
whole packet has arrived, so none of umqtt's blocking reads can block.  Acknowledgements (CONNACK, SUBACK, PUBACK)
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

from micropython import const
from umqtt import simple

from pile import log, net

_OUTBOX = const(24)          # messages queued at most
_INBOX = const(8)            # received messages waiting for on_message
_MAX_PACKET = const(8192)    # larger downlinks are skipped
_WRITE_WAIT_MS = const(3000)
_TX = const(1536)            # the transmit buffer: one packet at a time (it grows if need be)


class _Pending(Exception):
    """umqtt asked for bytes that have not arrived: the packet it wrote is complete."""


def _ignore(*args):
    pass


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


def wire(payload):
    """The payload as handed to umqtt, which counts its length with len(): text that is
    ASCII as it is (write() copies it into the packet: no bytes copy per message), other
    text as its UTF-8 bytes, so that the MQTT length counts bytes, not characters."""
    if isinstance(payload, str) and len(memoryview(payload)) != len(payload):
        return payload.encode()
    return payload


class Link:
    def __init__(self, cfg, provisioner, on_message, on_connect):
        self.cfg = cfg
        self.prov = provisioner
        self.on_message = on_message
        self.on_connect = on_connect
        self.outbox = []          # [topic, payload, qos, pid or None, again]
        self.inbox = []
        self.connected = False
        self.connects = 0
        self.last_error = None
        self._writer = None
        self._wake = asyncio.Event()
        # allocated once, at boot: a packet is written into it and sent from it, so no
        # message-sized block is wanted per message (they fragment a small heap)
        self._txbuf = bytearray(_TX)
        self._txn = 0
        simple.socket = self      # umqtt's socket module and socket: the methods below

    # --- umqtt's socket: writes collect in tx, reads come from whole packets in rx --------
    def socket(self, *args):
        return self

    def getaddrinfo(self, *args):
        return ((None,),)         # the address umqtt hands to connect(), which ignores it

    setblocking = connect = close = _ignore

    def write(self, data, n=None):
        data = memoryview(data)         # a str (umqtt's names and topics) as its UTF-8 bytes
        if n is None:
            n = len(data)
        else:
            data = data[:n]
        end = self._txn + n
        if end > len(self._txbuf):          # a packet larger than any so far: keep room
            buf = bytearray(end + 256)
            buf[:self._txn] = memoryview(self._txbuf)[:self._txn]
            self._txbuf = buf
        self._txbuf[self._txn:end] = data
        self._txn = end

    def read(self, n):
        if self.gated or len(self.rx) < n:
            raise _Pending()
        out, self.rx = self.rx[:n], self.rx[n:]
        return out

    # --- what the application calls -----------------------------------------------------
    def publish(self, topic, payload, qos=1, again=True):
        """Queue a message; again=False: not kept across a reconnect (its sender, the
        order journal, sends it again itself, so the platform gets no extra copy)."""
        if qos == 0 and not self.connected:
            return False
        box = self.outbox
        if len(box) >= _OUTBOX:     # drop the oldest QoS 0 message, else the oldest
            victim = 0
            for i, entry in enumerate(box):
                if entry[2] == 0:
                    victim = i
                    break
            log.warn("link", "outbox full: dropping %s" % box.pop(victim)[0])
        box.append([topic, wire(payload), qos, None, again])
        self._wake.set()
        return True

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
            self.connected = False
            if self._writer:
                asyncio.create_task(net.close(self._writer))
                self._writer = None
            # unacknowledged: sent again next session, unless the sender resends its own
            self.outbox = [entry for entry in self.outbox if entry[4]]
            for entry in self.outbox:
                entry[3] = None
            wait = delay + random.getrandbits(10) * delay // 2048
            log.info("link", "reconnect in %d ms" % wait)
            await asyncio.sleep_ms(wait)
            delay = min(delay * 2, self.cfg["backoff_max_ms"])

    async def _session(self, creds):
        cfg = self.cfg
        scheme, host, port, _ = net.split_url(creds["mqtt_server_addr"])
        log.info("link", "connecting to %s:%d as %s" % (host, port, creds["mqtt_id"]))
        self._reader, self._writer = await net.connect(host, port, cfg["connect_timeout_ms"],
                                                       scheme in ("ssl", "mqtts"))
        self._txn, self.rx, self.gated = 0, b"", False
        self._acks = {}
        self._skip = 0
        self._reader_error = None
        self._last_rx = time.ticks_ms()
        client = self._client = simple.MQTTClient(
            creds["mqtt_id"], host, port, creds["mqtt_account"], creds["mqtt_password"],
            cfg["keepalive_s"])
        client.set_callback(self._deliver)
        reader = asyncio.create_task(self._reader_loop())
        try:
            self._encode(client.connect)
            await self._flush()
            rc = await self._expect("connack")
            if rc in (4, 5):
                self.prov.forget("broker refused the credentials (CONNACK %d)" % rc)
                raise OSError("credentials refused")
            if rc:
                raise OSError("CONNACK %d" % rc)
            for name in ("topic_services", "topic_acks"):
                topic = cfg[name].format(pk=cfg["product_type"], dn=cfg["dev_id"], cmd="")
                self._encode(client.subscribe, topic, 1)
                await self._flush()
                if await self._expect(client.pid) == 0x80:
                    raise OSError("subscription to %s refused" % topic)
            self.connected = True
            self.connects += 1
            log.info("link", "connected (session %d)" % self.connects)
            left = len(self.outbox)
            try:
                self.on_connect()
            except Exception as e:
                log.error("link", "on_connect failed: %r" % e)
            self.outbox = self.outbox[left:] + self.outbox[:left]

            keep_ms = cfg["keepalive_s"] * 1000
            self._last_rx = last_ping = time.ticks_ms()
            while True:
                # cleared before the work, so a publish() made while handling a message
                # wakes the next round at once instead of waiting out the 50 ms
                self._wake.clear()
                if self._reader_error:
                    raise OSError(self._reader_error)
                while True:                 # send what is not sent yet, one packet at a time
                    box = self.outbox
                    for i, entry in enumerate(box):
                        if entry[3] is None:
                            break
                    else:
                        break
                    if client.pid >= 0xFFFF:
                        client.pid = 0
                    self._encode(client.publish, entry[0], entry[1], False, entry[2])
                    if entry[2]:
                        entry[3] = client.pid
                    else:
                        box.pop(i)          # QoS 0: sent is done
                    await self._flush()     # the outbox may change while this waits
                while self.inbox:
                    try:
                        self.on_message(*self.inbox.pop(0))
                    except Exception as e:
                        log.error("link", "on_message failed: %r" % e)
                    if not self.inbox and self.rx:
                        self._dispatch()    # messages held back while the inbox was full
                now = time.ticks_ms()
                # ping every half keepalive, busy or not: QoS 0 traffic alone gets no
                # answer, and the broker's silence must be told from a dead link
                if time.ticks_diff(now, last_ping) > keep_ms // 2:
                    self._encode(client.ping)
                    last_ping = now
                await self._flush()
                if time.ticks_diff(now, self._last_rx) > keep_ms * 3 // 2:
                    raise OSError("no packet from the broker for %d s" % (keep_ms * 3 // 2000))
                try:
                    await asyncio.wait_for_ms(self._wake.wait(), 50)
                except asyncio.TimeoutError:
                    pass
        finally:
            reader.cancel()

    def _encode(self, fn, *args):
        """Let umqtt write a packet into tx; it stops (_Pending) where it would wait."""
        self.gated = True
        try:
            fn(*args)
        except _Pending:
            pass
        self.gated = False

    async def _flush(self):
        if self._txn:
            n, self._txn = self._txn, 0
            self._writer.write(memoryview(self._txbuf)[:n])     # copied if not all sent
            try:
                await asyncio.wait_for_ms(self._writer.drain(), _WRITE_WAIT_MS)
            except asyncio.TimeoutError:
                raise OSError("peer stopped reading")

    async def _expect(self, key):
        """Wait until the reader has seen the acknowledgement `key`; return its code."""
        start = time.ticks_ms()
        while key not in self._acks:
            if self._reader_error:
                raise OSError(self._reader_error)
            if time.ticks_diff(time.ticks_ms(), start) > self.cfg["connect_timeout_ms"]:
                raise OSError("no answer from the broker")
            await asyncio.sleep_ms(10)
        return self._acks.pop(key)

    async def _reader_loop(self):
        """Read the stream into rx and dispatch whole packets, until the session ends."""
        buf = bytearray(256)    # one small buffer: no 1 KB block wanted per read
        view = memoryview(buf)
        try:
            while True:
                while len(self.inbox) >= _INBOX:
                    await asyncio.sleep_ms(10)
                n = await self._reader.readinto(buf)
                if not n:
                    raise OSError("connection closed by the broker")
                self.rx += view[:n]
                self._last_rx = time.ticks_ms()
                self._dispatch()
                self._wake.set()
        except Exception as e:
            self._reader_error = str(e) or repr(e)

    def _dispatch(self):
        while self.rx:
            rx = self.rx
            if self._skip:
                n = min(self._skip, len(rx))
                self.rx, self._skip = rx[n:], self._skip - n
                continue
            h = header(rx)
            if not h:
                return
            start, size = h[0], h[0] + h[1]
            kind = rx[0] & 0xF0
            if size > _MAX_PACKET:
                if len(rx) < 512:
                    return          # wait for the topic and packet id
                # skip it as it streams in; acknowledge it if it is a QoS 1 PUBLISH
                topic = "?"
                if kind == 0x30:
                    end = start + 2 + (rx[start] << 8 | rx[start + 1])
                    if end + 2 <= len(rx):
                        topic = repr(bytes(rx[start + 2:end]))
                        if rx[0] & 6:
                            self.write(bytes((0x40, 2, rx[end], rx[end + 1])))
                log.warn("link", "dropped a %d-byte packet on %s: over %d bytes"
                         % (size, topic, _MAX_PACKET))
                self._skip = size
                continue
            if len(rx) < size:
                return
            if kind == 0x30 and self.connected and len(self.inbox) >= _INBOX:
                return                      # the session loop calls again once it drains
            if kind in (0x30, 0xD0):
                self._client.wait_msg()     # whole packet buffered: cannot block
                continue
            packet, self.rx = rx[:size], rx[size:]
            if kind == 0x20:                # CONNACK
                self._acks["connack"] = packet[3]
            elif kind == 0x90:              # SUBACK
                self._acks[packet[2] << 8 | packet[3]] = packet[4]
            elif kind == 0x40:              # PUBACK: the message is delivered
                pid = packet[2] << 8 | packet[3]
                for i, entry in enumerate(self.outbox):
                    if entry[3] == pid:
                        self.outbox.pop(i)
                        break

    def _deliver(self, topic, msg):
        if len(self.inbox) >= _INBOX:        # only while connecting: see _dispatch
            log.warn("link", "inbox full: message on %s dropped" % topic)
            return
        self.inbox.append((topic.decode(), msg))
