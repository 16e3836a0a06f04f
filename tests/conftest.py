"""pytest glue: MicroPython unit tests run inside the unix port, one pytest item per test.

Every ``tests/unit/test_*.py`` is a MicroPython module; each of its top-level ``test_*``
functions becomes a pytest item that runs in a fresh ``micropython`` process, with the
firmware and ``lib/`` on MICROPYPATH.  A failure shows MicroPython's own traceback.
"""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
UNIT = os.path.join(ROOT, "tests", "unit")
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
MPYPATH = ".frozen:" + ":".join(os.path.join(ROOT, d) for d in ("firmware", "lib", "tests/unit"))

LIST = "import {m}\nfor n in dir({m}):\n if n.startswith('test_'): print(n)\n"
RUN = "import {m}\n{m}.{f}()\nprint('PASS')\n"


def run_micropython(code, timeout=120, heap=None):
    """Run code in the unix port with the firmware on its path; return CompletedProcess."""
    env = dict(os.environ, MICROPYPATH=MPYPATH)
    cmd = [MICROPYTHON] + (["-X", "heapsize=%d" % heap] if heap else []) + ["-c", code]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


class MicroPythonFile(pytest.File):
    def collect(self):
        mod = self.path.stem
        res = run_micropython(LIST.format(m=mod))
        if res.returncode:
            raise pytest.UsageError("cannot import %s in MicroPython:\n%s%s"
                                    % (mod, res.stdout, res.stderr))
        for name in res.stdout.split():
            yield MicroPythonItem.from_parent(self, name=name)


class MicroPythonItem(pytest.Item):
    def runtest(self):
        res = run_micropython(RUN.format(m=self.parent.path.stem, f=self.name))
        if res.returncode or not res.stdout.rstrip().endswith("PASS"):
            raise MicroPythonFailure(res.stdout + res.stderr)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MicroPythonFailure):
            return "MicroPython test failed:\n" + str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, "micropython: %s" % self.name


class MicroPythonFailure(Exception):
    pass


def pytest_pycollect_makemodule(module_path, parent):
    """Files in tests/unit are MicroPython modules: never import them into CPython."""
    if str(module_path.parent) == UNIT:
        return MicroPythonFile.from_parent(parent, path=module_path)
    return None
