# Resonate for GCP — one command to serve, one to test.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTHON312 := $(shell bash .ci/find-python312)
PORT ?= 8001

.PHONY: install serve dev cloud-sim test test-fast lint bench sdk-ts clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON312) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

serve: install  ## start the server on SQLite (resonate.db) at :8001
	$(PY) -m local serve --server-port $(PORT)

dev: install  ## start the server in memory with debug operations on
	$(PY) -m local dev --server-port $(PORT)

cloud-sim: install  ## the functions as separate processes over Postgres behind one router at :8001
	$(PY) -m local cloud-sim --port $(PORT)

sdk-ts:  ## Node 22 + the official TypeScript SDK for the SDK tests
	bash tests/sdk/install_ts.sh

test: install sdk-ts  ## the whole suite, every backend (what CI runs)
	$(PY) -m pytest -q

lint: install  ## ruff (style, imports, likely bugs) and mypy (types), as CI runs them
	$(PY) -m ruff check .
	$(PY) -m mypy

# the edit-run loop: engine + memory store in process (flask test client), the store contract on
# memory and SQLite; no server processes, no Postgres (the `process` and `postgres` marks)
test-fast: install
	RESONATE_TEST_BACKENDS=inproc RESONATE_DIFF_BACKENDS=memory,sqlite RESONATE_DIFF_SEEDS=2 \
	  $(PY) -m pytest -q -m "not process and not postgres"

bench: install  ## benchmarks; prints ratios against baselines measured in the same run
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache
