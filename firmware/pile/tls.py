"""TLS for the broker (ssl://, mqtts://) and for provisioning (https://): imported only by
a pile whose URLs ask for it (pile/net.py), so a plain-TCP pile carries none of it.

The server's certificate must chain to a CA of the file named by config key ca_file (DER
certificates back to back, as tools/factory.py writes them; a PEM file goes to mbedtls
whole, for ports that read PEM) and name the host of the URL (PROTOCOL_TLS_CLIENT,
CERT_REQUIRED, server_hostname).  mbedtls checks its dates against the board's clock, so
ca() lets no TLS connection start before that clock is trusted (net.Later: a wait, not
the broker's fault), nor one without a CA: refused, never sent in plain TCP instead
(docs/decisions.md "TLS").  The handshake runs in the first write on the stream, so the
first bytes a caller sends (a password) leave only for a server whose certificate
passed; a refused one raises ValueError there (refused() makes it a NetError with
mbedtls's reason).
"""
import asyncio

from pile.net import Later, NetError

_ctx = None                 # (ca_file, SSLContext): made once, its parsed CA kept with it


def ca(scheme, cfg, trusted):
    """The CA file for a TLS connection, or NetError when it could not be checked."""
    if not cfg.get("ca_file"):
        raise NetError("%s:// refused: no CA (config key ca_file)" % scheme)
    if not trusted:
        raise Later("TLS waits for the clock (NTP)")
    return cfg["ca_file"]


def refused(e):
    """NetError for the ValueError mbedtls raises when it refuses a certificate."""
    return NetError("server certificate refused: " + " ".join(str(e).split()))


def context(ca_file):
    global _ctx
    if _ctx is None or _ctx[0] != ca_file:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            with open(ca_file, "rb") as f:
                data = f.read()
            if not data:
                raise ValueError("empty")
            i = 0
            while i < len(data):    # DER certificates back to back (PEM: the file whole)
                n, head = data[i + 1], 2
                if data[i] != 0x30:
                    n, head = len(data) - i, 0
                elif n & 0x80:      # SEQUENCE with a long-form length
                    head += n & 0x7F
                    n = int.from_bytes(data[i + 2:i + head], "big")
                ctx.load_verify_locations(cadata=data[i:i + head + n])
                i += head + n
        except (OSError, ValueError, IndexError) as e:
            raise NetError("CA file %s unusable: %s" % (ca_file, e))
        _ctx = (ca_file, ctx)
    return _ctx[1]


def wrap(ctx, raw, host):
    """The TLS stream over TCP socket raw; its handshake runs in its first write."""
    try:
        s = ctx.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False)
    except Exception:
        raw.close()
        raise
    writer = asyncio.StreamWriter(s, {})
    writer.raw = raw        # a failed handshake lets go of it without closing it: close()
    return writer
