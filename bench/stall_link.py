"""MicroPython: the firmware's Link beside a 10 ms heartbeat task (run by bench_link.py).

  micropython bench/stall_link.py HOST PORT USER PASSWORD
Prints "G <max heartbeat gap ms> <connected 0/1>" every 100 ms; publishes one QoS 1
message every 500 ms so the outbox and acknowledgements are exercised too.
"""
import asyncio
import sys
import time

from pile import config, link, log

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
CREDS = {"mqtt_account": user, "mqtt_password": password, "mqtt_id": user,
         "mqtt_server_addr": "tcp://%s:%d" % (host, port)}
cfg = dict(config.DEFAULTS, product_type="BENCH", dev_id=user, keepalive_s=3,
           backoff_min_ms=200, backoff_max_ms=1000, connect_timeout_ms=2000)
worst = 0


class Prov:
    """Stands in for provisioning: fixed credentials."""
    async def creds(self):
        return CREDS

    def forget(self, why):
        print("forget:", why)


async def heartbeat():
    global worst
    last = time.ticks_ms()
    while True:
        await asyncio.sleep_ms(10)
        now = time.ticks_ms()
        worst = max(worst, time.ticks_diff(now, last))
        last = now


async def main():
    global worst
    log.echo = False
    lk = link.Link(cfg, Prov(), lambda t, m: None, lambda: None)
    asyncio.create_task(lk.run())
    asyncio.create_task(heartbeat())
    topic = "/sys/BENCH/%s/thing/event/benchEvt/post" % user
    n = 0
    while True:
        await asyncio.sleep_ms(100)
        n += 1
        if n % 5 == 0:
            lk.publish(topic, ('{"n": %d}' % n).encode(), 1)
        print("G %d %d" % (worst, lk.connected))
        worst = 0


asyncio.run(main())
