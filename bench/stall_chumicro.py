"""MicroPython: chumicro-mqtt (PyPI, pinned in tools/fetch_peers.py) beside a 10 ms
heartbeat task (run by bench_link.py), for comparison with stall_link.py.

  micropython bench/stall_chumicro.py HOST PORT USER PASSWORD PROFILE
See stall_kit.py for the arguments and what is printed.  The client is tick-driven (no
asyncio): an asyncio task runs its check()/handle() every 10 ms, as its README's tick
loop does; the transport is chumicro-sockets' non-blocking connector and the client
heals itself (reconnects with a back-off from 1 s doubling to 60 s).  The subscription
is declared before connect(); a QoS 1 publish every 500 ms (queued while offline, up to
its pre-connect queue of 8; a full queue raises and that message is dropped here).
PROFILE "short": keepalive 3 s; "default": its 60 s (acknowledgement timeout 5 s,
3 retries of a QoS 1 publish, in both).
"""
import asyncio

import stall_kit as kit
from chumicro_mqtt import MQTTClient
from chumicro_mqtt._wire import MQTTError
from chumicro_sockets.sockets_factory import fixed_connector_factory
from chumicro_timing import ticks_ms

kw = {"keep_alive_seconds": 3} if kit.SHORT else {}
client = MQTTClient(transport_factory=fixed_connector_factory(kit.HOST, kit.PORT),
                    client_id=kit.USER, username=kit.USER, password=kit.PASSWORD, **kw)
client.subscribe(kit.SERVICES, 1)
client.connect()


async def tick():
    while True:
        now = ticks_ms()
        if client.check(now):
            client.handle(now)
        await asyncio.sleep_ms(10)


async def app():
    n = 0
    while True:
        await asyncio.sleep_ms(kit.PUBLISH_MS)
        n += 1
        try:
            client.publish(kit.TOPIC, '{"n": %d}' % n, qos=1)
        except MQTTError:
            pass


kit.run(lambda: client.state == "connected", tick(), app())
