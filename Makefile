# Two commands do all the set-up on a fresh machine (Python 3.11+, Java 17 and Maven):
#   make run    the main job on the embedded defaults
#   make test   lint, type-check and the whole test suite (what CI runs)
# Both create .venv and install the project from pyproject.toml when it is missing or stale.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint unit integration stop clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

run: $(VENV)/.installed
	$(BIN)/sealstream up

stop: $(VENV)/.installed
	$(BIN)/sealstream stack down

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy sealstream schemas producers streams sinks

unit: $(VENV)/.installed
	$(BIN)/python -m pytest tests/unit

integration: $(VENV)/.installed
	$(BIN)/python -m pytest tests/integration

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
