# catbot: the two commands a new user needs are `make demo` and `make test`.
# Each creates .venv and installs the pinned packages on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo dev run emulator test lint format clean
.PHONY: redis-server chromium

help:
	@echo "make demo      the whole bot offline: X emulator + daemon + a scripted conversation"
	@echo "make test      lint, type-check and the full test suite"
	@echo "make dev       dev mode: ngrok tunnel + webhook registration + the daemon"
	@echo "make run       the daemon, configured by CATBOT_* variables or .env"
	@echo "make emulator  the local X emulator alone on 127.0.0.1:8099"
	@echo "make lint      ruff and mypy --strict"
	@echo "make attack    the attack suite (docs/security.md)"

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/catbot demo

dev: install
	$(BIN)/catbot dev

run: install
	$(BIN)/catbot run

emulator: install
	$(BIN)/catbot emulator

lint: install
	$(BIN)/ruff check catbot tests bench testkit
	$(BIN)/mypy --strict catbot

# The Redis store's tests start their own redis-server (a real one, on a free loopback port).
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing redis-server (apt-get) for the Redis store tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      redis-server >/dev/null; \
	  else \
	    echo "redis-server is missing: sudo apt-get install redis-server" >&2; exit 1; \
	  fi; }

# The chat page's browser tests drive Debian's chromium through Playwright (never
# `playwright install`: it downloads a browser build, which cannot work offline).
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing chromium (apt-get) for the chat page's browser tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      chromium >/dev/null; \
	  else \
	    echo "chromium is missing: sudo apt-get install --no-install-recommends chromium" >&2; \
	    exit 1; \
	  fi; }

test: lint redis-server chromium
	$(BIN)/pytest

format: install
	$(BIN)/ruff check --fix catbot tests bench testkit
	$(BIN)/ruff format catbot tests

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info

# --- Container image (see docs/deployment.md) --------------------------------------------
.PHONY: wheels image image-test
IMAGE ?= localhost/catbot:latest
WHEEL_PLATFORMS := $(foreach p,manylinux_2_28 manylinux_2_17 manylinux2014,--platform $(p)_$(shell uname -m))

# The wheelhouse the Dockerfile installs from offline: catbot's wheel plus every dependency,
# pinned by constraints.txt, as binary wheels for the image's CPython 3.11 (whatever Python
# runs make).
wheels: install
	rm -rf wheels
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir wheels .
	$(BIN)/python -m pip download --quiet --only-binary=:all: --python-version 3.11 \
	    --implementation cp $(WHEEL_PLATFORMS) -c constraints.txt --dest wheels wheels/catbot-*.whl \
	    -r deploy/image/wheelhouse-extra.txt

# Build offline with podman from the wheelhouse (deploy/image/podman.sh sets up podman here).
image: wheels
	deploy/image/podman.sh build --format docker --network none -t $(IMAGE) .

# Build the image offline on a local base, run it read-only as non-root, check CRC, metrics,
# a DM answered end to end and a clean SIGTERM stop. Also part of `make test`.
image-test: install
	$(BIN)/pytest -p no:cacheprovider tests/test_image.py

# --- Attack suite (issue 15; docs/security.md) --------------------------------------------
# What an outsider tried against the daemon, the emulator, the stores and the fact source,
# each a test against real processes on loopback. Also part of `make test`.
.PHONY: attack
attack: install redis-server chromium
	$(BIN)/pytest -p no:cacheprovider tests/test_hostile.py $(sort $(wildcard tests/test_security*.py))

# --- Benchmarks (issue 7; docs/performance.md) -------------------------------------------
# `make bench` takes about four minutes and prints the table; BENCH_ARGS=--quick for two or three.
# Needs wrk (apt-get install wrk) and redis-server (for the Redis row).
.PHONY: bench
BENCH_ARGS ?=
bench: install redis-server
	@command -v wrk >/dev/null 2>&1 || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
	$(BIN)/python -m bench.run $(BENCH_ARGS)
