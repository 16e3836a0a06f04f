"""Boot entry: load the configuration and the board file, build the HAL, run the app.

On the board the files are /config.json and /board.json.  On the unix port:
  micropython firmware/main.py --board boards/sim/board.json --config CFG --storage DIR
                               [--bench PORT] [--speed N] [--epoch-ms MS]
"""
import json
import sys

import asyncio
import hal
from pile import config, log
from pile.app import App


def options(argv):
    opts = {"board": "board.json", "config": "config.json", "storage": ""}
    i = 1
    while i + 1 < len(argv):
        key = argv[i].lstrip("-").replace("-", "_")
        value = argv[i + 1]
        opts[key] = int(value) if value.isdigit() else value
        i += 2
    return opts


def main(argv=None):
    opts = options(argv if argv is not None else getattr(sys, "argv", []))
    with open(opts["board"]) as f:
        board_cfg = json.load(f)
    cfg, errors = config.load(opts["config"])
    for err in errors:
        log.error("config", err)
    opts.setdefault("bench_port", opts.get("bench", 0))
    board = hal.load(board_cfg, opts)
    app = App(cfg, board_cfg, board)
    try:
        asyncio.run(app.main())
    finally:
        board.shutdown()
        asyncio.new_event_loop()
    return app


if __name__ == "__main__":
    main()
