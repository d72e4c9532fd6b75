# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?=

.PHONY: venv dev run test check lint typecheck bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install -q -e .

dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'

run: venv
	$(BIN)/iii-gateway serve $(if $(CONFIG),-c $(CONFIG),--store file_based --data-dir ./data)

test: dev
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: dev
	$(BIN)/ruff check gateway adapters tests bench
	$(BIN)/ruff format --check gateway adapters tests bench

typecheck: dev
	$(BIN)/mypy

check: lint typecheck

bench: dev
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
