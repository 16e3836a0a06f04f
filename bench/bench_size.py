"""Size of the firmware: .mpy bytes per module for the ESP32 (xtensawin), and the heap each
module takes when imported on the unix port (x64 .mpy).

Run from anywhere with CPython:  python3 bench/bench_size.py [--json FILE]
Builds with tools/build_mpy.py into a temporary directory.  Figures only, no pass/fail.
"deployed" is what `make deploy` copies (everything but the simulated board); code loaded
from .mpy lives in the heap, so the heap column is what an ESP32 pays (about half of it on
its 32-bit words) unless the modules are frozen into the image (boards/<name>/manifest.py).
pile.diag is loaded only at the REPL; pile.boardfile is dropped after the boot check and
pile.feemodel after each fee model validation.
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import build_mpy  # noqa: E402

MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
NOT_DEPLOYED = ("hal/sim.mpy", "hal/simbench.mpy")
HEAP = r"""
import gc, sys
class Fake:
    def __getattr__(self, name):
        return Fake
sys.modules["machine"] = sys.modules["network"] = Fake()
import asyncio
# the interned-name pools grow by doubling: fill them first so that no module's figure
# carries a whole new pool (3000 leave room for the ~900 names of the firmware)
class O:
    pass
o = O()
for k in range(3000):
    setattr(o, "zz%d" % k, 1)
del o
for m in MODULES:
    gc.collect(); a = gc.mem_alloc()
    try:
        __import__(m)
        gc.collect(); print(m, gc.mem_alloc() - a)
    except Exception as e:
        print(m, -1)
"""


def module_name(rel):
    name = rel[:-4].replace("/", ".")
    return name[:-9] if name.endswith(".__init__") else name


def heap_costs(x64_dir, modules):
    code = "MODULES = %r\n%s" % (modules, HEAP)
    res = subprocess.run([MICROPYTHON, "-c", code], capture_output=True, text=True,
                         cwd=x64_dir, env=dict(os.environ, MICROPYPATH=".frozen:"))
    out = {}
    for line in res.stdout.splitlines():
        name, _, size = line.rpartition(" ")
        out[name] = int(size)
    return out


def main():
    json_out = sys.argv[sys.argv.index("--json") + 1] if "--json" in sys.argv else None
    with tempfile.TemporaryDirectory() as tmp:
        xt, x64 = os.path.join(tmp, "xtensawin"), os.path.join(tmp, "x64")
        build_mpy.build("xtensawin", xt)
        build_mpy.build("x64", x64)
        rows = []
        for src, rel in build_mpy.sources():
            if rel == "main.py":
                continue
            rel = rel[:-3] + ".mpy"
            rows.append((rel, os.path.getsize(os.path.join(xt, rel))))
        # import order: what the boot imports first, so each figure is the module alone
        order = ["pile", "pile.log", "pile.store", "pile.config", "pile.fees", "pile.tariff",
                 "pile.pilot", "pile.meter", "pile.metering", "pile.journal", "pile.protocol",
                 "pile.net", "pile.provision", "umqtt.simple", "pile.link", "pile.protection",
                 "pile.session", "pile.gun", "pile.reports", "pile.app", "hal", "hal.sim",
                 "hal.esp32", "pile.boardfile", "pile.diag"]
        names = [module_name(rel) for rel, _ in rows]
        order += [n for n in names if n not in order]
        heap = heap_costs(x64, [n for n in order if n in names])
    print("%-22s %10s %12s" % ("module", "xtensawin", "x64 heap"))
    total = deployed = heap_total = 0
    for rel, size in sorted(rows):
        name = module_name(rel)
        h = heap.get(name, -1)
        print("%-22s %10d %12s" % (name, size, h if h >= 0 else "n/a"))
        total += size
        if rel not in NOT_DEPLOYED:
            deployed += size
            if name not in ("pile.diag", "pile.boardfile", "pile.feemodel") and h > 0:
                heap_total += h
    main_size = os.path.getsize(os.path.join(ROOT, "firmware", "main.py"))
    print("total .mpy (xtensawin): %d bytes in %d modules; deployed to an ESP32: %d bytes "
          "+ main.py %d bytes (source)" % (total, len(rows), deployed, main_size))
    print("heap of the modules an ESP32 runs (x64 build, without diag, boardfile, feemodel): "
          "%d bytes" % heap_total)
    if json_out:
        with open(json_out, "w") as f:
            json.dump({"modules": {module_name(rel): size for rel, size in rows
                                   if rel not in NOT_DEPLOYED},
                       "deployed_mpy": deployed, "main_py": main_size, "total_mpy": total,
                       "heap": heap, "heap_total": heap_total}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
