# OpenMHSM: `make run` starts a local pool, `make test` runs the whole suite.
# Both install what is missing first (a virtualenv in .venv with the project and its test tools).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= .data/pool
PORT ?= 8443
PYTEST_WORKERS ?= 2

.PHONY: install system-deps azurite run test unit integration check bench chaos clean

# etcd (Debian's etcd-server) backs the three-partition pool; the tests start their own clusters.
# HAProxy runs the front door of `mhsm region frontdoor-config` (its test starts its own).
# Chromium (headless) is the browser of the dashboard's test (tests/integration).
# zsh runs the test of `mhsm completion zsh`.
system-deps:
	@command -v etcd >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq etcd-server; }
	@command -v haproxy >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq haproxy; }
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }
	@command -v zsh >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq zsh; }

# Azurite (Azure Storage's emulator, from npm) stands in for blob storage in the backup tests.
AZURITE := .tools/node_modules/.bin/azurite-blob

azurite: $(AZURITE)

$(AZURITE):
	@command -v npm >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq nodejs npm; }
	npm install --prefix .tools --no-audit --no-fund azurite@3.35.0

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: system-deps azurite $(STAMP)

# A three-partition pool on a three-member etcd cluster; `make run DEV=1` for the embedded mode.
run: install
	$(BIN)/mhsm up $(if $(DEV),--dev) --data-dir $(DATA_DIR) --port $(PORT)

test: install
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=25 tests

unit: install
	$(BIN)/pytest -q tests/unit

integration: install
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile tests/integration

# pip-audit asks PyPI's vulnerability service about each installed package; offline, the check
# says so and goes on without it. The probe uses requests, as pip-audit does (same proxies, CAs).
PYPI_PROBE := import requests; requests.head("https://pypi.org/", timeout=5).raise_for_status()

check: install
	$(BIN)/ruff check src tests benchmarks fuzz examples
	$(BIN)/ruff format --check src tests benchmarks fuzz examples
	$(BIN)/mypy --strict src
	$(BIN)/bandit -q -c pyproject.toml -r src
	@if $(BIN)/python -c '$(PYPI_PROBE)' >/dev/null 2>&1; then \
	  echo "$(BIN)/pip-audit --skip-editable --progress-spinner off"; \
	  $(BIN)/pip-audit --skip-editable --progress-spinner off; \
	else \
	  echo "pip-audit skipped: PyPI's vulnerability service is not reachable (offline?)"; \
	fi

# The benchmark suite (benchmarks/suite.py): results in benchmarks/results/. `make bench
# BENCH="sign pool"` runs other benchmarks instead; BENCH_QUICK=1 is a one-minute smoke run.
# wrk (Debian) generates the load cheaply; the bench extra brings matplotlib and PyKMIP.
BENCH ?= suite
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: install $(BENCH_STAMP)
	@command -v wrk >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wrk; }
	$(BIN)/python -m benchmarks $(BENCH)

# The chaos suite's long form (tests/chaos; `make test` runs its short form): each fault once, then
# CHAOS_SECONDS more of faults drawn at random, under the mixed SDK workload: first on one host
# (process faults), then on three hosts in network namespaces (links cut and slowed, processes
# killed and stopped; needs root). The figures (faults, operations, client-visible errors,
# acknowledged writes lost) are written to CHAOS_REPORT and, for the three hosts, next to it with
# "-network" added to its name. CHAOS_SEED, CHAOS_WORKERS, CHAOS_RETRY=pool and CHAOS_STRICT=1
# are passed through as well.
CHAOS_SECONDS ?= 600
CHAOS_REPORT ?= .data/chaos-report.json

chaos: install
	@mkdir -p $(dir $(CHAOS_REPORT))
	CHAOS_SECONDS=$(CHAOS_SECONDS) CHAOS_REPORT=$(abspath $(CHAOS_REPORT)) \
	  $(BIN)/pytest -q -s tests/chaos/test_chaos_short.py tests/chaos/test_chaos_network.py
	@echo "figures: $(CHAOS_REPORT) $(basename $(CHAOS_REPORT))-network.json"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
