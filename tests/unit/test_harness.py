"""The harness itself: these run inside MicroPython, not CPython."""
import sys


def test_runs_in_micropython():
    assert sys.implementation.name == "micropython"


def test_firmware_on_path():
    import hal
    assert hasattr(hal, "load")
