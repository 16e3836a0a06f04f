"""Boot entry: load the configuration and the board file, build the HAL, run the app.

On the board the files are /config.json and /board.json.  On the unix port:
  micropython firmware/main.py --board boards/sim/board.json --config CFG --storage DIR
                               [--bench PORT] [--speed N] [--epoch-ms MS] [--trusted 0]
(--trusted 0: the simulated clock starts untrusted, as a board before NTP.)
A broken board file (pile.boardfile) stops the boot with its errors.  Ctrl-C at the console
leaves the pile safe (relay open) at the REPL, where ``from pile import diag`` helps.
"""
import gc
import json
import sys


def options(argv):
    opts = {"board": "board.json", "config": "config.json", "storage": ""}
    i = 1
    while i + 1 < len(argv):
        key = argv[i].lstrip("-").replace("-", "_")
        value = argv[i + 1]
        opts[key] = int(value) if value.isdigit() else value
        i += 2
    return opts


def board_file(path):
    """The board file and its errors (pile.boardfile, dropped again to free its memory)."""
    with open(path) as f:
        board_cfg = json.load(f)
    import pile
    from pile import boardfile
    errors = boardfile.validate(board_cfg)
    del sys.modules["pile.boardfile"], pile.boardfile
    return board_cfg, errors


def main(argv=None):
    opts = options(argv if argv is not None else getattr(sys, "argv", []))
    board_cfg, errors = board_file(opts["board"])   # its code comes and goes before the rest
    # Heap: all the code that stays is loaded first, in one run, and the holes the loading
    # leaves are collected before the objects that live as long are built: a small heap
    # must keep large free runs for the messages (DESIGN.md "Memory").
    import pile.onekey      # provisioning, lowest: pile.provision drops it once it has creds
    import asyncio
    import hal
    if sys.platform == "esp32":
        import hal.esp32
    else:
        import hal.sim
    from pile import config, log
    from pile.app import App
    gc.collect()
    for err in errors:
        log.error("board", err)
    if errors:
        log.error("board", "%s is broken: the pile does not start" % opts["board"])
        return None
    cfg, errors = config.load(opts["config"])
    for err in errors:
        log.error("config", err)
    opts.setdefault("bench_port", opts.get("bench", 0))
    opts["cfg"] = cfg   # the ESP32 board takes its Wi-Fi and NTP settings from it
    board = hal.load(board_cfg, opts)
    app = App.current = App(cfg, board_cfg, board)   # pile.diag finds it there
    try:
        asyncio.run(app.main())
    except KeyboardInterrupt:   # Ctrl-C at the console: stay at the REPL, no watchdog reset
        board.shutdown()
        board.close()
        log.warn("app", "stopped at the console; relay open. Diagnostics: from pile import diag")
    finally:
        board.shutdown()
        asyncio.new_event_loop()
    return app


if __name__ == "__main__":
    if main() is None and sys.platform != "esp32":
        sys.exit(2)
