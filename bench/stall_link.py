"""MicroPython: the firmware's Link beside a 10 ms heartbeat task (run by bench_link.py).

  micropython bench/stall_link.py HOST PORT USER PASSWORD PROFILE [CONTROL_PORT]
See stall_kit.py for the arguments and what is printed.  PROFILE "short": keepalive 3 s,
back-off 200..1000 ms, connect timeout 2 s; "default": pile/config.py DEFAULTS.
The board is a stand-in with only what the Link asks of it: net_up() and
time_trusted().  A datagram "net 0" / "net 1" on 127.0.0.1:CONTROL_PORT takes the
board's network down or up: what the simulated board's bench {"cmd":"net","up":false}
does (its net_up() answers False; the TCP connection itself is left as it is).
"""
import asyncio
import socket
import sys

import stall_kit as kit
from pile import config, link, log

CREDS = {"mqtt_account": kit.USER, "mqtt_password": kit.PASSWORD, "mqtt_id": kit.USER,
         "mqtt_server_addr": "tcp://%s:%d" % (kit.HOST, kit.PORT)}
cfg = dict(config.DEFAULTS, product_type="BENCH", dev_id=kit.USER)
if kit.SHORT:
    cfg.update(keepalive_s=3, backoff_min_ms=200, backoff_max_ms=1000, connect_timeout_ms=2000)


class Board:
    """The board as far as the Link is concerned."""
    net = True

    def net_up(self):
        return self.net

    def time_trusted(self):
        return True


class Prov:
    """Stands in for provisioning: fixed credentials."""
    stored = True

    async def creds(self):
        return CREDS

    def forget(self, why):
        print("forget:", why)


async def on_message(topic, msg):
    pass


async def control(board, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    s.setblocking(False)
    while True:
        await asyncio.sleep_ms(20)
        try:
            cmd = s.recv(16)
        except OSError:
            continue
        board.net = cmd != b"net 0"


async def publisher(lk):
    n = 0
    while True:
        await asyncio.sleep_ms(kit.PUBLISH_MS)
        n += 1
        lk.publish(kit.TOPIC, '{"n": %d}' % n, 1)


log.echo = False
board = Board()
lk = link.Link(cfg, Prov(), board, on_message, lambda: None)
tasks = [lk.run(), publisher(lk)]
if len(sys.argv) > 6:
    tasks.append(control(board, int(sys.argv[6])))
kit.run(lambda: lk.connected, *tasks)
