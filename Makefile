# The two commands a newcomer needs:  `make up`  (local stack)  and  `make test`  (the test suite).
# Both set up everything they need on a fresh machine (a virtualenv in .venv, Debian packages).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.meshserve-installed

.PHONY: up test setup system-deps lint bench clean

up: setup            ## start the local stack from mesh/mesh.yaml (Ctrl-C drains and stops it)
	$(BIN)/meshserve up

test: setup system-deps   ## run the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

system-deps:         ## Debian packages the tests use (Prometheus + promtool; chromium for the console test; libb64 for perf_analyzer; h2load)
	@command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v chromium >/dev/null \
	  && command -v chromedriver >/dev/null || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    prometheus chromium chromium-driver; }
	@command -v h2load >/dev/null && /sbin/ldconfig -p | grep -q libb64.so.0d || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq libb64-0d nghttp2-client; }

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup         ## benchmarks (not tests): figures go to loadtests/bench/results/
	$(BIN)/python -m loadtests.bench.modelserver

clean:
	rm -rf $(VENV) runs out
