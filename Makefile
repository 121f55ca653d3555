# Everything runs inside a virtual environment that this Makefile creates.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint typecheck check clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

## Run the whole test suite (the command CI runs).
test: install
	$(BIN)/python -m pytest

## Lint and format check.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Strict type check of the library, and of the public API as a user types it.
typecheck: install
	$(BIN)/mypy --strict src tests/typing

check: lint typecheck test

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis dist build
