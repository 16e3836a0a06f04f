"""The link's outbox: the messages waiting to be sent, and the QoS 1 ones waiting for
their PUBACK, in one preallocated buffer.

The topic and payload of each message lie back to back in `box` (SIZE bytes, allocated
once, at boot), so no message-sized block is allocated per message; `q` holds an entry
per message, oldest first: [topic length, payload length, qos, packet id once sent (None
before), again].  A QoS 1 message stays until its PUBACK and is sent again after a
reconnect, unless its sender resends it itself (again=False).  When the buffer is full
the oldest QoS 0 message goes, else the oldest one.  `lead` is the first entry queued
by on_connect (the announcements): sending starts there.
"""
from micropython import const

from pile import log

_TLEN = const(0)
_PLEN = const(1)
QOS = const(2)
PID = const(3)
_AGAIN = const(4)


class Outbox:
    def __init__(self, size):
        self.size = size
        self.box = bytearray(size)
        self.used = 0
        self.q = []
        self.lead = 0

    def put(self, topic, payload, qos, again):
        """Copy a message in (topic, payload: str or bytes-like); False when it is larger
        than the whole outbox (logged, dropped)."""
        t, p = memoryview(topic), memoryview(payload)
        n = len(t) + len(p)
        if n > self.size:
            log.error("link", "message of %d bytes dropped: over the outbox" % n)
            return False
        while self.used + n > self.size:    # room: the oldest QoS 0 goes, else the oldest
            k = 0
            for i in range(len(self.q)):
                if self.q[i][QOS] == 0:
                    k = i
                    break
            log.warn("link", "outbox full: a message dropped")
            self.drop(k)
        m = memoryview(self.box)
        m[self.used:self.used + len(t)] = t
        m[self.used + len(t):self.used + n] = p
        self.used += n
        self.q.append([len(t), len(p), qos, None, again])
        return True

    def unsent(self):
        """The entry to send next (from lead on, then the older ones), or None."""
        n = len(self.q)
        for j in range(n):
            k = (self.lead + j) % n
            if self.q[k][PID] is None:
                return k
        return None

    def message(self, k):
        """(topic, payload) of entry k, memoryviews into the box."""
        e, off = self.q[k], self._at(k)
        m = memoryview(self.box)
        return m[off:off + e[_TLEN]], m[off + e[_TLEN]:off + e[_TLEN] + e[_PLEN]]

    def acked(self, pid):
        """The PUBACK of packet pid: its message is delivered."""
        for k in range(len(self.q)):
            if self.q[k][PID] == pid:
                self.drop(k)
                break

    def session_over(self):
        """A session ended: what is not sent again goes, the rest waits unsent."""
        self.lead = 0
        for k in range(len(self.q) - 1, -1, -1):
            if not self.q[k][_AGAIN]:
                self.drop(k)
            else:
                self.q[k][PID] = None

    def _at(self, k):
        off = 0
        for i in range(k):
            off += self.q[i][_TLEN] + self.q[i][_PLEN]
        return off

    def drop(self, k):
        """Take entry k out, closing the gap it leaves."""
        off, e = self._at(k), self.q.pop(k)
        if k < self.lead:
            self.lead -= 1
        n = e[_TLEN] + e[_PLEN]
        m = memoryview(self.box)
        m[off:self.used - n] = m[off + n:self.used]     # moves the later messages down
        self.used -= n
