"""The application: builds every part from config and HAL, runs the asyncio tasks.

It owns the wiring between the platform link and the charge logic: downlink messages
are decoded once (protocol.decode) and answered per service (on_message); events go out
through send(); what the pile says unasked (telemetry, heartbeat, fault reports) goes
out from the report task.  It is also the status surface for the serial REPL (status()).
"""
import asyncio
import gc
import time
from binascii import hexlify
from os import urandom

from micropython import const

from pile import VERSION, log, store
from pile.link import Link
from pile.metering import Metering
from pile.orders import Journal
from pile.protection import Protection
from pile.protocol import FAILURE, SUCCESS, Protocol
from pile.provision import Provisioner
from pile.session import Charger
from pile.tariff import Tariff

_SEQ_FILE = const("seq.json")
_SEQ_STEP = const(1000)
_STARTING = const(12)       # work_status (pile.session)
_CHARGING = const(13)


class App:
    def __init__(self, cfg, board_cfg, board):
        self.cfg = cfg
        self.board_cfg = board_cfg
        self.board = board
        store.root = board.storage
        log.set_clock(board.now_ms)
        cfg["cpu_id"] = cfg["cpu_id"] or board.cpu_id()
        cfg["dev_id"] = cfg["dev_id"] or cfg["cpu_id"]
        self.proto = Protocol(cfg, board.now_ms, self._seq_base())
        self.prov = Provisioner(cfg)
        self.link = Link(cfg, self.prov, self.on_message, self.on_connect)
        self.rejected = 0
        self.tariff = Tariff()
        self.journal = Journal(self.send, cfg, board.ticks_ms)
        self.prot = Protection(board, board_cfg, cfg)
        self.metering = Metering(board, board_cfg, cfg)
        self.journal.link, self.journal.settle = self.link, self.metering.raise_to
        self.metering.raise_to(self.journal.top * 1000)    # never behind an order
        self.charger = Charger(board, cfg, board_cfg, self.tariff, self.journal, self.send,
                               self.prot)
        self.charger.meter_register = self.metering.register
        self.prot.charger, self.prot.metering = self.charger, self.metering
        # what the pile says unasked (_telemetry, _faults): when next, and what was said
        self.next_status = self.next_faults = self.last_ws = self.charging_since = None
        self.alive = {}           # critical task -> ticks of its last round
        self.hung = None          # bench: the task told to hang (watchdog test)
        for cmd in ("stop", "status", "hang"):
            board.bench_handlers[cmd] = self._bench
        self.charger.recover()      # the journal raises and saves the register

    def _seq_base(self):
        """Event ids keep increasing across reboots: reserve them in blocks of SEQ_STEP."""
        base = store.load(_SEQ_FILE, {}).get("next", 0)
        if not isinstance(base, int) or base < 0:
            base = 0
        store.save(_SEQ_FILE, {"next": base + _SEQ_STEP})
        return base

    # --- uplink ---------------------------------------------------------------------------
    def send(self, cmd, body, qos=1, status=0, item_id=None, again=True):
        """Queue one event; return its session_id (the key of its acknowledgement)."""
        sid, topic, payload = self.proto.event(cmd, body, status, item_id)
        if self.proto.seq % _SEQ_STEP == 0:
            store.save(_SEQ_FILE, {"next": self.proto.seq + _SEQ_STEP})
        self.link.publish(topic, payload, qos, again)
        log.info("up", "%s #%d" % (cmd, sid))
        return sid

    def reply(self, cmd, session_id, body):
        topic, payload = self.proto.reply(cmd, session_id, body)
        self.link.publish(topic, payload, 1)
        log.info("up", "%sReply #%s result %s" % (cmd, session_id, body.get("result")))

    def on_connect(self):
        """Every (re)connection: who the pile is, faults, pending orders, its state."""
        i, r, cfg = self.board_cfg["identity"], self.board_cfg["ratings"], self.cfg
        self.send("firmwareEvt", dict(
            dev_sn=cfg["dev_id"], ele_model_id=self.tariff.model_id(), bt_mac=" ",
            im_mac=self.board.mac(), sim_no="", in_meter=[], out_meter=[],
            dev_type=i["dev_type"], stake_model=i["stake_model"],
            vendor_code=i["vendor_code"], port_num=i["port_num"], mea_type=i["mea_type"],
            ct=i["ct"], grid_type=i["grid_type"], latitude=i["latitude"],
            longitude=i["longitude"], height=i["height"], ot_rate=r["ot_rate"],
            ot_cur=r["ot_cur"], ot_max_vol=r["ot_max_vol"], ot_min_vol=r["ot_min_vol"]))
        self.send("verInfoEvt", dict(
            dev_reg_method=i["dev_reg_method"], pile_hardware_ver=i["hardware_ver"],
            pile_software_ver=VERSION, sdk_ver=cfg["sdk_ver"]))
        if self.prot.active:
            self._faults()
        self.journal.resend_all()
        self._telemetry()

    # --- downlink -------------------------------------------------------------------------
    def on_message(self, topic, payload):
        """Every platform message arrives here, is decoded once (protocol.decode) and
        answered per service; nothing it contains may raise out."""
        try:
            kind = self.proto.decode(topic, payload)
            if kind[0] == "drop":
                return
            if kind[0] == "bad":
                self.rejected += 1
                _, why, cmd, sid = kind
                log.warn("down", "rejected %s: %s" % (cmd or topic, why))
                if cmd in ("feeModelUpdateSrv", "startChargeSrv", "stopChargeSrv") and \
                        isinstance(sid, int):
                    self.reply(cmd, sid, {"result": FAILURE, "reason": why})
                return
            if kind[0] == "ack":
                _, cmd, sid, result = kind
                if cmd == "orderUpdateEvt":
                    self.journal.acked(sid, result)
                return
            _, cmd, sid, body = kind
            log.info("down", "%s #%d" % (cmd, sid))
            if not self.board.time_trusted() and self.proto.last_ts:
                self.board.set_time_ms(self.proto.last_ts)
                log.warn("app", "clock set from the platform")
            if cmd == "feeModelUpdateSrv":
                why = self.tariff.update(body)
                reply = {"result": FAILURE if why else SUCCESS,
                         "ele_model_id": body["ele_model_id"]}
            elif cmd == "startChargeSrv" or cmd == "stopChargeSrv":
                result, why = self.charger.start(body) if cmd == "startChargeSrv" \
                    else self.charger.stop(body)
                reply = {"result": result, "gun_no": body["gun_no"],
                         "pre_trade_no": body["pre_trade_no"]}
            else:
                reply, why = {"result": FAILURE}, "not supported"
            if why:
                reply["reason"] = why
            self.reply(cmd, sid, reply)
        except Exception as e:
            self.rejected += 1
            log.error("down", "handler failed on %s: %r" % (topic, e))

    # --- bench commands (simulated board): stop, status, hang -----------------------------
    def _bench(self, req):
        cmd = req["cmd"]
        if cmd == "stop":
            self.charger.local_stop()
            return {"work_status": self.charger.work_status()}
        if cmd == "status":
            return {"status": self.status()}
        if req.get("task") not in self.alive:
            return {"ok": False, "error": "task must be one of %s" % list(self.alive)}
        self.hung = req["task"]
        return {}

    # --- what the pile says unasked -------------------------------------------------------
    def _telemetry(self):
        """acGunRunIty now, and when the next one is due: telemetry_fast_s while starting
        and for the first telemetry_fast_for_s of charging, then telemetry_slow_s;
        heartbeat_s otherwise (and at once on a change of work_status)."""
        c, cfg, now = self.charger, self.cfg, self.board.ticks_ms()
        self.last_ws = c.work_status()
        if c.state == _CHARGING:
            if self.charging_since is None:
                self.charging_since = now
            fast = time.ticks_diff(now, self.charging_since) < cfg["telemetry_fast_for_s"] * 1000
            every = cfg["telemetry_fast_s"] if fast else cfg["telemetry_slow_s"]
        else:
            self.charging_since = None
            every = cfg["telemetry_fast_s"] if c.state == _STARTING else cfg["heartbeat_s"]
        self.next_status = time.ticks_add(now, every * 1000)
        if self.link.connected:
            self.send("acGunRunIty", c.telemetry(), qos=0)

    def _faults(self):
        """totalFaultEvt; again every fault_repeat_s while any fault or warning lasts."""
        faults, warns = self.prot.faults(), self.prot.warnings()
        body = dict(gun_no=1, fault_su=len(faults), warn_sum=len(warns),
                    fault_value=(faults + [0] * 30)[:30], warnValue=(warns + [0] * 10)[:10])
        item = hexlify(urandom(16)).decode().upper()
        self.send("totalFaultEvt", body, status=1, item_id=item)
        self.next_faults = None
        if faults or warns:
            self.next_faults = time.ticks_add(self.board.ticks_ms(),
                                              self.cfg["fault_repeat_s"] * 1000)

    # --- running --------------------------------------------------------------------------
    async def _task(self, name, period_ms):
        """A critical task, watched by the watchdog: "control" every 10 ms (protection,
        then the charge state machine), "measure" every 50 ms (one ADC burst, energy into
        the register and the session), "report" every 100 ms (faults, telemetry, the
        order journal)."""
        c = self.charger
        while True:
            while self.hung == name:        # bench "hang": this task stops going round
                await asyncio.sleep_ms(1000)
            self.alive[name] = time.ticks_ms()
            if name == "control":
                self.prot.check()
                c.set_link(self.link.connected)
                if self.board.stop_button():
                    c.local_stop()
                c.tick()
                if c.work_status() != self.last_ws:   # every change is reported
                    self._telemetry()
            elif name == "measure":
                m = self.metering
                mwh = m.sample()
                c.v_mv, c.i_ma, c.p_mw = m.mv, m.ma, m.mw
                c.add_energy(mwh)
                self.prot.check()           # a fresh reading trips now, not next tick
            else:
                now = self.board.ticks_ms()
                if self.prot.changed or self.next_faults is not None and \
                        time.ticks_diff(now, self.next_faults) >= 0:
                    self.prot.changed = False
                    self._faults()
                if self.next_status is None or time.ticks_diff(now, self.next_status) >= 0:
                    self._telemetry()
                self.journal.poll()
            await asyncio.sleep_ms(period_ms)

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
        while True:
            now = time.ticks_ms()
            if all(time.ticks_diff(now, t) < wdt_ms // 2 for t in self.alive.values()):
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
        c, b, s = self.charger, self.board, self.charger.s
        return dict(dev_id=self.cfg["dev_id"], work_status=c.work_status(),
                    cp=c.pilot.state, duty=c.duty, relay=b.relay_feedback(),
                    lock=b.lock_feedback(), v_mv=c.v_mv, i_ma=c.i_ma, p_mw=c.p_mw,
                    temp_c=b.gun_temp_c(), faults=self.prot.faults(),
                    warnings=self.prot.warnings(), session=s["trade"] if s else None,
                    energy_mwh=sum(s["e"]) if s else 0,
                    register_mwh=self.metering.register(), fee_model=self.tariff.model_id(),
                    orders_pending=len(self.journal.orders), link=self.link.connected,
                    connects=self.link.connects, link_error=self.link.last_error,
                    provision_error=self.prov.last_error, rejected=self.rejected,
                    mem_alloc=gc.mem_alloc(), mem_free=gc.mem_free())
