"""The link's waits for bytes that have not come cost no memory (runs in MicroPython):
umqtt's read() raises one preallocated exception every time, and its traceback must not
grow with every raise (an instance of an exception subclass keeps them all: a leak that
ran the soak test out of memory)."""
import gc

from pile import link


class _Rx:                      # what Link.read() reads of the link
    gated = False
    rx = b"\x30"
    _rpos = 0


def _pending_reads(n):
    rx = _Rx()
    for _ in range(n):
        try:
            link.Link.read(rx, 2)           # two bytes wanted, one there: pending
        except EOFError:
            pass


def test_pending_reads_allocate_nothing_that_stays():
    _pending_reads(10)
    gc.collect()
    before = gc.mem_alloc()
    _pending_reads(5000)
    gc.collect()
    assert gc.mem_alloc() - before < 1024, gc.mem_alloc() - before


def test_pending_read_allocates_nothing_at_all():
    import micropython
    rx = _Rx()
    got = 0
    micropython.heap_lock()
    try:
        for _ in range(100):
            try:
                link.Link.read(rx, 2)
            except EOFError:
                got += 1
    finally:
        micropython.heap_unlock()
    assert got == 100
