"""The benchmark harness, without running a benchmark: the one table `make bench` prints
(targets and verdicts from figures), BENCHMARKS.md's table part, the failing network the
link bench puts between each client and the broker, and the pinned fetch of the peers."""
import hashlib
import os
import socket
import sys
import threading
import time
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import faultnet  # noqa: E402
import fetch_peers  # noqa: E402
import table  # noqa: E402

CFG = {"backoff_min_ms": 1000, "backoff_max_ms": 5000, "keepalive_s": 60}


def cells(t, key):
    return [r for r in t.rows if r[0] == key][0]


# --- the table -------------------------------------------------------------------------

def stall_fig(link_worst):
    groups = [["down", "broker down"], ["board", "network down on the board"]]
    steps = [["broker down", "down", 3.0, "down"], ["net down", "pass", 4.0, "board"]]

    def client(a, b):
        return {"steps": [{"worst_ms": a, "online_at_end": "no"},
                          None if b is None else {"worst_ms": b, "online_at_end": "no"}],
                "worst_ms": max(x for x in (a, b) if x is not None)}

    return {"clients": [["link", "L"], ["naive", "N"], ["none", "floor"]], "slow_ms": 1500,
            "stall_groups": groups, "stall_steps": steps,
            "stall": {"link": client(12, link_worst), "naive": client(4955, None),
                      "none": client(11, 13)}}


def test_stall_rows_judge_the_link_and_show_the_peers_and_the_floor():
    t = table.Table()
    table.row_stall(t, stall_fig(31), {})
    down, board, worst = cells(t, "1a"), cells(t, "1b"), cells(t, "1")
    assert down[2] == "12 ms" and down[5] == "met"
    assert "naive 4955 ms" in down[3] and "heartbeat alone 11 ms" in down[3]
    assert board[2] == "31 ms" and board[5] == "**not met**"
    assert "naive n/a" in board[3]              # no board to ask
    assert worst[2] == "31 ms" and worst[5] == "**not met**" and worst[4] == "<= 20 ms"
    assert any(n.startswith("1b:") and "13 ms" in n for n in t.notes)   # the floor then
    assert "link none; naive none" in t.notes[-1]
    fig = stall_fig(12)
    fig["stall"]["naive"]["steps"][0]["online_at_end"] = "blocked"
    t = table.Table()
    table.row_stall(t, fig, {})
    assert cells(t, "1")[5] == "met"
    assert "naive 'broker down' (blocked)" in t.notes[-1]


def test_stop_rows_say_what_bounds_the_relay():
    def st(med, p99):
        return {"median": med, "p99": p99, "n": 200, "max": p99, "min": med}

    fig = {"event": st(2.2, 6.1), "relay": st(108, 111), "pwm_off": st(1.6, 5.3),
           "pwm_to_left": st(106, 110), "left_to_relay": st(0.04, 0.07), "leave": st(5, 10),
           "ev_react_ms": 100, "speed": 1, "violations": 0}
    t = table.Table()
    table.row_stop(t, fig, {})
    assert cells(t, "4a")[5] == "met" and "n=200" in cells(t, "4a")[2]
    relay = cells(t, "4b")
    assert relay[5] == "**not met**" and "100 ms" in relay[3]
    note = [n for n in t.notes if n.startswith("4b:")][0]
    assert "ev_react_ms = 100 ms" in note and "1.60 ms/5.30 ms" in note
    assert cells(t, "4c")[5] == "met"


def test_trip_targets_per_kind():
    def r(kind, net, p99):
        return {"kind": kind, "net": net, "n": 30, "median": p99 / 2, "p99": p99, "max": p99,
                "ms": [p99 / 2] * 28 + [p99 * 0.4, p99]}

    fig = {"rows": [r("estop", "healthy", 0.6), r("estop", "blackholed", 0.7),
                    r("cp-short", "healthy", 9), r("cp-short", "blackholed", 25),
                    r("over-current", "healthy", 48), r("over-current", "blackholed", 52)],
           "violations": 0}
    t = table.Table()
    table.row_trip(t, fig, {})
    assert cells(t, "5a")[5] == "met"
    assert cells(t, "5b")[5] == "not measured"          # leakage not in this run
    assert cells(t, "5c")[5] == "**not met**"           # 25 ms > 20 ms in one network
    assert "5c: blackholed: 1 of 30 injections over 20 ms (25 ms), the largest of the " \
        "others 12 ms" in t.notes
    assert cells(t, "5d")[4] == "p99 <= 100 ms" and cells(t, "5d")[5] == "met"


