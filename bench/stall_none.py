"""MicroPython: the 10 ms heartbeat task alone, no MQTT client (run by bench_link.py): the
floor that this machine's scheduler and the unix port put under every other figure.

  micropython bench/stall_none.py HOST PORT USER PASSWORD PROFILE
See stall_kit.py; the arguments are taken and ignored, and it is always "online".
"""
import stall_kit as kit

kit.run(lambda: True)
