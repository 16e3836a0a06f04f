"""MicroPython: aiomqttc (PyPI, pinned in tools/fetch_peers.py) beside a 10 ms heartbeat
task (run by bench_link.py), for comparison with stall_link.py.

  micropython bench/stall_aiomqttc.py HOST PORT USER PASSWORD PROFILE
See stall_kit.py for the arguments and what is printed.  Used as its README shows: an
on_connect callback subscribes, the application awaits publish(qos=1) (which connects
first when not connected, and waits up to 5 s for the PUBACK) every 500 ms.  Its own
reconnection is off by default (reconnect_interval 0), so that publish() is what brings
it back.  PROFILE "short": keepalive 3 s; "default": its 60 s.
The unix port has no machine.RTC, which aiomqttc's log() reads for every line it prints
(each connect, PUBACK, failure): the bench gives it one made of time.gmtime, or its first
log line raises.
"""
import asyncio
import time

import aiomqttc
import stall_kit as kit


class RTC:
    def datetime(self):
        t = time.gmtime()
        return t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0


aiomqttc.hal_rtc = RTC

kw = {"keepalive": 3} if kit.SHORT else {}
client = aiomqttc.MQTTClient(client_id=kit.USER, server=kit.HOST, port=kit.PORT,
                             user=kit.USER, password=kit.PASSWORD, **kw)


async def on_connect(c, rc):
    await client.subscribe(kit.SERVICES, qos=1)


async def on_message(c, topic, msg, retain):
    pass


client.on_connect = on_connect
client.on_message = on_message


async def app():
    n = 0
    while True:
        n += 1
        try:
            await client.publish(kit.TOPIC, '{"n": %d}' % n, qos=1)
        except Exception as e:      # a failure inside it is the application's to survive
            print("publish raised", repr(e))
        await asyncio.sleep_ms(kit.PUBLISH_MS)


kit.run(lambda: client.connected, app())
