"""MicroPython: what the four stall scripts share (bench_link.py runs them).

  micropython bench/stall_<client>.py HOST PORT USER PASSWORD PROFILE [CONTROL_PORT]

PROFILE "short": a 3 s keepalive (and the shortest back-off the client lets one set),
so that every failure path runs within a few seconds; "default": the client's own
defaults, for recovery times.  Each script runs its client as an application would, in
the same asyncio loop as a 10 ms heartbeat task: subscribed to one topic, publishing a
QoS 1 message every 500 ms.

Printed on stdout: "G <longest heartbeat gap ms> <online 0/1>" every 100 ms (the gap
since the previous line), and "C <online 0/1>" the moment the heartbeat sees the
client's own view of being online change.  A blocked loop prints nothing until it runs
again, so bench_link.py stamps each line on arrival.
"""
import asyncio
import sys
import time

HOST, PORT, USER, PASSWORD = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
PROFILE = sys.argv[5] if len(sys.argv) > 5 else "short"
SHORT = PROFILE == "short"
TOPIC = "/sys/BENCH/%s/thing/event/benchEvt/post" % USER
SERVICES = "/sys/BENCH/%s/thing/service/+" % USER
PUBLISH_MS = 500


class Report:
    def __init__(self, online):
        self.online = online        # () -> the client's own view of being online
        self.worst = 0
        self.was = None

    async def heartbeat(self):
        last = time.ticks_ms()
        while True:
            await asyncio.sleep_ms(10)
            now = time.ticks_ms()
            gap = time.ticks_diff(now, last)
            last = now
            if gap > self.worst:
                self.worst = gap
            up = 1 if self.online() else 0
            if up != self.was:
                self.was = up
                print("C %d" % up)

    async def lines(self):
        while True:
            await asyncio.sleep_ms(100)
            print("G %d %d" % (self.worst, self.was or 0))
            self.worst = 0


def run(online, *tasks):
    """Run the heartbeat, the reporter and the client's tasks (coroutines) forever."""
    rep = Report(online)

    async def main():
        for t in tasks:
            asyncio.create_task(t)
        asyncio.create_task(rep.heartbeat())
        await rep.lines()

    asyncio.run(main())
