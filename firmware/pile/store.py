"""Files on flash: atomic, checked JSON documents.

save() writes ``name.tmp`` then renames it over ``name``, so a power cut leaves either
the old or the new document, never a half-written one.  Each file carries a CRC32 of its
JSON text on a second line; load() returns the default and logs why when the file is
missing, torn or corrupt, so bad flash never crashes the boot.
"""
import json
import os
from binascii import crc32

from pile import log

root = ""


def path(name):
    return root + "/" + name if root else name


def save(name, obj):
    text = json.dumps(obj)
    tmp = path(name) + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.write("\n%08x\n" % (crc32(text.encode()) & 0xFFFFFFFF))
    os.rename(tmp, path(name))


def load(name, default=None):
    try:
        with open(path(name)) as f:
            raw = f.read()
    except OSError:
        return default
    try:
        text, crc = raw.rstrip("\n").rsplit("\n", 1)
        if int(crc, 16) != crc32(text.encode()) & 0xFFFFFFFF:
            raise ValueError("checksum mismatch")
        return json.loads(text)
    except Exception as e:
        log.error("store", "%s unreadable (%s); using default" % (name, e))
        return default


def remove(name):
    try:
        os.remove(path(name))
    except OSError:
        pass
