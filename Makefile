# catbot: the two commands a new user needs are `make demo` and `make test`.
# Each creates .venv and installs the pinned packages on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo dev run emulator test lint format clean

help:
	@echo "make demo      the whole bot offline: X emulator + daemon + a scripted conversation"
	@echo "make test      lint, type-check and the full test suite"
	@echo "make dev       dev mode: ngrok tunnel + webhook registration + the daemon"
	@echo "make run       the daemon, configured by CATBOT_* variables or .env"
	@echo "make emulator  the local X emulator alone on 127.0.0.1:8099"
	@echo "make lint      ruff and mypy --strict"

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
	$(BIN)/ruff check catbot tests
	$(BIN)/mypy --strict catbot

test: lint
	$(BIN)/pytest

format: install
	$(BIN)/ruff check --fix catbot tests
	$(BIN)/ruff format catbot tests

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info
