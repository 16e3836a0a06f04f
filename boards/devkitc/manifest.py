# Frozen manifest for teams that build their own MicroPython image for the devkitc board.
# Frozen bytecode and constants stay in flash; only the function, class and module objects
# are made in the heap (code loaded from the .mpy files `make deploy` copies lives in the
# heap entirely: bench/bench_size.py prints the figures).
# Build, from a MicroPython tree:
#     make setup   (in this repository: fetches lib/umqtt/simple.py)
#     make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=<repo>/boards/devkitc/manifest.py
# then flash the image and copy only main.py, board.json and config.json to the board
# (a file on the board shadows a frozen module: do not also `make deploy` the .mpy files).
# Relative paths are relative to this file.
freeze("$(PORT_DIR)/modules")               # _boot.py (mounts the filesystem), inisetup, ...
include("$(MPY_DIR)/extmod/asyncio")
require("ntptime")
package("umqtt", base_path="../../lib")     # the pinned umqtt.simple the link is tested with
package("pile", base_path="../../firmware")
package("hal", files=["__init__.py", "esp32.py"], base_path="../../firmware")
