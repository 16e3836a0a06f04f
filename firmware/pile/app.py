"""The application: builds every part from config and HAL, runs the asyncio tasks.

It owns the wiring between the platform link and the charge logic: downlink messages
are decoded once (protocol.decode) and routed to a handler per service; events go out
through send().  It is also the status surface for the serial REPL (status()).
"""
import asyncio
import gc
import time
from binascii import hexlify
from os import urandom

from pile import VERSION, log, store
from pile.link import Link
from pile.metering import Metering
from pile.orders import Journal
from pile.protection import Protection
from pile.protocol import FAILURE, SUCCESS, Protocol
from pile.provision import Provisioner
from pile.session import CHARGING, STARTING, Charger
from pile.tariff import Tariff

SEQ_FILE = "seq.json"
SEQ_STEP = 1000


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
        self.handlers = {"feeModelUpdateSrv": self.fee_model, "startChargeSrv": self.start,
                         "stopChargeSrv": self.stop}
        self.ack_handlers = {"orderUpdateEvt": self.journal.acked}
        self.reports = Reports(self)
        self.alive = {}           # critical task -> ticks of its last round
        self.hung = None          # bench: the task told to hang (watchdog test)
        board.bench_handlers.update({"stop": self._bench_stop, "status": self._bench_status,
                                     "hang": self._bench_hang})
        self.charger.recover()      # the journal raises and saves the register

    def _seq_base(self):
        """Event ids keep increasing across reboots: reserve them in blocks of SEQ_STEP."""
        base = store.load(SEQ_FILE, {}).get("next", 0)
        if not isinstance(base, int) or base < 0:
            base = 0
        store.save(SEQ_FILE, {"next": base + SEQ_STEP})
        return base

    # --- uplink ---------------------------------------------------------------------------
    def send(self, cmd, body, qos=1, status=0, item_id=None):
        """Queue one event; return its session_id (the key of its acknowledgement)."""
        sid, topic, payload = self.proto.event(cmd, body, status, item_id)
        if self.proto.seq % SEQ_STEP == 0:
            store.save(SEQ_FILE, {"next": self.proto.seq + SEQ_STEP})
        self.link.publish(topic, payload, qos)
        log.info("up", "%s #%d" % (cmd, sid))
        return sid

    def reply(self, cmd, session_id, body):
        topic, payload = self.proto.reply(cmd, session_id, body)
        self.link.publish(topic, payload, 1)
        log.info("up", "%sReply #%s result %s" % (cmd, session_id, body.get("result")))

    def on_connect(self):
        self.send("firmwareEvt", self.firmware_info())
        self.send("verInfoEvt", self.version_info())
        if self.prot.active:
            self.reports.faults()
        self.journal.resend_all()
        self.reports.status()

    def firmware_info(self):
        ident = self.board_cfg["identity"]
        rate = self.board_cfg["ratings"]
        body = {"dev_sn": self.cfg["dev_id"], "ele_model_id": self.tariff.model_id(),
                "bt_mac": " ", "im_mac": self.board.mac(), "sim_no": "",
                "in_meter": [], "out_meter": []}
        for key in ("dev_type", "stake_model", "vendor_code", "port_num", "mea_type", "ct",
                    "grid_type", "latitude", "longitude", "height"):
            body[key] = ident[key]
        for key in ("ot_rate", "ot_cur", "ot_max_vol", "ot_min_vol"):
            body[key] = rate[key]
        return body

    def version_info(self):
        ident = self.board_cfg["identity"]
        return {"dev_reg_method": ident["dev_reg_method"],
                "pile_hardware_ver": ident["hardware_ver"],
                "pile_software_ver": VERSION, "sdk_ver": self.cfg["sdk_ver"]}

    # --- downlink -------------------------------------------------------------------------
    def on_message(self, topic, payload):
        """Every platform message arrives here; nothing it contains may raise out."""
        try:
            self._route(topic, payload)
        except Exception as e:
            self.rejected += 1
            log.error("down", "handler failed on %s: %r" % (topic, e))

    def _route(self, topic, payload):
        kind = self.proto.decode(topic, payload)
        if kind[0] == "drop":
            return
        if kind[0] == "bad":
            self.rejected += 1
            _, why, cmd, sid = kind
            log.warn("down", "rejected %s: %s" % (cmd or topic, why))
            if cmd in self.handlers and isinstance(sid, int):
                self.reply(cmd, sid, {"result": FAILURE, "reason": why})
            return
        if kind[0] == "ack":
            _, cmd, sid, result = kind
            handler = self.ack_handlers.get(cmd)
            if handler:
                handler(sid, result)
            return
        _, cmd, sid, body = kind
        log.info("down", "%s #%d" % (cmd, sid))
        if not self.board.time_trusted() and self.proto.last_ts:
            self.board.set_time_ms(self.proto.last_ts)
            log.warn("app", "wall clock set from the platform's timestamp")
        handler = self.handlers.get(cmd)
        if handler is None:
            self.reply(cmd, sid, {"result": FAILURE, "reason": "not supported"})
        else:
            handler(sid, body)

    # --- services -----------------------------------------------------------------------
    def fee_model(self, sid, body):
        why = self.tariff.update(body)
        reply = {"result": FAILURE if why else SUCCESS, "ele_model_id": body["ele_model_id"]}
        if why:
            reply["reason"] = why
        self.reply("feeModelUpdateSrv", sid, reply)

    def start(self, sid, body):
        self._answer("startChargeSrv", sid, body, self.charger.start(body))

    def stop(self, sid, body):
        self._answer("stopChargeSrv", sid, body, self.charger.stop(body))

    def _answer(self, cmd, sid, body, outcome):
        result, why = outcome
        reply = {"result": result, "gun_no": body["gun_no"], "pre_trade_no": body["pre_trade_no"]}
        if why:
            reply["reason"] = why
        self.reply(cmd, sid, reply)

    # --- bench commands (simulated board) -------------------------------------------------
    def _bench_stop(self, req):
        self.charger.local_stop()
        return {"work_status": self.charger.work_status()}

    def _bench_status(self, req):
        return {"status": self.status()}

    def _bench_hang(self, req):
        if req.get("task") not in self.alive:
            return {"ok": False, "error": "task must be one of %s" % list(self.alive)}
        self.hung = req["task"]
        return {}

    # --- running --------------------------------------------------------------------------
    async def control(self):
        """Every 10 ms: protection, then the charge state machine."""
        while True:
            await self._round("control")
            self.prot.check()
            self.charger.set_link(self.link.connected)
            if self.board.stop_button():
                self.charger.local_stop()
            self.charger.tick()
            await asyncio.sleep_ms(10)

    async def measure(self):
        """Every 50 ms: one ADC burst, energy into the register and the session."""
        while True:
            await self._round("measure")
            mwh = self.metering.sample()
            c = self.charger
            c.v_mv, c.i_ma, c.p_mw = self.metering.mv, self.metering.ma, self.metering.mw
            c.add_energy(mwh)
            await asyncio.sleep_ms(50)

    async def report(self):
        while True:
            await self._round("report")
            self.reports.poll()
            self.journal.poll()
            await asyncio.sleep_ms(100)

    async def _round(self, name):
        while self.hung == name:        # bench "hang": this task stops going round
            await asyncio.sleep_ms(1000)
        self.alive[name] = time.ticks_ms()

    async def watchdog(self):
        """Feed the watchdog only while every critical task keeps going round.

        wdt_ms is board time (the simulated board divides it by its speed, down to its
        floor of real time); tasks sleep real time.  Feed at a quarter of the real
        timeout (at most every 100 ms) so that a fast simulated clock never starves it."""
        self.board.wdt_start(self.cfg["wdt_ms"])
        now = time.ticks_ms()
        for name in ("control", "measure", "report"):
            self.alive.setdefault(name, now)      # a task that never starts counts too
        while True:
            now = time.ticks_ms()
            if all(time.ticks_diff(now, t) < self.cfg["wdt_ms"] // 2
                   for t in self.alive.values()):
                self.board.wdt_feed()
            await asyncio.sleep_ms(max(5, min(100, self.cfg["wdt_ms"] // self.board.speed // 4)))

    # --- running --------------------------------------------------------------------------
    async def main(self):
        tasks = [asyncio.create_task(self.link.run())]
        for coro in self.board.tasks() + self.extra_tasks():
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

    def extra_tasks(self):
        return [self.control(), self.measure(), self.report(), self.watchdog()]

    def status(self):
        gc.collect()
        c = self.charger
        return {"dev_id": self.cfg["dev_id"], "work_status": c.work_status(),
                "cp": c.pilot.state, "duty": c.duty, "relay": self.board.relay_feedback(),
                "lock": self.board.lock_feedback(), "v_mv": c.v_mv, "i_ma": c.i_ma,
                "p_mw": c.p_mw, "temp_c": self.board.gun_temp_c(),
                "faults": self.prot.faults(), "warnings": self.prot.warnings(),
                "session": c.s["trade"] if c.s else None,
                "energy_mwh": sum(c.s["e"]) if c.s else 0,
                "register_mwh": self.metering.register(), "fee_model": self.tariff.model_id(),
                "orders_pending": len(self.journal.orders), "link": self.link.connected,
                "connects": self.link.connects, "link_error": self.link.last_error,
                "provision_error": self.prov.last_error, "rejected": self.rejected,
                "mem_alloc": gc.mem_alloc(), "mem_free": gc.mem_free()}


class Reports:
    """What the pile says unasked: telemetry, idle heartbeat, fault reports."""

    def __init__(self, app):
        self.app = app
        self.cfg = app.cfg
        self.next_status = None
        self.next_faults = None
        self.last_ws = None
        self.charging_since = None

    def poll(self):
        app, now = self.app, self.app.board.ticks_ms()
        if app.prot.changed:
            app.prot.changed = False
            self.faults()
        elif self.next_faults is not None and time.ticks_diff(now, self.next_faults) >= 0:
            self.faults()
        ws = app.charger.work_status()
        if ws != self.last_ws or self.next_status is None or \
                time.ticks_diff(now, self.next_status) >= 0:
            self.status()

    def status(self):
        app, now = self.app, self.app.board.ticks_ms()
        c = app.charger
        self.last_ws = c.work_status()
        if c.state == CHARGING:
            if self.charging_since is None:
                self.charging_since = now
            fast = time.ticks_diff(now, self.charging_since) < self.cfg["telemetry_fast_for_s"] * 1000
            every = self.cfg["telemetry_fast_s"] if fast else self.cfg["telemetry_slow_s"]
        else:
            self.charging_since = None
            every = self.cfg["telemetry_fast_s"] if c.state == STARTING else self.cfg["heartbeat_s"]
        self.next_status = time.ticks_add(now, every * 1000)
        if app.link.connected:
            app.send("acGunRunIty", c.telemetry(), qos=0)

    def faults(self):
        app = self.app
        faults, warns = app.prot.faults(), app.prot.warnings()
        body = {"gun_no": 1, "fault_su": len(faults), "warn_sum": len(warns),
                "fault_value": (faults + [0] * 30)[:30], "warnValue": (warns + [0] * 10)[:10]}
        item = hexlify(urandom(16)).decode().upper()
        app.send("totalFaultEvt", body, status=1, item_id=item)
        self.next_faults = time.ticks_add(app.board.ticks_ms(), self.cfg["fault_repeat_s"] * 1000) \
            if faults or warns else None