def test_recovery_rows_and_a_quick_run_that_cannot_see_a_keepalive():
    link = {"back_s": {"4": 2.4, "20": 7.5}, "notice_s": None,
            "back_after_blackhole_s": "stayed online"}
    naive = {"back_s": {"4": 0.3, "20": 0.3}, "notice_s": None, "blocked": True,
             "back_after_blackhole_s": "stayed online"}
    fig = {"recovery": {"link": link, "naive": naive}, "outages": [4, 20], "caps": [30, 20]}
    t = table.Table()
    table.row_recovery(t, fig, {}, CFG)
    assert cells(t, "2a")[5] == "met" and cells(t, "2a")[4].startswith("<= 6 s")
    assert cells(t, "2b")[2] == "7.5 s" and cells(t, "2b")[5] == "**not met**"
    assert any(n.startswith("2b: the Link retries after a back-off doubling from 1000 to 5000")
               for n in t.notes)
    assert cells(t, "2c")[5] == "not measured (quick run)"
    assert "naive loop blocked" in cells(t, "2c")[3]


def test_billing_size_and_memory_rows():
    t = table.Table()
    table.row_billing(t, {"sessions": 10000, "per_s": 380, "disagreements": 1,
                          "ref_per_s": 2300}, {})
    assert cells(t, "7")[5] == "**not met**" and "1 disagreements" in cells(t, "7")[2]
    table.row_size(t, {"deployed_mpy": 62014, "main_py": 3022, "modules": {
        "pile.protocol": 8589, "pile.gun": 6224, "pile.link": 5123, "umqtt.simple": 1940}}, {})
    size = cells(t, "9")
    assert size[2].startswith("65036 bytes") and size[5] == "**not met**"
    assert any(n.startswith("9: 3596 bytes over") for n in t.notes)
    memory = ("online, idle                   147424      60064       3040\n"
              "high-water in use: 149376 bytes; largest free block after the session: 9000\n"
              "  heap 130000:  0 of 20 passed  (MemoryError)\n"
              "  heap 140000: 20 of 20 passed\n")
    flash = ("per charging hour             244        45044            256\n"
             "charging  8 h a day:   2100 erases a day,    68 years of life (4 MB)\n")
    table.row_memory(t, memory, {}, flash)
    assert "8b: why runs failed: 130 KB: MemoryError" in t.notes
    assert cells(t, "8a")[2] == "147424 / 149376 / 9000 bytes" and cells(t, "8a")[5] == "met"
    assert cells(t, "8b")[2] == "130 KB 0/20, 140 KB 20/20" and cells(t, "8b")[5] == "met"
    assert cells(t, "8c")[2] == "244 saves, 45044 bytes, ~256 erase blocks"
    assert "68 years" in cells(t, "8c")[3]


def test_a_missing_bench_is_a_row_that_says_so():
    t = table.Table()
    table.row_boot(t, None, {"boot": {"rc": 1, "seconds": 3}})
    assert cells(t, "3")[5] == "not measured"
    assert "failed (1)" in t.notes[0] and "build/bench/boot.log" in t.notes[0]


def test_unknown_benches_are_run_too(tmp_path, monkeypatch):
    for name in ("bench_size.py", "bench_link.py", "bench_new.py", "stall_kit.py"):
        (tmp_path / name).write_text('"""x"""\n')
    monkeypatch.setattr(table, "HERE", str(tmp_path))
    names = [r[0] for r in table.plan(quick=False)]
    assert names == ["size", "stall", "recovery", "new"]
    assert [r[2] for r in table.plan(quick=True) if r[0] == "recovery"] == \
        [["--part", "recovery", "--quick"]]


def test_write_replaces_only_the_table_part(tmp_path):
    doc = tmp_path / "B.md"
    doc.write_text("# B\nhow to read\n\n%s\nold table\n%s\nafter\n" % (table.BEGIN, table.END))
    table.write(str(doc), "| new | table |\n")
    table.write(str(doc), "| newer | table |\n")
    text = doc.read_text()
    assert text == "# B\nhow to read\n\n%s\n| newer | table |\n%s\nafter\n" % (table.BEGIN,
                                                                                table.END)


# --- the failing network ---------------------------------------------------------------

@pytest.fixture
def echo():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=c: [c.sendall(d) for d in iter(
                lambda: c.recv(100), b"")], daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()


def rtt(sock, data):
    t0 = time.monotonic()
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        got += sock.recv(100)
    return time.monotonic() - t0, got


