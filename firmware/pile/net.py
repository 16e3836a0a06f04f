"""Non-blocking network helpers: name resolution, TCP and TLS connect, URLs.

socket.getaddrinfo blocks (seconds on a bad Wi-Fi), so resolve() runs it in a thread and
polls for the answer; an IP literal needs no lookup.  connect(), drain() and recv() poll a
non-blocking socket every few ms until it is ready or their time is up, so the event loop
never stalls.  They do not use asyncio.wait_for: it makes two tasks a call, and out of
memory (a MemoryError in its runner task) it cancels its caller, which would end the link's
task instead of one session.  The HTTP GET that
provisioning needs lives with it, in pile/onekey.py (loaded only while provisioning).

TLS (https://, ssl://, mqtts://) lives in pile/tls.py, imported only by a pile whose URLs
ask for it: ca_file(scheme, cfg, trusted) says which CA file checks the connection (None:
plain TCP) and connect() hands the stream to tls.wrap().
"""
import asyncio
import errno
import select
import socket
import time

from micropython import const

_IPPROTO_TCP = const(6)     # the same numbers on Linux and lwIP
_TCP_NODELAY = const(1)
_POLL_MS = const(10)        # how often a waiting socket is tried again
_TLS = ("https", "ssl", "mqtts")


class NetError(Exception):
    pass


class Later(NetError):
    """A connection that must wait for something that is nobody's fault (the clock)."""


# out of memory after part of a packet was sent: the stream cannot go on.  Made once and
# raised as it is (making it when memory is out would raise MemoryError instead)
BROKEN = NetError("out of memory in the middle of a packet")


def write(stream, data):
    """Send data (bytes-like) now as far as the socket takes it; the rest waits in the
    stream's out_buf for drain().  Out of memory before any of it is sent: MemoryError,
    nothing changed (try again); after part of it is sent: BROKEN."""
    n = 0
    if not stream.out_buf:
        n = stream.s.write(data) or 0
        if n == len(data):
            return
    try:
        stream.out_buf += data[n:] if n else data
    except MemoryError:
        if n:
            raise BROKEN
        raise


def ca_file(scheme, cfg, trusted):
    """The CA file to check a connection to a URL of this scheme with (None: plain TCP),
    or NetError when a TLS connection cannot be checked (pile/tls.py)."""
    if scheme not in _TLS:
        return None
    from pile import tls
    return tls.ca(scheme, cfg, trusted)


async def resolve(host, port, timeout_ms=5000):
    """Return the address of host:port without blocking the loop."""
    parts = host.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        return host
    import _thread
    box = []

    def lookup():
        try:
            box.append(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1])
        except Exception as e:
            box.append(e)

    _thread.start_new_thread(lookup, ())
    waited = 0
    while not box:
        if waited >= timeout_ms:
            raise NetError("DNS timeout for %s" % host)
        await asyncio.sleep_ms(20)
        waited += 20
    addr = box[0]
    if isinstance(addr, Exception):
        raise NetError("DNS failed for %s: %s" % (host, addr))
    # the unix port gives a raw sockaddr (bytearray), the ESP32 an (ip, port) tuple
    return addr[0] if isinstance(addr, tuple) else socket.inet_ntop(socket.AF_INET, addr[4:8])


async def connect(host, port, timeout_ms, ca=None):
    """Open a TCP stream, or with ca (a CA file, from ca_file()) a TLS stream whose
    handshake runs in the first write; return (reader, writer), one asyncio stream.
    Raises NetError when it cannot connect within timeout_ms."""
    if ca:
        from pile import tls
        ctx = tls.context(ca)               # an unusable CA file: no connection at all
    ip = await resolve(host, port, timeout_ms)
    raw = socket.socket()
    try:
        raw.setblocking(False)
        try:
            raw.connect(socket.getaddrinfo(ip, port)[0][-1])
        except OSError as e:
            if e.errno != errno.EINPROGRESS:
                raise
        poller, t0 = select.poll(), time.ticks_ms()
        poller.register(raw, select.POLLOUT)
        while True:
            ready = poller.poll(0)
            if ready:
                if ready[0][1] & (select.POLLERR | select.POLLHUP):
                    raise OSError(errno.ECONNREFUSED)
                break
            if time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
                raise NetError("connect timeout to %s:%d" % (host, port))
            await asyncio.sleep_ms(_POLL_MS)
    except OSError as e:
        raw.close()
        raise NetError("connect to %s:%d failed: %s" % (host, port, e))
    except BaseException:
        raw.close()
        raise
    try:        # no Nagle: a command's answer must not wait 40 ms for an ACK
        raw.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
    except (AttributeError, OSError):
        pass
    if ca:
        stream = tls.wrap(ctx, raw, host)
    else:
        stream = asyncio.StreamWriter(raw, {})
        stream.raw = raw
    return stream, stream


async def drain(stream, timeout_ms):
    """Send what stream.write() left in the stream (its out_buf) within timeout_ms, else
    NetError("peer stopped reading").  Over TLS the handshake runs in these writes; a
    refused certificate raises ValueError (pile/tls.py)."""
    t0 = time.ticks_ms()
    while stream.out_buf:
        n = stream.s.write(stream.out_buf)
        if n:
            try:
                stream.out_buf = stream.out_buf[n:]
            except MemoryError:     # sent, and could not be taken off: it would go twice
                raise BROKEN
        elif time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
            raise NetError("peer stopped reading")
        else:
            await asyncio.sleep_ms(_POLL_MS)


async def recv(stream, buf, timeout_ms=None):
    """Read into buf (a bytearray or memoryview) what the stream has: the number of bytes,
    0 when the peer closed; None after timeout_ms (None: wait as long as it takes)."""
    t0 = time.ticks_ms()
    while True:
        n = stream.s.readinto(buf)
        if n is not None:
            return n
        if timeout_ms is not None and time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
            return None
        await asyncio.sleep_ms(_POLL_MS)


def split_url(url):
    """'scheme://host:port/path?q' -> (scheme, host, port, path_and_query)."""
    scheme, _, rest = url.partition("://")
    hostport, slash, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    default = {"http": 80, "https": 443, "tcp": 1883, "mqtt": 1883,
               "ssl": 8883, "mqtts": 8883}.get(scheme)
    if default is None or not host or port and not port.isdigit():
        raise NetError("bad URL %s" % url)
    return scheme, host, int(port) if port else default, slash + path


def close(stream):
    """Close the stream's socket (TLS: and the TCP socket under it); never raises."""
    for s in (stream.s, stream.raw):    # closing twice does no harm
        try:
            s.close()
        except Exception:
            pass
