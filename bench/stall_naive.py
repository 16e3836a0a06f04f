"""MicroPython: a naive umqtt.simple loop beside a 10 ms heartbeat task (run by
bench_link.py), for comparison with stall_link.py.

  micropython bench/stall_naive.py HOST PORT USER PASSWORD
The usual pattern: blocking connect() and subscribe(), check_msg() every 10 ms, ping()
every keepalive/2, publish(qos=1) every 500 ms, reconnect after any OSError.
Prints "G <max heartbeat gap ms> <connected 0/1>" every 100 ms.
"""
import asyncio
import sys
import time

from umqtt.simple import MQTTClient

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
worst = 0
connected = False


async def heartbeat():
    global worst
    last = time.ticks_ms()
    while True:
        await asyncio.sleep_ms(10)
        now = time.ticks_ms()
        worst = max(worst, time.ticks_diff(now, last))
        last = now


async def mqtt():
    global connected
    client = None
    topic = "/sys/BENCH/%s/thing/event/benchEvt/post" % user
    last_ping = last_pub = time.ticks_ms()
    while True:
        try:
            if client is None:
                client = MQTTClient(user, host, port, user, password, keepalive=3)
                client.set_callback(lambda t, m: None)
                client.connect()
                client.subscribe("/sys/BENCH/%s/thing/service/+" % user, 1)
                connected = True
            client.check_msg()
            now = time.ticks_ms()
            if time.ticks_diff(now, last_ping) > 1500:
                client.ping()
                last_ping = now
            if time.ticks_diff(now, last_pub) > 500:
                client.publish(topic, b'{"n": 1}', qos=1)
                last_pub = now
        except (OSError, IndexError, AssertionError):
            connected = False
            if client is not None and client.sock is not None:
                client.sock.close()
            client = None
            await asyncio.sleep_ms(200)
        await asyncio.sleep_ms(10)


async def main():
    global worst
    asyncio.create_task(heartbeat())
    asyncio.create_task(mqtt())
    while True:
        await asyncio.sleep_ms(100)
        print("G %d %d" % (worst, connected))
        worst = 0


asyncio.run(main())