def test_path_delays_the_server_in_order_and_goes_down(echo):
    path = faultnet.Path(echo)
    try:
        c = socket.create_connection(("127.0.0.1", path.port), 5)
        dt, got = rtt(c, b"a")
        assert got == b"a" and dt < 0.5
        faultnet.SLOW_MS, slow = 600, faultnet.SLOW_MS
        try:
            path.set("slow")
        finally:
            faultnet.SLOW_MS = slow
        assert path.delay.delay == 0.6
        dt, got = rtt(c, b"bc")
        assert got == b"bc" and dt >= 0.59
        path.set("pass")
        c.sendall(b"d")
        c.sendall(b"e")
        dt, got = rtt(c, b"fgh")
        while len(got) < 5:
            got += c.recv(100)
        assert got == b"defgh" and dt < 0.5                 # in order, nothing held
        path.set("down")
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", path.port), 2)
        with pytest.raises(ValueError):
            path.set("sideways")
    finally:
        path.close()


# --- the peers' fetch ------------------------------------------------------------------

def test_fetch_peers_checks_the_pin_and_unpacks_only_what_is_listed(tmp_path, monkeypatch):
    wheel = tmp_path / "src" / "peer-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("peer/__init__.py", "X = 1\n")
        z.writestr("peer/_wire.py", "Y = 2\n")
        z.writestr("peer-1.0.dist-info/METADATA", "Name: peer\n")
        z.writestr("tests/test_peer.py", "")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()

    class Done:
        returncode, stderr = 0, ""

    def pip(cmd, **kw):         # "pip download ... -d DIR name==version"
        d = cmd[cmd.index("-d") + 1]
        (tmp_path / d).joinpath(wheel.name).write_bytes(wheel.read_bytes())
        return Done()

    monkeypatch.setattr(fetch_peers.subprocess, "run", pip)
    monkeypatch.setattr(fetch_peers, "PEERS", (("peer", "1.0", digest, ("peer",)),))
    out = tmp_path / "peers"
    fetch_peers.fetch(str(out))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
        ["PINNED", "peer/__init__.py", "peer/_wire.py"]
    assert (out / "PINNED").read_text() == "peer 1.0 %s\n" % digest
    monkeypatch.setattr(fetch_peers, "PEERS", (("peer", "1.0", "0" * 64, ("peer",)),))
    with pytest.raises(SystemExit, match="sha256 mismatch"):
        fetch_peers.fetch(str(out))


def test_the_peers_pinned_are_the_ones_the_link_bench_names():
    import bench_link
    assert [p[0] for p in fetch_peers.PEERS][:2] == ["aiomqttc", "chumicro-mqtt"]
    names = dict((k, what) for k, what, _, _ in bench_link.CLIENTS)
    assert names["aiomqttc"] == "aiomqttc 1.0.7"
    assert names["chumicro"] == "chumicro-mqtt 0.30.3"
    for _, _, script, _ in bench_link.CLIENTS:
        assert os.path.exists(os.path.join(ROOT, "bench", script))


def test_table_only_rewrites_from_the_last_full_run_and_never_from_a_quick_one(tmp_path,
                                                                           monkeypatch):
    import json
    monkeypatch.setattr(table, "OUT", str(tmp_path))
    host = [["CPU", "Test CPU, 2 cores"], ["MicroPython", "1.29.0"]]
    (tmp_path / "billing.json").write_text(json.dumps(
        {"sessions": 10, "per_s": 300.0, "disagreements": 0, "ref_per_s": 2000.0}))
    (tmp_path / "billing.log").write_text("x\n")
    doc = tmp_path / "B.md"
    doc.write_text("intro\n%s\n%s\n" % (table.BEGIN, table.END))

    def record(quick):
        (tmp_path / "run.json").write_text(json.dumps(
            {"runs": {"billing": {"rc": 0, "seconds": 35.0}}, "quick": quick,
             "partial": False, "seconds": 60.0, "machine": host}))

    record(quick=True)
    table.main(["--table-only", "--write", str(doc)])
    assert "10 generated sessions" not in doc.read_text()
    record(quick=False)
    table.main(["--table-only", "--write", str(doc)])
    text = doc.read_text()
    assert text.startswith("intro\n") and "## Last full run" in text
    assert "- CPU: Test CPU, 2 cores" in text and "billing 35 s" in text
    assert "| 7 | billing: 10 generated sessions priced" in text
    assert "| 10 |" not in text                 # no TLS run: no TLS row

