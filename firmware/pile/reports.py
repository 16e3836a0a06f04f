"""Reports: what the pile says unasked (PROTOCOL.md section 6).

At every (re)connection: firmwareEvt, verInfoEvt, totalFaultEvt while any fault or warning
is active, every journal record again, and acGunRunIty.  poll() runs every 100 ms:
totalFaultEvt on every change of the active set and every fault_repeat_s while anything
is active; acGunRunIty every telemetry_fast_s while starting and for the first
telemetry_fast_for_s of charging, then every telemetry_slow_s, and every heartbeat_s
otherwise.  status_changed() runs after every control step: a change of work_status is
reported at once, at most every status_min_ms.  Telemetry (QoS 0) is not queued while the
link is down; fault reports (QoS 1) wait in the link's outbox.
Until the wall clock is trusted only the announcements go out (head.timestamp 0): the
platform's acknowledgement of them (fresh()) is what sets the clock; fault reports and
telemetry wait for it, the journal too.

Every report is marked done only once it is out: one that fails (out of memory, say) is
made again at the next round, nothing is half-done (on_connect() itself only says what
is due; poll() does it).
"""
import time
from binascii import hexlify
from os import urandom

from pile import VERSION, log
from pile.gun import CHARGING, STARTING
from pile.protection import WARN


class Reports:
    def __init__(self, cfg, board, proto, link, gun, prot, journal, tariff):
        self.cfg, self.board, self.proto, self.link = cfg, board, proto, link
        self.gun, self.prot, self.journal, self.tariff = gun, prot, journal, tariff
        self.next_status = self.next_faults = self.last_ws = self.charging_since = None
        self.announce = 0       # announcements still due on this connection (2, 1, 0)
        self.probe = [0, 0, 0]  # their ids, and the ticks they went out
        self.sent_t = board.ticks_ms() - cfg["status_min_ms"]  # the last acGunRunIty

    def _send(self, msg, qos=1):
        sid, topic, payload = msg
        self.link.publish(topic, payload, qos)
        log.info("up", "%s #%d" % (self.proto.cmd, sid))
        return sid

    def on_connect(self):
        """Called by the link at every (re)connection: says what is due."""
        self.announce = 2
        self.prot.changed = bool(self.prot.active)
        self.next_status = None
        self.journal.resend_all(now=False)
        self.poll()

    def fresh(self, sid):
        """Whether sid is an announcement of this connection sent in the last 10 s: its
        acknowledgement carries the platform's time of now (a late one does not)."""
        p = self.probe
        return sid in p[:2] and time.ticks_diff(self.board.ticks_ms(), p[2]) < 10000

    def status(self):
        """acGunRunIty now, and when the next one is due (see above)."""
        g, cfg, now = self.gun, self.cfg, self.board.ticks_ms()
        ws = g.work_status()
        if self.link.connected:
            self._send(self.proto.status(self._gun_status()), 0)
            self.sent_t = now
        self.last_ws = ws
        if g.state == CHARGING:
            if self.charging_since is None:
                self.charging_since = now
            fast = time.ticks_diff(now, self.charging_since) < cfg["telemetry_fast_for_s"] * 1000
            every = cfg["telemetry_fast_s"] if fast else cfg["telemetry_slow_s"]
        else:
            self.charging_since = None
            every = cfg["telemetry_fast_s"] if g.state == STARTING else cfg["heartbeat_s"]
        self.next_status = time.ticks_add(now, every * 1000)

    def _gun_status(self):
        """acGunRunIty's values (pile.protocol.status): work_status, plugged, locked, relay
        closed, duty, mV, mA, mW, 0.1 degC, trade, charged ms, energy per band, model;
        current and power 0 with the relay open; after a session, until the unplug, the
        finished session's trade and totals."""
        g, b, m = self.gun, self.board, self.gun.metering
        s = g.s or g.last                   # finished, still plugged: its trade, totals
        closed = b.relay_feedback()
        return (g.work_status(), g.pilot.state in "BCD", b.lock_feedback(), closed,
                g.duty, m.mv, m.ma if closed else 0, m.mw if closed else 0, b.gun_temp(),
                s.trade if s else "", s.chg_ms if s else 0, s.e if s else _NONE,
                s.model if s else None)

    def faults(self):
        """totalFaultEvt; again every fault_repeat_s while any fault or warning lasts."""
        p = self.prot
        codes, warns = p.codes(), p.codes(WARN)
        self._send(self.proto.faults(codes, warns, hexlify(urandom(16)).decode().upper()))
        p.changed = False
        self.next_faults = None
        if codes or warns:
            self.next_faults = time.ticks_add(self.board.ticks_ms(),
                                              self.cfg["fault_repeat_s"] * 1000)

    def status_changed(self):
        """A change of work_status is reported at once, but at most every status_min_ms:
        a flapping input (a bouncing plug) makes one report a second, the last state
        always reported (the next one is due then, and says what is true by then)."""
        if self.gun.work_status() == self.last_ws or not self.board.time_trusted():
            return
        soon = time.ticks_add(self.sent_t, self.cfg["status_min_ms"])
        if time.ticks_diff(self.board.ticks_ms(), soon) >= 0:
            self.status()
        elif self.next_status is None or time.ticks_diff(self.next_status, soon) > 0:
            self.next_status = soon

    def poll(self):
        if self.announce and self.link.connected:
            p = self.proto
            while self.announce:
                if self.announce == 2:
                    self.probe[0] = self._send(p.firmware(self.tariff.model_id(),
                                                          self.board.mac()))
                else:
                    self.probe[1] = self._send(p.version(VERSION))
                self.probe[2] = self.board.ticks_ms()
                self.announce -= 1
        if not self.board.time_trusted():
            return                  # nothing with a time stamp before the clock is known
        now = self.board.ticks_ms()
        if self.prot.changed or self.next_faults is not None and \
                time.ticks_diff(now, self.next_faults) >= 0:
            self.faults()
        if self.next_status is None or time.ticks_diff(now, self.next_status) >= 0:
            self.status()


_NONE = [0, 0, 0, 0]
