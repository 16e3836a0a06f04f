"""Non-blocking network helpers: name resolution, TCP connect, a small HTTP GET.

socket.getaddrinfo blocks (seconds on a bad Wi-Fi), so resolve() runs it in a thread and
polls for the answer; an IP literal needs no lookup.  connect() and http_get() use the
asyncio streams, every wait bounded by a timeout, so the event loop never stalls.
"""
import asyncio
import socket


IPPROTO_TCP, TCP_NODELAY = 6, 1     # the same numbers on Linux and lwIP


class NetError(Exception):
    pass


def _is_ip(host):
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


def _lookup(host, port, box):
    try:
        box.append(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1])
    except Exception as e:
        box.append(e)


async def resolve(host, port, timeout_ms=5000):
    """Return the address of host:port without blocking the loop."""
    if _is_ip(host):
        return host
    import _thread
    box = []
    _thread.start_new_thread(_lookup, (host, port, box))
    waited = 0
    while not box:
        if waited >= timeout_ms:
            raise NetError("DNS timeout for %s" % host)
        await asyncio.sleep_ms(20)
        waited += 20
    if isinstance(box[0], Exception):
        raise NetError("DNS failed for %s: %s" % (host, box[0]))
    # the unix port gives a raw sockaddr (bytearray), the ESP32 an (ip, port) tuple
    addr = box[0]
    return addr[0] if isinstance(addr, tuple) else socket.inet_ntop(socket.AF_INET, addr[4:8])


async def connect(host, port, timeout_ms, tls=False):
    """Open a TCP (or TLS) stream; return (reader, writer)."""
    ip = await resolve(host, port, timeout_ms)
    try:
        if tls:
            return await asyncio.wait_for_ms(
                asyncio.open_connection(ip, port, ssl=True, server_hostname=host), timeout_ms)
        reader, writer = await asyncio.wait_for_ms(asyncio.open_connection(ip, port), timeout_ms)
        try:    # no Nagle: a command's answer must not wait 40 ms for an ACK
            writer.s.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
        except (AttributeError, OSError):
            pass
        return reader, writer
    except asyncio.TimeoutError:
        raise NetError("connect timeout to %s:%d" % (host, port))
    except OSError as e:
        raise NetError("connect to %s:%d failed: %s" % (host, port, e))


def split_url(url):
    """'scheme://host:port/path?q' -> (scheme, host, port, path_and_query)."""
    scheme, _, rest = url.partition("://")
    if not rest:
        raise NetError("bad URL %s" % url)
    hostport, slash, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    default = {"http": 80, "https": 443, "tcp": 1883, "mqtt": 1883,
               "ssl": 8883, "mqtts": 8883}.get(scheme)
    if default is None or not host:
        raise NetError("unsupported URL %s" % url)
    if port and not port.isdigit():
        raise NetError("bad port in %s" % url)
    return scheme, host, int(port) if port else default, slash + path


async def http_get(url, timeout_ms, limit=4096):
    """GET url; return (status, body bytes).  Raises NetError on any failure."""
    scheme, host, port, path = split_url(url)
    reader, writer = await connect(host, port, timeout_ms, scheme == "https")
    try:
        req = "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path or "/", host)
        writer.write(req.encode())
        await asyncio.wait_for_ms(writer.drain(), timeout_ms)
        data = b""
        while len(data) <= limit:
            chunk = await asyncio.wait_for_ms(reader.read(512), timeout_ms)
            if not chunk:
                break
            data += chunk
    except asyncio.TimeoutError:
        raise NetError("HTTP timeout from %s:%d" % (host, port))
    except OSError as e:
        raise NetError("HTTP error from %s:%d: %s" % (host, port, e))
    finally:
        await close(writer)
    if len(data) > limit:
        raise NetError("HTTP answer over %d bytes" % limit)
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)
    if len(status) < 2 or not status[1].isdigit():
        raise NetError("not an HTTP answer")
    return int(status[1]), body


async def close(writer):
    try:
        writer.close()
        await asyncio.wait_for_ms(writer.wait_closed(), 200)
    except Exception:
        pass
