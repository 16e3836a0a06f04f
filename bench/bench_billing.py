"""Billing figures in the MicroPython unix port: the meter kernel, plain against optimized,
side by side, and what pricing a session costs.

Run with CPython:  python3 bench/bench_billing.py [--reps N] [--heap BYTES]
Prints figures only (no pass/fail):
  - meter kernel per sample: kernel_ref (plain Python) and kernel (viper), on the same
    128-sample bursts of the simulated board (hal.sim, the true ADC scale), their ratio,
    and a whole Meter.measure per burst;
  - pricing per energy increment: Charger.add_energy (local minute, band lookup in a
    14-segment model, integer add), what the measure task pays every 50 ms;
  - pricing at the end: Charger.order (fees.bill and the orderUpdateEvt body), once per
    session, and the acGunRunIty money (fees.bill);
  - a whole 8 h session at 7.4 kW measured every 50 ms (576 000 increments), priced:
    the CPU time spread over the session, and what it would take in one go;
  - the flash side: a session checkpoint, a journal write (twice: both generations).
Figures are for the host CPU; an ESP32 is 20-50x slower; the ratios carry over.  The heap
is 160 KB: the 110 KB of the board does not hold the simulated board and the whole
session module next to each other (a bigger heap makes small allocations look slower,
see bench_meter.py).
bench/bench_meter.py has the kernel for longer bursts and feemodel.parse.
"""
import argparse
import sys

import mprun


CODE = r"""
import gc, json, os, time
from hal import sim
from pile import feemodel, fees, log, meter, store
from pile import session as S
from pile.orders import Journal
log.echo = False
REPS = {REPS}

def per_call(fn, reps):
    fn()
    gc.collect()
    t0 = time.ticks_us()
    for _ in range(reps):
        fn()
    return time.ticks_diff(time.ticks_us(), t0) / reps

board_cfg = json.load(open("boards/sim/board.json"))
try:
    os.mkdir("/tmp/bench_billing")
except OSError:
    pass
b = sim.Board(board_cfg, {"storage": "/tmp/bench_billing", "speed": 1000})
b.bench({"cmd": "plug"})
b.bench({"cmd": "car", "greedy": True, "demand_a": 32})
b.bench({"cmd": "mains", "v": 230, "pf": 0.9})
b.cp_set(53)
b.lock_set(True)
while not b.lock_feedback():
    time.sleep_ms(1)
b.relay_set(True)
v, i, _ = b.adc_burst()
n = len(v)
cal = board_cfg["cal"]
assert meter.kernel(v, i, 2048, 2048) == meter.kernel_ref(v, i, 2048, 2048)
ref = per_call(lambda: meter.kernel_ref(v, i, 2048, 2048), REPS // 10) / n
fast = per_call(lambda: meter.kernel(v, i, 2048, 2048), REPS) / n
print("meter kernel, %d-sample burst of the sim board at 32 A pf 0.9:" % n)
print("  plain kernel_ref  %8.4f us/sample" % ref)
print("  viper kernel      %8.4f us/sample   (%.1fx faster)" % (fast, ref / fast))
m = meter.Meter(cal)
print("  Meter.measure     %8.1f us/burst    -> %s (mV, mA, mW)"
      % (per_call(lambda: m.measure(v, i), REPS), m.measure(v, i)))

model, _ = feemodel.parse({"ele_model_id": "m14", "time_num": 14,
    "time_seg": ["0000", "0200", "0400", "0600", "0800", "1000", "1200", "1400",
                 "1600", "1800", "2000", "2200", "2300", "2359"],
    "seg_flag": [13, 13, 12, 11, 10, 11, 12, 11, 10, 10, 11, 12, 13, 13],
    "charge_fee": [15000, 12000, 8000, 4000], "serviceFee": [8000, 8000, 8000, 8000]})

class Clock:
    t = 1700000000000
    def now_ms(self): return self.t
    def ticks_ms(self): return 0
    def cp_set(self, d): pass
    def relay_set(self, c): pass

clk = Clock()
ch = S.Charger(clk, {"tz_min": 480}, board_cfg, None, None, None, None)
ch.state = 13                 # work_status: charging
ch.s = s = {"trade": "B1", "mode": 10, "limit": 0, "model": model, "e": [0, 0, 0, 0],
            "chg_ms": 0, "start_ms": clk.t, "sum_start": 123456789, "saved": 0,
            "saved_e": 0}
save = store.save
store.save = lambda name, obj: True          # the flash is timed on its own below

def step():
    clk.t += 50
    ch.add_energy(102)                       # 7.4 kW for 50 ms: 102 mWh
per_inc = per_call(step, REPS)
s["e"] = [12345678, 23456789, 3456789, 45678901]
s["end_ms"] = clk.t
per_order = per_call(lambda: ch.order(s, 1001), REPS // 10)
per_bill = per_call(lambda: fees.bill(s["e"], model), REPS // 10)
incs = 8 * 3600 * 20
print("pricing (14-segment model):")
print("  per energy increment (add_energy)  %6.1f us" % per_inc)
print("  order at the end (bill + body)     %6.1f us" % per_order)
print("  acGunRunIty money (fees.bill)      %6.1f us" % per_bill)
print("  8 h at 7.4 kW, every 50 ms: %d increments = %.2f s of CPU spread over the"
      " session (%.4f %% of it), then %.0f us to price the order"
      % (incs, incs * per_inc / 1e6, per_inc / 500, per_order))

store.save = save
store.root = "/tmp/bench_billing"
s["e"] = [20000, 0, 0, 0]
ckpt = per_call(ch.checkpoint, 200)
j = Journal(lambda cmd, body, again=True: 1, {"ack_wait_s": 10, "ack_backoff_max_s": 300},
            time.ticks_ms)
order = ch.order(s, 1001)
jw = per_call(lambda: j.add(order), 100)
print("flash (host file system):")
print("  session checkpoint (session.json)  %6.0f us" % ckpt)
print("  journal add (orders.json, twice)   %6.0f us" % jw)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20000, help="iterations of the fast paths")
    ap.add_argument("--heap", type=int, default=160000,
                    help="micropython -X heapsize (0: the unix port's default)")
    a = ap.parse_args()
    return mprun.run(CODE, a.heap, a.reps)


if __name__ == "__main__":
    sys.exit(main())
