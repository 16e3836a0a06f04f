"""The platform link: an MQTT session that never stalls the loop and always comes back.

umqtt.simple encodes and decodes the MQTT packets; this module owns the transport: TCP,
or TLS for ssl:// and mqtts:// (pile/net.py checks the broker's certificate; the CONNECT
is the first write, so the handshake is over before the password leaves).
The Link itself stands in for umqtt's socket (and socket module): umqtt's writes collect
in a transmit buffer that an asyncio stream sends, and it is handed incoming bytes only
once a whole packet has arrived, so none of umqtt's blocking reads can block.
Acknowledgements (CONNACK, SUBACK, PUBACK) are read here; PUBLISH and PINGRESP go to
umqtt, which calls back and answers PUBACK.

The session is persistent (clean session off, the provisioned client id): the broker
keeps the pile's subscriptions and the QoS 1 services sent while it was away, and
delivers them after the next CONNACK.  Received messages wait in a small inbox; while it
is full the link stops reading (TCP pushes back on the broker), also while connecting,
so a backlog is never dropped after umqtt has acknowledged it.

Failures handled (each ends the session and reconnects): the board's network going down
(net_up(), asked every round: no waiting for a timeout), DNS failure, connection refused
or reset, the broker's certificate refused (TLS), credentials refused (CONNACK 4/5: the
stored credentials are dropped and provisioning runs again), a broker that accepts TCP
and never answers (CONNACK timeout),
a silent link (nothing from the broker for one keepalive, though pinged at half of it),
a peer that stops reading (bounded write wait), a malformed packet length.  A downlink
over MAX_PACKET bytes is skipped as it streams in (acknowledged, logged, never buffered).
Reconnects wait a back-off doubling from backoff_min_ms to backoff_max_ms, each wait
drawn between half and all of it (jitter: many piles do not come back in step); the
network coming back ends the wait at once.  When the stored broker cannot be reached for
reprovision_s, provisioning runs again (PROTOCOL.md section 1: the platform may have
moved its broker).

publish() only queues, into the outbox (pile/outbox.py: one preallocated buffer, QoS 1
messages kept until PUBACK and sent again after a reconnect); QoS 0 messages are dropped
while offline.  After a reconnect the messages queued by on_connect (the announcements)
go out first.
"""
import asyncio
import random
import time

from micropython import const
from umqtt import simple

from pile import log, net
from pile.outbox import PID, QOS, Outbox

_BOX = const(3072)           # the outbox's bytes
_INBOX = const(8)            # received messages waiting for on_message
_RX_HOLD = const(2048)       # with the inbox full, read on until rx holds this much
_MAX_PACKET = const(8192)    # larger downlinks are skipped
_WRITE_WAIT_MS = const(3000)
_TX = const(256)             # the transmit buffer: headers and topics (payloads go as they are)


# umqtt asked for bytes that have not arrived (read()): the packet it wrote is complete.
# One instance, raised again and again without allocating; a built-in type, because only
# a built-in exception's traceback is cleared by "__traceback__ = None" (an instance of
# our own subclass would keep every raise's traceback: a leak)
_PENDING = EOFError("pending")


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


