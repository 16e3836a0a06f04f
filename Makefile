# The verbs of the project. `make help` lists them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LIB := lib/umqtt/simple.py
PORT ?= /dev/ttyUSB0
BOARD ?= pile7kw
MPREMOTE ?= $(VENV)/bin/mpremote
export MPREMOTE

.PHONY: help setup run test bench deploy repl clean

help:            ## list the verbs
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

setup: $(STAMP) $(LIB) mosquitto  ## install everything the verbs need (venv, lib/, mosquitto)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

$(LIB): tools/fetch_lib.py $(STAMP)
	$(PY) tools/fetch_lib.py lib

mosquitto:
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || tools/install_mosquitto.sh

run: setup       ## demo: broker, platform simulator and the firmware on the unix port run a charge
	$(PY) tools/demo.py $(if $(MQTT_URL),--mqtt-url $(MQTT_URL))

test: setup      ## all tests: MicroPython unit tests, host tests, system tests
	$(PY) -m pytest -q

bench: setup     ## benchmarks under bench/ (print figures)
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

deploy: setup    ## put the firmware on a board: make deploy PORT=/dev/ttyUSB0 BOARD=name [CONFIG=file] [FULL=1]
	$(PY) tools/deploy.py --port $(PORT) --board $(BOARD) $(if $(CONFIG),--config $(CONFIG)) $(if $(FULL),--full)

repl: setup      ## open the board's serial REPL: make repl PORT=/dev/ttyUSB0
	$(MPREMOTE) connect $(PORT) repl

clean:           ## remove the venv, lib/ and build output
	rm -rf $(VENV) lib build run
