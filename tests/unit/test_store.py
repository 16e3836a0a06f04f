"""pile.store: atomic checked documents; torn and corrupt files, and whole ones whose
content fails the caller's check, never crash a load: the newest sound generation is
used and the bad file kept aside; init() makes the storage directory and reports one
that cannot be written (run in MicroPython)."""
import os
import random
import time

from pile import log, store
from kit import fresh_dir

log.echo = False
DOC = {"o": [{"pre_trade_no": "T1", "sum_end": "25969", "note": "\u4ea4\u6613"}], "r": 7}


def _dir():
    """A fresh storage dir, made the firmware's storage root."""
    store.root = fresh_dir()
    return store.root

def _raw(name, suffix=""):
    with open(store.path(name) + suffix, "rb") as f:
        return f.read()


def _write(name, data, suffix=""):
    with open(store.path(name) + suffix, "wb") as f:
        f.write(data)


def _variants(good):
    """Torn and corrupt versions of a whole file."""
    out = [b"", b"\n", good[:5], good[:9], good[:len(good) // 2], good[:-1],
           b"not json at all", good[:9] + b"{}", b"ffffffff\n" + good[9:]]
    flipped = bytearray(good)
    flipped[len(good) - 3] ^= 0x04
    out.append(bytes(flipped))
    out.append(good + b"trailing")
    out.append(good[9:])                         # the JSON with no checksum line
    return out


def test_round_trip_and_generations():
    _dir()
    assert store.load("x.json", {}) == {}
    assert store.save("x.json", DOC)
    assert store.load("x.json", {}) == DOC
    assert _raw("x.json")[8:9] == b"\n"
    assert store.save("x.json", {"r": 8})
    assert store.load("x.json") == {"r": 8}
    files = sorted(os.listdir(store.root))
    assert files == ["x.json", "x.json.bak"], files
    store.remove("x.json")
    assert os.listdir(store.root) == []
    assert store.load("x.json", []) == []


def test_every_torn_or_corrupt_variant_falls_back():
    _dir()
    store.save("x.json", {"gen": 1})
    store.save("x.json", {"gen": 2})
    good = _raw("x.json")
    bak = _raw("x.json", ".bak")
    for bad in _variants(good):
        _write("x.json", bad)
        _write("x.json", bak, ".bak")
        assert store.load("x.json", {}) == {"gen": 1}, bad
        assert _raw("x.json.bad") == bad          # kept aside for the technician
        assert "x.json" not in os.listdir(store.root)
        # no previous generation either: the default
        _write("x.json", bad)
        os.remove(store.path("x.json.bak"))
        assert store.load("x.json", {"d": 1}) == {"d": 1}, bad
        assert store.load("x.json") is None
    lines = "\n".join(log.lines())
    assert "unreadable" in lines and "using x.json.bak" in lines


def test_power_cut_between_the_renames_uses_the_new_file():
    _dir()
    store.save("x.json", {"gen": 1})
    store.save("x.json", {"gen": 2})
    # save() of gen 3 cut after "x.json -> x.json.bak", before "x.json.tmp -> x.json"
    os.rename(store.path("x.json"), store.path("x.json.bak"))
    store.save("y.json", {"gen": 3})
    os.rename(store.path("y.json"), store.path("x.json.tmp"))
    assert store.load("x.json") == {"gen": 3}
    # cut while x.json.tmp was being written: the current file stands
    store.save("x.json", {"gen": 4})
    _write("x.json", b"0badf00d\n{\"gen\": ", ".tmp")
    assert store.load("x.json") == {"gen": 4}
    # the next save simply replaces the torn temporary file
    assert store.save("x.json", {"gen": 5}) and store.load("x.json") == {"gen": 5}


def test_wrong_type_is_unusable():
    _dir()
    store.save("x.json", [1, 2])
    assert store.load("x.json", {}) == {}
    store.save("x.json", {"a": 1})
    assert store.load("x.json", []) == []
    store.save("x.json", "text")
    assert store.load("x.json") == "text"        # no default: any type


def test_save_failure_is_reported_not_raised():
    _dir()
    store.root = "/nonexistent/dir"
    assert store.save("x.json", {"a": 1}) is False
    _dir()
    os.mkdir(store.path("x.json.tmp"))             # the temporary file cannot be written
    assert store.save("x.json", {"a": 1}) is False
    assert "not saved" in "\n".join(log.lines())
    assert store.load("x.json") is None


def test_large_document_streams():
    _dir()
    doc = {"o": [{"pre_trade_no": "T%d" % k, "v": list(range(40))} for k in range(80)]}
    assert store.save("big.json", doc)
    assert len(_raw("big.json")) > 8000
    assert store.load("big.json", {}) == doc


def _positive(doc):
    """A content check: n must be an integer >= 0."""
    n = doc.get("n")
    return None if type(n) is int and n >= 0 else "n must be an integer >= 0"


def test_content_failing_the_check_is_treated_like_a_torn_file():
    _dir()
    store.save("x.json", {"n": 1})
    store.save("x.json", {"n": -1})              # whole, but makes no sense
    bad = _raw("x.json")
    assert store.load("x.json", {}) == {"n": -1}    # no check: taken as it is
    assert store.load("x.json", {}, _positive) == {"n": 1}   # the generation before
    assert _raw("x.json.bad") == bad               # kept aside for the technician
    assert "x.json" not in os.listdir(store.root)
    lines = "\n".join(log.lines())
    assert "x.json unreadable (n must be an integer >= 0); kept as x.json.bad" in lines
    assert "using x.json.bak" in lines
    # nothing that passes: the default
    store.remove("x.json")
    store.save("x.json", {"n": "7"})
    assert store.load("x.json", {"d": 1}, _positive) == {"d": 1}
    assert store.load("x.json", None, _positive) is None
    # cut between the renames, the new x.json.tmp whole but failing the check: the
    # generation before (x.json.bak)
    store.remove("x.json")
    store.save("x.json", {"n": 2})
    os.rename(store.path("x.json"), store.path("x.json.bak"))
    store.save("y.json", {"n": -2})
    os.rename(store.path("y.json"), store.path("x.json.tmp"))
    tmp = _raw("x.json.tmp")
    assert store.load("x.json", {}, _positive) == {"n": 2}
    assert _raw("x.json.bad") == tmp and "x.json.tmp" not in os.listdir(store.root)


def test_check_sees_only_documents_of_the_right_type_and_passes_sound_ones():
    _dir()
    seen = []

    def check(doc):
        seen.append(doc)
        return None
    store.save("x.json", {"n": 4})
    assert store.load("x.json", {}, check) == {"n": 4} and seen == [{"n": 4}]
    assert sorted(os.listdir(store.root)) == ["x.json"]      # nothing set aside
    store.save("x.json", [1])                    # the wrong type: refused before the check
    assert store.load("x.json", {}, check) == {"n": 4} and seen == [{"n": 4}] * 2
    # a check that raises costs the file, never the caller
    store.remove("x.json")
    store.save("x.json", {"m": 1})
    assert store.load("x.json", {}, lambda d: d["n"]) == {}
    assert "x.json.bad" in os.listdir(store.root)


def test_init_creates_the_directory_and_reports_an_unwritable_one():
    top = fresh_dir()
    d = top + "/flash"
    assert store.init(d) is None
    assert store.root == d and os.stat(d)[0] & 0o170000 == 0o040000   # a directory
    assert os.listdir(d) == []                   # the probe is gone again
    assert store.save("x.json", {"a": 1}) and store.load("x.json") == {"a": 1}
    assert _raw("x.json")[8:9] == b"\n"
    assert store.init(d) is None and store.load("x.json") == {"a": 1}   # already there
    # every missing folder on the way is made (mkdir -p)
    assert store.init(top + "/no/such/dir") is None
    assert store.save("x.json", {"a": 2}) and os.listdir(top + "/no/such/dir") == ["x.json"]
    # a directory that cannot be made: the reason (the pile must then not charge)
    why = store.init(top + "/plain_parent/x")
    assert why is None                           # (made too)
    # a plain file where the directory should be
    with open(top + "/plain", "w") as f:
        f.write("x")
    why = store.init(top + "/plain")
    assert why and "not writable" in why and "plain" in why, why
    why = store.init(top + "/plain/sub")
    assert type(why) is str and "not writable" in why and top + "/plain/sub" in why, why
    assert store.root == top + "/plain/sub" and store.save("x.json", {"a": 2}) is False
    with open(top + "/plain") as f:
        assert f.read() == "x"                   # left as it was