class Link:
    def __init__(self, cfg, provisioner, board, on_message, on_connect):
        self.cfg, self.prov, self.board = cfg, provisioner, board
        self.on_message = on_message    # async on_message(topic, payload)
        self.on_connect = on_connect
        self.out = Outbox(_BOX)         # allocated once, at boot
        self.inbox = []
        self.connected = False
        self.connects = 0
        self.last_error = None
        self.unreached = None           # ticks since the stored broker was last reached
        self._writer = None
        self._wake = asyncio.Event()    # set: something to send or handle, go round now
        self._txbuf = bytearray(_TX)    # small pieces of a packet collect here
        self._txn = 0
        self._out = False               # part of the packet being encoded left tx
        self._rpos = 0                  # umqtt's read position in rx (read())
        self._cutn = 0                  # bytes handled at the head of rx, not yet cut
        self.subscribed = False         # the broker's session holds our subscriptions
        simple.socket = self      # umqtt's socket module and socket: the methods below

    # --- umqtt's socket: writes collect in tx, reads come from whole packets in rx --------
    def socket(self, *args):
        return self

    def getaddrinfo(self, *args):
        return ((None,),)         # the address umqtt hands to connect(), which ignores it

    setblocking = connect = close = _ignore

    def write(self, data, n=None):
        """umqtt's writes: small pieces (headers, topics) collect in tx; a larger one (a
        payload, from the outbox) goes to the stream as it is, after what tx holds."""
        data = memoryview(data)         # a str (umqtt's names and topics) as its UTF-8 bytes
        if n is not None:
            data = data[:n]
        end = self._txn + len(data)
        if end > _TX:
            self._push()
            self._out = True            # part of the packet is on its way
            if len(data) > _TX:
                net.write(self._writer, data)   # copied by the stream only if not all sent
                return
            end = len(data)
        self._txbuf[self._txn:end] = data
        self._txn = end

    def _push(self):
        """Hand what tx holds to the stream (pile.net.write: out of memory before any
        of it is sent, MemoryError and tx keeps it)."""
        n = self._txn
        if n:
            net.write(self._writer, memoryview(self._txbuf)[:n])
            self._txn = 0

    def read(self, n):
        """umqtt's reads, from rx at _rpos: rx is cut only once its packet is handled
        whole (_dispatch), so a MemoryError half way leaves the packet to be read again."""
        p = self._rpos
        if self.gated or len(self.rx) < p + n:
            _PENDING.__traceback__ = None
            raise _PENDING
        self._rpos = p + n
        return self.rx[p:p + n]

    # --- the outbox -------------------------------------------------------------------------
    def publish(self, topic, payload, qos=1, again=True):
        """Queue a message (payload: str or bytes-like, copied at once); again=False: not
        kept across a reconnect (its sender sends it again itself)."""
        if qos == 0 and not self.connected:
            return False
        if not self.out.put(topic, payload, qos, again):
            return False
        self._wake.set()
        return True

    # --- the session loop ---------------------------------------------------------------
    async def run(self):
        delay = self.cfg["backoff_min_ms"]
        while True:                 # nothing ends it: out of memory between two sessions
            try:                    # (say) is tried again a moment later
                delay = await self._round(delay)
            except Exception:
                await asyncio.sleep_ms(200)

    async def _round(self, delay):
        """One session (when the network is up) and the back-off after it."""
        if self.board.net_up():
            later = False           # a wait that is nobody's fault (the clock for TLS)
            try:
                await self._session(await self.prov.creds())
            except Exception as e:  # every failure ends the session the same way
                later = isinstance(e, net.Later)
                try:
                    self.last_error = "%s: %s" % (type(e).__name__, e) if str(e) else repr(e)
                except Exception:
                    self.last_error = "out of memory"
                log.warn("link", "session ended: %s" % self.last_error)
                if self.connected:
                    delay = self.cfg["backoff_min_ms"]
            self._down(later)
        wait = delay // 2 + random.getrandbits(16) * delay // 131072
        log.info("link", "reconnect in %d ms" % wait)
        was_up, t0 = self.board.net_up(), time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), t0) < wait:
            await asyncio.sleep_ms(50)
            if self.board.net_up() and not was_up:
                break                   # the network is back: connect now
            was_up = self.board.net_up()
        return min(delay * 2, self.cfg["backoff_max_ms"])

    def _down(self, later=False):
        """The session is over: forget what only it knew; keep what is sent again.
        later: it could not start for a reason that is not the broker's (the clock)."""
        self.connected = False
        if self._writer:
            w, self._writer = self._writer, None
            net.close(w)
        self.out.session_over()
        if later:
            self.unreached = None
        elif self.unreached is None:
            self.unreached = time.ticks_ms()
        elif time.ticks_diff(time.ticks_ms(), self.unreached) > \
                self.cfg["reprovision_s"] * 1000 and self.prov.stored:
            self.prov.forget("broker not reached for %d s" % self.cfg["reprovision_s"])
            self.unreached = None

    async def _session(self, creds):
        cfg = self.cfg
        scheme, host, port, _ = net.split_url(creds["mqtt_server_addr"])
        ca = net.ca_file(scheme, cfg, self.board.time_trusted())    # TLS: checked, or refused
        log.info("link", "connecting to %s:%d%s as %s"
                 % (host, port, " (TLS)" if ca else "", creds["mqtt_id"]))
        self._reader, self._writer = await net.connect(host, port, cfg["connect_timeout_ms"], ca)
        self._txn, self.rx, self.gated = 0, b"", False
        self._acks = {}
        self._present = 0
        self._skip = 0
        self._reader_error = None
        self._last_rx = time.ticks_ms()
        client = self._client = simple.MQTTClient(
            creds["mqtt_id"], host, port, creds["mqtt_account"], creds["mqtt_password"],
            cfg["keepalive_s"])
        client.set_callback(self._deliver)
        self._encode(client.connect, False)             # a persistent session
        # over TLS this first write runs the handshake, alone (the reader starts after it):
        # the CONNECT, with the password, leaves only for a broker whose certificate passed
        await self._flush(cfg["connect_timeout_ms"])
        reader = asyncio.create_task(self._reader_loop())
        ticker = None
        try:
            rc = await self._expect("connack")
            if rc in (4, 5):
                self.prov.forget("broker refused the credentials (CONNACK %d)" % rc)
                raise OSError("credentials refused")
            if rc:
                raise OSError("CONNACK %d" % rc)
            self.unreached = None
            # the broker kept the session: its subscriptions too, if they were all made in
            # it (a session cut between CONNACK and SUBACK is kept without them)
            keep, self.subscribed = self._present and self.subscribed, False
            for name in () if keep else ("topic_services", "topic_acks"):
                topic = cfg[name].format(pk=cfg["product_type"], dn=cfg["dev_id"], cmd="")
                self._encode(client.subscribe, topic, 1)
                await self._flush()
                if await self._expect(client.pid) == 0x80:
                    raise OSError("subscription to %s refused" % topic)
            self.subscribed = True
            self.connected = True
            self.connects += 1
            log.info("link", "connected (session %d)" % self.connects)
            self.out.lead = len(self.out.q)     # what on_connect queues goes out first
            try:
                self.on_connect()
            except Exception as e:
                log.error("link", "on_connect failed: %r" % e)
            ticker = asyncio.create_task(self._tick())
            await self._loop(client)
        finally:
            reader.cancel()
            if ticker:
                ticker.cancel()

    async def _loop(self, client):
        keep_ms = self.cfg["keepalive_s"] * 1000
        last_ping = time.ticks_ms()
        while True:
            # cleared before the work, so a publish() made while handling a message
            # wakes the next round at once instead of waiting out the 50 ms
            self._wake.clear()
            try:
                if self._reader_error:
                    raise OSError(self._reader_error)
                if not self.board.net_up():
                    raise OSError("network down")
                await self._send(client)
                await self._drain()
                now = time.ticks_ms()
                # ping at half the keepalive, busy or not: QoS 0 traffic alone gets no
                # answer, and a broker that says nothing for a whole keepalive is gone
                if time.ticks_diff(now, last_ping) > keep_ms // 2:
                    self._encode(client.ping)
                    last_ping = now
                await self._flush()
                if time.ticks_diff(now, self._last_rx) > keep_ms:
                    raise OSError("no packet from the broker for %d s" % (keep_ms // 1000))
            except MemoryError:     # nothing half sent (that is net.BROKEN): the round
                pass                # goes again once memory is back; the session stays
            try:                    # the reader, publish() or the ticker (50 ms) sets it
                await self._wake.wait()     # (a wait is a small generator: out of
            except MemoryError:             # memory, a 5 ms sleep, which is not)
                await asyncio.sleep_ms(5)

    async def _tick(self):
        """Wake the loop every 50 ms at least: its pings and checks need no event.
        (asyncio.wait_for would bound the wait instead, with two tasks a round.)"""
        while True:
            await asyncio.sleep_ms(50)
            self._wake.set()

    async def _send(self, client):
        """Send what is not sent yet, one packet at a time, from the announcements on,
        then the older ones; a QoS 0 message is done once sent."""
        out = self.out
        while True:
            k = out.unsent()
            if k is None:
                return
            e = out.q[k]
            if client.pid >= 0xFFFF:
                client.pid = 0
            topic, payload = out.message(k)
            self._encode(client.publish, topic, payload, False, e[QOS])
            if e[QOS]:
                e[PID] = client.pid
            else:
                out.drop(k)
            await self._flush()     # the outbox may change while this waits

    async def _drain(self):
        """Hand received messages to on_message, two at a time and only while the outbox
        has room for their replies (which the next round sends); then the packets held
        back while the inbox was full."""
        if self.out.used > _BOX - 1024:
            return      # their answers would not fit: wait for PUBACKs to make room
        for _ in range(min(2, len(self.inbox))):
            try:        # out of memory before it acted, on_message raises: the message
                await self.on_message(*self.inbox[0])    # stays first, handled later
            except MemoryError:
                return
            except Exception as e:
                log.error("link", "on_message failed: %r" % e)
            self.inbox.pop(0)
        if self.rx:
            self._dispatch()

    def _encode(self, fn, *args):
        """Let umqtt write a packet into tx; it stops (_PENDING) where it would wait.
        Out of memory before any of the packet left tx: MemoryError, tx as it was (the
        caller tries again later); after: net.BROKEN (the session cannot go on)."""
        n0, self._out, self.gated = self._txn, False, True
        try:
            fn(*args)
        except EOFError:            # _PENDING
            pass
        except MemoryError:
            if self._out:
                raise net.BROKEN
            self._txn = n0
            raise
        finally:
            self.gated = False

    async def _flush(self, wait_ms=_WRITE_WAIT_MS):
        if self._txn or self._writer.out_buf:
            try:
                self._push()
                await net.drain(self._writer, wait_ms)
            except ValueError as e:     # TLS: the handshake refused the broker's certificate
                from pile import tls
                raise tls.refused(e)

    async def _expect(self, key):
        """Wait until the reader has seen the acknowledgement `key`; return its code.
        Messages that arrive meanwhile (a persistent session's backlog) are handled."""
        start = time.ticks_ms()
        while key not in self._acks:
            if self._reader_error:
                raise OSError(self._reader_error)
            if time.ticks_diff(time.ticks_ms(), start) > self.cfg["connect_timeout_ms"]:
                raise OSError("no answer from the broker")
            await self._drain()
            await asyncio.sleep_ms(10)
        return self._acks.pop(key)

    async def _reader_loop(self):
        """Read the stream into rx and dispatch whole packets, until the session ends."""
        buf = bytearray(256)    # one small buffer: no 1 KB block wanted per read
        view = memoryview(buf)
        try:
            while True:
                # a full inbox stops the reading (TCP pushes back on the broker) once rx
                # holds RX_HOLD bytes: the acknowledgements behind a waiting PUBLISH are
                # still read and handled (_skim), so the outbox drains meanwhile
                while len(self.inbox) >= _INBOX and len(self.rx) >= _RX_HOLD:
                    await asyncio.sleep_ms(10)
                n = await self._reader.readinto(buf)
                if n is None:       # TLS: only part of a record has come, nothing to read
                    continue
                if not n:
                    raise OSError("connection closed by the broker")
                while True:
                    try:
                        self.rx += view[:n]
                        break
                    except MemoryError:     # the bytes wait in buf: nothing is lost
                        await asyncio.sleep_ms(20)
                self._last_rx = time.ticks_ms()
                try:
                    self._dispatch()
                except MemoryError:         # what is not handled stays in rx: _drain
                    pass                    # dispatches again
                self._wake.set()
        except Exception as e:
            try:
                self._reader_error = str(e) or repr(e)
            except Exception:
                self._reader_error = "out of memory"

    def _cut(self, n):
        """Cut the n bytes handled off the head of rx; out of memory, the cut waits in
        _cutn for the next _dispatch (nothing reads rx before it)."""
        self._cutn = n
        self.rx = self.rx[n:]
        self._cutn = 0

    def _dispatch(self):
        """Handle the whole packets at the head of rx.  Each is handled, then cut: a
        MemoryError half way leaves it whole in rx, handled again by the next call
        (a PUBLISH again delivered, as QoS 1 allows; an acknowledgement again, harmless)."""
        if self._cutn:
            self._cut(self._cutn)
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
            if kind == 0x30 and len(self.inbox) >= _INBOX:
                self._skim(size)            # _drain calls again once the inbox empties
                return
            if kind in (0x30, 0xD0):
                self._rpos = 0
                self._client.wait_msg()     # whole packet buffered: cannot block
                self._cut(self._rpos)
                continue
            if kind == 0x20:                # CONNACK; the broker kept our session:
                self._acks["connack"] = rx[3]       # subscriptions and all (no SUBSCRIBE:
                self._present = rx[2] & 1           # its backlog comes before any SUBACK)
            elif kind == 0x90:              # SUBACK
                self._acks[rx[2] << 8 | rx[3]] = rx[4]
            elif kind == 0x40:              # PUBACK: the message is delivered
                self.out.acked(rx[2] << 8 | rx[3])
            self._cut(size)

    def _skim(self, at):
        """A PUBLISH waits at the head of rx for room in the inbox: the PUBACKs and
        PINGRESPs whole behind it (from `at` on) are handled now and cut out of rx."""
        i = at
        while i < len(self.rx):
            m = memoryview(self.rx)
            h = header(m[i:])
            if not h or i + h[0] + h[1] > len(m):
                return
            end, kind = i + h[0] + h[1], m[i] & 0xF0
            if kind == 0x40 or kind == 0xD0:
                if kind == 0x40:
                    self.out.acked(m[i + 2] << 8 | m[i + 3])
                self.rx = bytes(m[:i]) + bytes(m[end:])
            else:
                i = end

    def _deliver(self, topic, msg):
        self.inbox.append((topic.decode(), msg))
