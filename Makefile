# Entry points for a fresh machine. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: serve test test-sqlite test-postgres lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

## Start the server on the embedded default (SQLite file + local artifact folder, 127.0.0.1:5000).
serve: $(STAMP)
	$(BIN)/mlgate server

## The whole test suite, on SQLite and then on PostgreSQL (127.0.0.1:5432, user postgres).
test: $(STAMP) lint test-sqlite test-postgres

test-sqlite: $(STAMP)
	MLGATE_TEST_BACKEND=sqlite $(BIN)/python -m pytest

test-postgres: $(STAMP)
	MLGATE_TEST_BACKEND=postgres $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Side-by-side benchmark against the reference `mlflow server` (installs the bench extra).
bench: $(BENCH_STAMP)
	$(BIN)/python tests/perf/bench_tracking.py --backend sqlite
	$(BIN)/python tests/perf/bench_tracking.py --backend postgres

clean:
	rm -rf $(VENV) mlgate-data
