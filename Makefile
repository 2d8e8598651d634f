# `make test` and `make train` set everything up on a fresh machine (a virtualenv in .venv).
# TORCH picks the PyTorch requirement, e.g. `make install TORCH="torch==2.13.0"` for a CPU build
# from a local index, or a CUDA build of your choice.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
ARGS ?=

.PHONY: install browser test test-all train lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# The page test (tests/serving/test_page.py) drives a real Chromium; it is skipped where none is installed,
# so a failed install here (no apt, no root, offline) only costs that one test.
browser:
	@command -v chromium >/dev/null || test -x /usr/bin/chromium || \
	  (command -v apt-get >/dev/null && apt-get update -qq && \
	   DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || \
	  echo "chromium not installed: the page test will be skipped"

# One pytest worker per core; a file's tests stay on one worker, so they share its fixtures.
PYTEST := $(BIN)/python -m pytest -q -n auto --dist loadfile

test: install browser
	$(PYTEST)

test-all: install browser
	$(PYTEST) -m ""

train: install
	$(BIN)/translator train $(ARGS)

lint: install
	$(BIN)/ruff check translator tests scripts
	$(BIN)/lint-imports --no-cache  # the stages import one way (pyproject.toml's contracts)

format: install
	$(BIN)/ruff check --fix translator tests scripts
	$(BIN)/ruff format translator tests scripts

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
