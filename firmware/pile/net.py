"""Non-blocking network helpers: name resolution, TCP and TLS connect, URLs.

socket.getaddrinfo blocks (seconds on a bad Wi-Fi), so resolve() runs it in a thread and
polls for the answer; an IP literal needs no lookup.  connect() uses the asyncio streams,
every wait bounded by a timeout, so the event loop never stalls.  The HTTP GET that
provisioning needs lives with it, in pile/onekey.py (loaded only while provisioning).

TLS (https://, ssl://, mqtts://) lives in pile/tls.py, imported only by a pile whose URLs
ask for it: ca_file(scheme, cfg, trusted) says which CA file checks the connection (None:
plain TCP) and connect() hands the stream to tls.wrap().
"""
import asyncio
import socket

from micropython import const

_IPPROTO_TCP = const(6)     # the same numbers on Linux and lwIP
_TCP_NODELAY = const(1)
_TLS = ("https", "ssl", "mqtts")


class NetError(Exception):
    pass


class Later(NetError):
    """A connection that must wait for something that is nobody's fault (the clock)."""


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
    handshake runs in the first write; return (reader, writer)."""
    if ca:
        from pile import tls
        ctx = tls.context(ca)               # an unusable CA file: no connection at all
    ip = await resolve(host, port, timeout_ms)
    try:
        reader, writer = await asyncio.wait_for_ms(asyncio.open_connection(ip, port), timeout_ms)
    except asyncio.TimeoutError:
        raise NetError("connect timeout to %s:%d" % (host, port))
    except OSError as e:
        raise NetError("connect to %s:%d failed: %s" % (host, port, e))
    raw = writer.s
    try:        # no Nagle: a command's answer must not wait 40 ms for an ACK
        raw.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
    except (AttributeError, OSError):
        pass
    if ca:
        reader = writer = tls.wrap(ctx, raw, host)
    return reader, writer


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


async def close(writer):
    try:
        writer.close()
        await asyncio.wait_for_ms(writer.wait_closed(), 200)
    except Exception:
        pass
    try:
        writer.raw.close()  # TLS: the TCP socket under it (closing twice does no harm)
    except Exception:
        pass
