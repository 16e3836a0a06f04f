"""Files on flash: atomic, checked JSON documents with a previous generation kept.

A document is one file: a first line with the CRC32 of the JSON text (8 hex digits),
then the JSON text.  save() writes ``name.tmp``, turns the current ``name`` into
``name.bak`` and renames the new file over ``name`` (two renames, no second write), so
a power cut at any point leaves a whole document behind: ``name``, else a complete
``name.tmp``, else ``name.bak`` (one generation older).  load() takes the first of those
three that is whole, has the expected type and passes the caller's content check (the
same rules the caller keeps when it writes); a file that is torn, corrupt or makes no
sense is logged and kept aside as ``name.bad`` for the technician, and a missing or
unusable document gives the default, so bad flash never crashes the boot.  load() reads the file in small
pieces (CRC) and parses it from the stream: no copy of the whole text is ever held.

save() never raises: a failure (flash full, out of memory) is logged and returns False,
so a caller that can do without the file goes on, and one that cannot (the fee model)
answers with the reason.
"""
import json
import os
from binascii import crc32

from pile import log

root = ""
written = [0, 0]    # documents saved since boot, and their bytes (the flash budget)


def init(top):
    """Use directory `top` (created if missing) for every document; return None when a
    file can be written and removed there, else the reason (the pile must then not
    charge: a pile that cannot journal must not bill)."""
    global root
    root = top
    at = ""
    for part in top.split("/") if top else ():      # every missing folder (mkdir -p)
        at = at + "/" + part if at or top[0] == "/" else part
        try:
            os.mkdir(at)
        except OSError:
            pass                    # there already (or not makeable: the probe says)
    probe = path(".probe")
    try:
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
        return None
    except OSError as e:
        return "storage %s not writable: %r" % (top or ".", e)


def path(name):
    return root + "/" + name if root else name


def save(name, obj):
    """Write obj as the document `name`; return True when it is on flash."""
    p = path(name)
    try:
        text = json.dumps(obj)
        with open(p + ".tmp", "w") as f:
            f.write("%08x\n" % (crc32(text) & 0xFFFFFFFF))
            f.write(text)
        written[0] += 1
        written[1] += 9 + len(text)
        text = None
        try:
            os.rename(p, p + ".bak")
        except OSError:
            pass                    # no current generation yet
        os.rename(p + ".tmp", p)
        return True
    except Exception as e:          # flash full, I/O error, out of memory
        log.error("store", "%s not saved: %r" % (name, e))
        return False


def load(name, default=None, check=None):
    """The document `name` (or its newest whole generation), else default.

    When default is not None the document must have its type (a dict for {}, ...);
    check(document) returns None when its content is sound, else the reason."""
    p = path(name)
    for suffix in ("", ".tmp", ".bak"):
        try:
            f = open(p + suffix, "rb")
        except OSError:
            continue                # no such file
        try:
            with f:
                head = f.readline()
                if len(head) != 9 or head[8] != 10:
                    raise ValueError("no checksum line")
                crc, buf = 0, bytearray(128)
                n = f.readinto(buf)
                while n:
                    crc = crc32(memoryview(buf)[:n], crc)
                    n = f.readinto(buf)
                if crc & 0xFFFFFFFF != int(head[:8], 16):
                    raise ValueError("checksum mismatch")
                f.seek(9)
                obj = json.load(f)
            if default is not None and type(obj) is not type(default):
                raise ValueError("not a %s" % type(default).__name__)
            why = check(obj) if check else None
            if why:
                raise ValueError(why)
        except Exception as e:      # torn, corrupt, not JSON, wrong type or content
            log.error("store", "%s%s unreadable (%s); kept as %s.bad"
                      % (name, suffix, e, name))
            try:
                os.rename(p + suffix, p + ".bad")
            except OSError:
                pass
            continue
        if suffix:
            log.warn("store", "%s: using %s%s" % (name, name, suffix))
        return obj
    return default


def remove(name):
    """Forget the document, every generation of it (the newest last)."""
    p = path(name)
    for suffix in (".tmp", ".bak", ""):
        try:
            os.remove(p + suffix)
        except OSError:
            pass
