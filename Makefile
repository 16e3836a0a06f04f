# The verbs of the project. `make help` lists them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LIB := lib/umqtt/simple.py
PEERS := bench/peers/PINNED
PORT ?= /dev/ttyUSB0
BOARD ?= pile7kw
MPREMOTE ?= $(VENV)/bin/mpremote
export MPREMOTE

.PHONY: help setup run test test-long bench deploy repl clean

help:            ## list the verbs
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

setup: $(STAMP) $(LIB) mosquitto  ## install everything the verbs need (venv, lib/, mosquitto)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

$(LIB): tools/fetch_lib.py $(STAMP)
	$(PY) tools/fetch_lib.py lib

$(PEERS): tools/fetch_peers.py $(STAMP)
	$(PY) tools/fetch_peers.py bench/peers

mosquitto:
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || tools/install_mosquitto.sh

run: setup       ## demo: broker, platform simulator and the firmware on the unix port run a charge
	$(PY) tools/demo.py $(if $(MQTT_URL),--mqtt-url $(MQTT_URL))

test: setup      ## all tests: MicroPython unit tests, host tests, system tests
	$(PY) -m pytest -q

FIGURES := build/reliability/figures.json
test-long: setup ## fault injection, under an hour: outages, power cuts, damaged files, provisioning, a day's soak, fuzzing; prints the figures (RELIABILITY.md)
	@mkdir -p $(dir $(FIGURES)) && rm -f $(FIGURES)
	PILE_LONG=1 RELIABILITY_FIGURES=$(FIGURES) $(PY) -m pytest -q --durations=0 \
		tests/long tests/system/test_fuzz.py tests/system/test_secrets.py; \
		status=$$?; $(PY) tests/long/report.py $(FIGURES); exit $$status

bench: setup $(PEERS)  ## every bench under bench/, one table vs. peers and limits (full run ~15 min: BENCHMARKS.md; BENCH_QUICK=1: a quick check)
	$(PY) bench/table.py $(if $(BENCH_QUICK),--quick,--write BENCHMARKS.md)

deploy: setup    ## put the firmware on a board: make deploy PORT=/dev/ttyUSB0 BOARD=name [CONFIG=file] [FULL=1]
	$(PY) tools/deploy.py --port $(PORT) --board $(BOARD) $(if $(CONFIG),--config $(CONFIG)) $(if $(FULL),--full)

repl: setup      ## open the board's serial REPL: make repl PORT=/dev/ttyUSB0
	$(MPREMOTE) connect $(PORT) repl

clean:           ## remove the venv, lib/, bench/peers/ and build output
	rm -rf $(VENV) lib build run bench/peers
