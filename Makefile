# OpenMHSM: `make run` starts a local pool, `make test` runs the whole suite.
# Both install what is missing first (a virtualenv in .venv with the project and its test tools).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= .data/pool
PORT ?= 8443
PYTEST_WORKERS ?= 2

.PHONY: install run test unit integration check bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/mhsm up --dev --data-dir $(DATA_DIR) --port $(PORT)

test: install
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile tests

unit: install
	$(BIN)/pytest -q tests/unit

integration: install
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile tests/integration

check: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy --strict src

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
