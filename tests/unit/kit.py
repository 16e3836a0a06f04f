"""Shared fixtures of the MicroPython unit tests (imported by them, not a test module).

fresh_dir() gives each test its own storage directory under /tmp (directories of runs
more than an hour old are removed); BOARD is the simulated board file; MODEL a valid
feeModelUpdateSrv body; cfg() the firmware defaults with overrides.
"""
import json
import os
import random
import time

TOP = "/tmp/pile-unit"

with open("boards/sim/board.json") as _f:
    BOARD = json.load(_f)

MODEL = {"ele_model_id": "M1", "time_num": 3, "time_seg": ["0000", "0800", "1200"],
         "seg_flag": [13, 11, 12], "charge_fee": [10000, 50000, 20000, 10000],
         "serviceFee": [20000, 20000, 20000, 10000]}


def rm_tree(d):
    for name in os.listdir(d):
        try:
            os.remove(d + "/" + name)
        except OSError:
            rm_tree(d + "/" + name)
    os.rmdir(d)


def fresh_dir():
    """A new empty directory; also sweeps away those older than an hour."""
    try:
        os.mkdir(TOP)
    except OSError:
        pass
    for name in os.listdir(TOP):
        try:
            if os.stat(TOP + "/" + name)[8] < time.time() - 3600:
                rm_tree(TOP + "/" + name)
        except OSError:
            pass
    d = TOP + "/%d" % random.getrandbits(30)
    os.mkdir(d)
    return d


def cfg(**over):
    from pile import config
    out = dict(config.DEFAULTS)
    out.update(over)
    return out


# a fee model as pile.protocol hands it over (the wire's MODEL above, decoded)
COMPACT = {"id": "M1", "starts": [0, 480, 720], "bands": [3, 1, 2],
           "power": [10000, 50000, 20000, 10000], "service": [20000, 20000, 20000, 10000]}


def run(coro):
    """Run one coroutine (a measurement, a start) to its end."""
    import asyncio
    return asyncio.run(coro)


class Pile:
    """The real App (pile.app) on a simulated board whose clock the test steps: step(ms)
    runs the app's own task rounds as its tasks would (control every 10 ms, measure every
    50 ms, report every 100 ms of board time).  What the pile publishes is decoded and
    recorded in `sent` as (cmd, body) instead of going out; the link counts as up
    (`online`).  Storage: a fresh directory, or `dir` (a reboot on the same flash)."""

    sid = 1000                  # the last platform session_id used by deliver()

    def __init__(self, model=True, online=True, dir=None, board=None, trusted=True, **over):
        from hal import sim
        from pile import log
        from pile.app import App
        log.echo = False
        self.dir = dir or fresh_dir()
        self.tolerant = False   # a failing control round goes to app.round_failed (as in its task)
        self.board = sim.Board(board or BOARD, {"storage": self.dir, "manual": True,
                                                "trusted": trusted,
                                                "epoch_ms": over.pop("epoch_ms", None)})
        c = cfg(app_id="hci", cpu_id="HCS220922001000", secret_key="k", **over)
        self.app = App(c, board or BOARD, self.board)
        self.gun, self.link = self.app.gun, self.app.link
        self.journal, self.prot = self.app.journal, self.app.prot
        self.sent = []
        self.link.publish = self._publish
        self.link.connected = online
        self.t = 0                      # board ms stepped so far
        if model and self.app.tariff.model is None:
            assert self.app.tariff.update(dict(COMPACT)) is None

    def _publish(self, topic, payload, qos=1, again=True):
        msg = json.loads(bytes(payload))
        cmd = msg["head"]["cmd"]
        self.sent.append((cmd, msg["body"], msg["head"]["session_id"]))
        return True

    def close(self):
        self.board.close()

    def events(self, *cmds):
        """What was sent, as (cmd, body), only these cmds when given."""
        return [(c, b) for c, b, _ in self.sent if not cmds or c in cmds]

    # --- time -----------------------------------------------------------------------------
    def step(self, ms=10):
        """Run the app's task rounds for `ms` of board time, 10 ms at a time."""
        for _ in range(max(1, ms // 10)):
            self.board.advance(10)
            self.t += 10
            self._round("control", self.app.control)
            if self.t % 50 == 0:
                self._round("measure", lambda: run(self.app.measure()))
            if self.t % 100 == 0:
                self._round("report", self.app.report)

    def _round(self, name, fn):
        try:
            fn()
        except Exception as e:      # tolerant: as the app's tasks do (round_failed)
            if not self.tolerant:
                raise
            self.app.round_failed(name, e)

    def until(self, pred, ms=10000, what="condition"):
        """Step until pred() holds; fail after ms of board time."""
        end = self.t + ms
        while not pred():
            assert self.t < end, "%s not reached in %d ms; work_status %d, CP %s\n%s" % (
                what, ms, self.gun.work_status(), self.gun.pilot.state,
                "\n".join(__import__("pile").log.lines()[-12:]))
            self.step()

    # --- the world and the platform -------------------------------------------------------
    def bench(self, cmd, **kw):
        kw["cmd"] = cmd
        r = self.board.bench(kw)
        assert r["ok"], r
        return r

    def deliver(self, cmd, body, sid=None, **head):
        """A platform service, through the app's own downlink path (decode, handler); sid:
        its head.session_id (by default a new one each time: a repeated one is a QoS 1
        redelivery, answered and not acted on)."""
        if sid is None:
            Pile.sid += 1
            sid = Pile.sid
        h = {"cmd": cmd, "dev_id": self.app.cfg["dev_id"], "session_id": sid}
        h.update(head)
        topic = "/sys/HCI-EVA7/%s/thing/service/%s" % (self.app.cfg["dev_id"], cmd)
        run(self.app.on_message(topic, json.dumps({"head": h, "body": body})))

    def ack(self, sid, result=10):
        """The platform acknowledges event `sid`."""
        topic = "/sys/HCI-EVA7/%s/thing/event/x/post_reply" % self.app.cfg["dev_id"]
        run(self.app.on_message(topic, json.dumps({
            "head": {"cmd": "xReply", "session_id": sid}, "body": {"result": result}})))
