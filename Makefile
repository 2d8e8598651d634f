# `make test` and `make train` set everything up on a fresh machine (a virtualenv in .venv).
# TORCH picks the PyTorch requirement, e.g. `make install TORCH="torch==2.13.0"` for a CPU build
# from a local index, or a CUDA build of your choice.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
ARGS ?=

.PHONY: install test test-all train lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

test: install
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m ""

train: install
	$(BIN)/translator train $(ARGS)

lint: install
	$(BIN)/ruff check translator tests scripts

format: install
	$(BIN)/ruff check --fix translator tests scripts
	$(BIN)/ruff format translator tests scripts

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
