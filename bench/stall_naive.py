"""MicroPython: a naive umqtt.simple loop beside a 10 ms heartbeat task (run by
bench_link.py), for comparison with stall_link.py.

  micropython bench/stall_naive.py HOST PORT USER PASSWORD PROFILE
See stall_kit.py for the arguments and what is printed.  The usual pattern: blocking
connect() and subscribe(), check_msg() every 10 ms, publish(qos=1) every 500 ms (which
waits for its PUBACK), reconnect 200 ms after any error.  PROFILE "short": keepalive 3 s
and ping() every 1.5 s; "default": umqtt.simple's keepalive 0 (no pings).
"""
import asyncio
import time

import stall_kit as kit
from umqtt.simple import MQTTClient

KEEPALIVE = 3 if kit.SHORT else 0
client = None


async def mqtt():
    global client
    last_ping = last_pub = time.ticks_ms()
    c = None
    while True:
        try:
            if client is None:
                c = MQTTClient(kit.USER, kit.HOST, kit.PORT, kit.USER, kit.PASSWORD,
                               keepalive=KEEPALIVE)
                c.set_callback(lambda t, m: None)
                c.connect()
                c.subscribe(kit.SERVICES, 1)
                client = c
            client.check_msg()
            now = time.ticks_ms()
            if KEEPALIVE and time.ticks_diff(now, last_ping) > KEEPALIVE * 500:
                client.ping()
                last_ping = now
            if time.ticks_diff(now, last_pub) > kit.PUBLISH_MS:
                client.publish(kit.TOPIC, b'{"n": 1}', qos=1)
                last_pub = now
        except (OSError, IndexError, AssertionError):
            if c is not None and c.sock is not None:
                c.sock.close()
            client = c = None
            await asyncio.sleep_ms(200)
        await asyncio.sleep_ms(10)


kit.run(lambda: client is not None, mqtt())
