"""The application: builds every part from config and HAL, runs the asyncio tasks.

Construction order, each part handed what it needs (nothing is wired afterwards):
storage and log -> protocol (the wire) -> provisioner -> link -> tariff -> protection ->
metering -> journal -> gun -> reports.  The tasks: "control" every 10 ms (the gun's
step), "measure" every 50 ms (one ADC burst, then a step), "report" every 100 ms (what
the pile says unasked, the journal's retries), the watchdog, the link and the board's
own.  Downlinks are decoded once (protocol.decode) and answered per service
(on_message).  It is also the status surface for the serial REPL (status()).
"""
import asyncio
import gc
import time

from micropython import const

from pile import VERSION, log, store
from pile.gun import Gun
from pile.journal import Journal
from pile.link import Link
from pile.metering import Metering
from pile.protection import Protection, thresholds
from pile.protocol import FAILURE, FEE, START, STOP, SUCCESS, Protocol
from pile.provision import Provisioner
from pile.reports import Reports
from pile.tariff import Tariff

_SEEN = const(8)          # services remembered by session_id (QoS 1 redelivery)


class App:
    def __init__(self, cfg, board_cfg, board):
        self.cfg, self.board_cfg, self.board = cfg, board_cfg, board
        self.storage_error = store.init(board.storage)
        if self.storage_error:
            log.error("store", self.storage_error)
        log.set_clock(board.now_ms)
        cfg["cpu_id"] = cfg["cpu_id"] or board.cpu_id()
        cfg["dev_id"] = cfg["dev_id"] or cfg["cpu_id"]
        self.proto = Protocol(cfg, board_cfg, board.now_ms, board.time_trusted)
        self.prov = Provisioner(cfg, board)
        self.link = Link(cfg, self.prov, board, self.on_message, self.on_connect)
        self.tariff = Tariff()
        p = thresholds(board_cfg, cfg)
        self.prot = Protection(board, p)
        self.metering = Metering(board, board_cfg, cfg, p["meter_dc_counts"])
        self.journal = Journal(cfg, self.link, self.proto, self.metering, board.ticks_ms)
        self.gun = Gun(board, cfg, board_cfg, self.prot, self.metering, self.journal,
                       self.tariff, self.storage_error)
        self.reports = Reports(cfg, board, self.proto, self.link, self.gun, self.prot,
                               self.journal, self.tariff)
        self.rejected = 0
        self.failed = 0           # task rounds that raised (out of memory, say)
        self.stepped = board.ticks_ms()     # board ticks of the last whole control step
        # [cmd, session_id, result, why] of the last SEEN services, a ring filled in place
        self.seen = [[None, None, 0, None] for _ in range(_SEEN)]
        self.seen_at = 0
        self.alive = {}           # critical task -> ticks of its last round
        self.hung = None          # bench: the task told to hang (watchdog test)
        for cmd in ("stop", "status", "hang"):
            board.bench_handlers[cmd] = self._bench
        self.gun.recover()

    def on_connect(self):
        self.reports.on_connect()

    # --- downlink -------------------------------------------------------------------------
    async def on_message(self, topic, payload):
        """Every platform message arrives here, is decoded once (protocol.decode) and
        answered per service; nothing it contains may raise out.  Out of memory before a
        service acted it raises MemoryError, and the link hands it over again later."""
        acted = False
        try:
            kind = self.proto.decode(topic, payload)
            if kind[0] == "drop":
                return
            if kind[0] == "bad":
                self.rejected += 1
                _, why, cmd, sid, ids = kind
                log.warn("down", "rejected %s: %s" % (cmd or topic, why))
                if cmd in (FEE, START, STOP) and sid is not None:
                    self._reply(cmd, sid, FAILURE, ids, why)
                return
            if kind[0] == "ack":
                _, cmd, sid, ok, ts = kind
                if ts and not self.board.time_trusted() and self.reports.fresh(sid):
                    self.board.set_time_ms(ts)      # the platform's now, a moment ago
                    log.warn("app", "clock set from the platform's acknowledgement")
                self.journal.acked(sid, ok)
                return
            _, cmd, sid, args, ts = kind
            log.info("down", "%s #%d" % (cmd, sid))
            for c, s, result, why in self.seen:
                if c == cmd and s == sid:       # delivered again (QoS 1): answered, not done
                    acted = True
                    log.warn("down", "%s #%d again: answered again" % (cmd, sid))
                    self._reply(cmd, sid, result, args, why)
                    return
            acted = True
            if cmd == FEE:
                why = self.tariff.update(args)
                result = FAILURE if why else SUCCESS
            elif cmd == START:
                # a start delivered late (a persistent session's backlog) is judged by its
                # age; a stop is always honoured; a service's time never sets the clock
                late = ts and self.board.time_trusted() and \
                    self.board.now_ms() - ts > self.cfg["start_max_age_s"] * 1000
                result, why = await self.gun.start(*args, late=late)
            else:
                result, why = self.gun.stop(*args)
            slot = self.seen[self.seen_at]      # in place: no allocation after the act
            slot[0] = cmd
            slot[1] = sid
            slot[2] = result
            slot[3] = why
            self.seen_at = (self.seen_at + 1) % _SEEN
            self._reply(cmd, sid, result, args, why)
        except Exception as e:              # out of memory after it acted: no reply;
            if not acted and isinstance(e, MemoryError):
                raise                       # (the link hands it over again)
            self.rejected += 1              # the platform's retry is answered then
            try:
                log.error("down", "handler failed on %s: %r" % (topic, e))
            except Exception:
                pass

    def _reply(self, cmd, sid, result, args, why):
        _, topic, payload = self.proto.reply(cmd, sid, result, args, why)
        self.link.publish(topic, payload, 1)
        log.info("up", "%sReply #%s result %s" % (cmd, sid, result))

    # --- bench commands (simulated board): stop, status, hang -----------------------------
    def _bench(self, req):
        cmd = req["cmd"]
        if cmd == "stop":
            self.gun.local_stop()
            return {"work_status": self.gun.work_status()}
        if cmd == "status":
            return {"status": self.status()}
        if req.get("task") not in self.alive:
            return {"ok": False, "error": "task must be one of %s" % list(self.alive)}
        self.hung = req["task"]
        return {}

    # --- running --------------------------------------------------------------------------
    def control(self):
        """One round of the "control" task (every 10 ms): the gun's step."""
        g = self.gun
        g.set_link(self.link.connected)
        if self.board.stop_button():
            g.local_stop()
        g.step()
        self.stepped = self.board.ticks_ms()    # the last step that ran whole
        self.reports.status_changed()

    async def measure(self):
        """One round of the "measure" task (every 50 ms): an ADC burst, then a step."""
        await self.gun.measure()

    def report(self):
        """One round of the "report" task (every 100 ms): what the pile says unasked, the
        journal's retries."""
        self.reports.poll()
        self.journal.poll()

    async def _task(self, name, period_ms):
        """A critical task, watched by the watchdog: "control", "measure" or "report".
        Nothing a round raises ends it: out of memory (a MemoryError may come from any
        allocation) or anything else, the round is counted and logged if it can be, and
        the next one tries again (every round is written so that a half round changes
        nothing that the next cannot finish: pile.gun, pile.reports, pile.journal)."""
        while True:
            while self.hung == name:        # bench "hang": this task stops going round
                await asyncio.sleep_ms(1000)
            self.alive[name] = time.ticks_ms()
            try:
                if name == "control":
                    self.control()
                elif name == "measure":
                    await self.measure()
                else:
                    self.report()
            except Exception as e:          # MemoryError included
                self.round_failed(name, e)
            await asyncio.sleep_ms(period_ms)

    def round_failed(self, name, e):
        """A round of task `name` raised e (out of memory, say): counted, logged if it
        can be; when the control step has not run whole for fail_safe_ms, the gun's
        fail-safe.  Allocates nothing until the log line."""
        self.failed += 1
        if name == "control" and time.ticks_diff(
                self.board.ticks_ms(), self.stepped) >= self.cfg["fail_safe_ms"]:
            self.gun.fail_safe()
        try:
            log.error("app", "%s round failed: %r" % (name, e))
        except Exception:           # (formatting the line needs memory too)
            pass

    async def watchdog(self):
        """Feed the watchdog only while every critical task keeps going round.

        wdt_ms is board time (the simulated board divides it by its speed, down to its
        floor of real time); tasks sleep real time.  Feed at a quarter of the real
        timeout (at most every 100 ms) so that a fast simulated clock never starves it."""
        wdt_ms = self.cfg["wdt_ms"]
        self.board.wdt_start(wdt_ms)
        now = time.ticks_ms()
        for name in ("control", "measure", "report"):
            self.alive.setdefault(name, now)      # a task that never starts counts too
        while True:                 # allocates nothing: it goes on while memory is short
            now, ok = time.ticks_ms(), True
            for name in self.alive:
                ok = ok and time.ticks_diff(now, self.alive[name]) < wdt_ms // 2
            if ok:
                self.board.wdt_feed()
            await asyncio.sleep_ms(max(5, min(100, wdt_ms // self.board.speed // 4)))

    async def main(self):
        tasks = []
        for coro in [self.link.run()] + self.board.tasks() + [
                self._task("control", 10), self._task("measure", 50),
                self._task("report", 100), self.watchdog()]:
            tasks.append(asyncio.create_task(coro))
        log.info("app", "pile %s up (firmware %s)" % (self.cfg["dev_id"], VERSION))
        try:
            while True:
                self.board.net_poll()
                await asyncio.sleep_ms(1000)
        finally:
            for task in tasks:
                task.cancel()
            self.board.shutdown()

    def status(self):
        """The REPL's and the bench's view of the pile (docs/field-guide.md, diag.status)."""
        gc.collect()
        g, b, m, s = self.gun, self.board, self.metering, self.gun.s
        t = b.gun_temp()
        return dict(dev_id=self.cfg["dev_id"], work_status=g.work_status(),
                    cp=g.pilot.state, duty=g.duty, relay=b.relay_feedback(),
                    lock=b.lock_feedback(), v_mv=m.mv, i_ma=m.ma, p_mw=m.mw,
                    temp_c=None if t is None else t / 10, faults=self.prot.codes(),
                    warnings=self.prot.codes("W"), session=s.trade if s else None,
                    energy_mwh=sum(s.e) if s else 0, register_mwh=m.register(),
                    fee_model=self.tariff.model_id(), orders_pending=self.journal.orders(),
                    journal=len(self.journal.recs),
                    link=self.link.connected, connects=self.link.connects,
                    link_error=self.link.last_error, provision_error=self.prov.last_error,
                    rejected=self.rejected, failed=self.failed,
                    storage_error=self.storage_error, flash=store.written,
                    mem_alloc=gc.mem_alloc(), mem_free=gc.mem_free())
