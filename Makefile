# Resonate for GCP — one command to serve, one to test.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTHON := $(shell bash .ci/find-python)
PORT ?= 8001
# pytest-xdist workers for `make test` (each starts its own servers; 2 suits a 2-core machine)
TEST_WORKERS ?= 2

.PHONY: install install-test grpc serve dev cloud-sim test test-fast lint bench docs sdk-ts sdk-legacy clean

# two stamps: `make serve` installs what the server needs (`pip install -e '.[build]'`: the runtime
# and the gRPC stub generator); the test, lint and bench targets add the `test` extra (pytest, the
# SDKs, ruff, mypy, and through `resonate-gcp[infra]` the Pulumi packages tests/test_infra.py needs)
$(VENV)/.installed-runtime: pyproject.toml
	@echo "Installing the server's runtime dependencies into $(VENV) (first run, or pyproject.toml changed): about 150 MB, 1-3 minutes, mostly downloads..."
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[build]'
	@echo "Installed: $$($(PY) -m local --version) in $(VENV)"
	touch $@

$(VENV)/.installed-test: pyproject.toml
	@echo "Installing the server and the test extra (pytest, both SDKs, ruff, mypy, Pulumi) into $(VENV) (first run, or pyproject.toml changed): about 580 MB, several minutes, mostly downloads..."
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-runtime

# the gRPC API's stubs (docs/grpc.md): generated from shared/grpc/protos/*.proto into the git-ignored
# shared/grpc/gen/ by grpcio-tools, again whenever a .proto (or the generator) changes
GRPC_STUBS := shared/grpc/gen/__init__.py
$(GRPC_STUBS): $(wildcard shared/grpc/protos/*.proto) shared/grpc/build.py | $(VENV)/.installed-runtime
	$(PY) -m shared.grpc.build

grpc: $(GRPC_STUBS)  ## generate the gRPC stubs (every install target does)

install: $(VENV)/.installed-runtime $(GRPC_STUBS)  ## the server's runtime dependencies and the gRPC stubs

install-test: $(VENV)/.installed-test $(GRPC_STUBS)  ## plus the test extra (includes the build and infra extras)

serve: install  ## start the server on SQLite (resonate.db) at :8001
	$(PY) -m local serve --server-port $(PORT)

dev: install  ## start the server in memory with debug operations on
	$(PY) -m local dev --server-port $(PORT)

cloud-sim: install  ## the functions as separate processes over Postgres behind one router at :8001
	$(PY) -m local cloud-sim --port $(PORT)

sdk-ts:  ## Node 22 + the official TypeScript SDK for the SDK tests
	bash tests/sdk/install_ts.sh

sdk-legacy:  ## the REST-era Python SDKs 0.1.31 and 0.6.7 (sdists + venvs in tests/legacy) for their own suites
	bash tests/legacy/install.sh

test: install-test sdk-ts sdk-legacy  ## the whole suite, every backend (what CI runs)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not solo"
	$(PY) -m pytest -q -m solo

lint: install-test  ## ruff (style, imports, likely bugs) and mypy (types), as CI runs them
	$(PY) -m ruff check .
	$(PY) -m mypy

# the edit-run loop: engine + memory store in process (flask test client), the store contract on
# memory and SQLite; no server processes, no Postgres or MySQL (the `process`, `postgres`, `mysql` marks)
test-fast: install-test
	RESONATE_TEST_BACKENDS=inproc RESONATE_DIFF_BACKENDS=memory,sqlite RESONATE_DIFF_SEEDS=2 \
	  $(PY) -m pytest -q -m "not process and not postgres and not mysql"

bench: install-test  ## benchmarks (they reuse the suite's launchers); ratios against baselines measured in the same run
	$(PY) -m bench

docs: install  ## regenerate the key table of docs/configuration.md from shared/config.py
	$(PY) -m local.config_doc --write

clean:
	rm -rf $(VENV) .pytest_cache shared/grpc/gen
