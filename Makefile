# Entry points for a fresh machine. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench
# The web UI's browser libraries: from the npm registry, pinned by package-lock.json.
FRONTEND := gates/server/web/frontend
ASSETS := gates/server/web/static/vendor/.built
# Debian's Chromium drives the browser tests (Playwright never downloads a browser here).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: serve test test-sqlite test-postgres lint bench clean assets browser haproxy

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,mlflow-ui]'
	touch $(STAMP)

$(ASSETS): $(FRONTEND)/package.json $(FRONTEND)/package-lock.json $(FRONTEND)/build.mjs
	cd $(FRONTEND) && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build
	touch $(ASSETS)

## Build the web UI's static assets (npm ci from the lock file, then copy into static/vendor).
assets: $(ASSETS)

## Install Debian's Chromium for the browser tests when it is missing.
browser:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get install -y chromium || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }; }

## Install Debian's haproxy: the load balancer in front of three replicas in the scale-out test.
haproxy:
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || { $(SUDO) apt-get install -y haproxy || { $(SUDO) apt-get update && $(SUDO) apt-get install -y haproxy; }; }

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,mlflow-ui,bench]'
	touch $(BENCH_STAMP)

## Start the server on the embedded default (SQLite file + local artifact folder, 127.0.0.1:5000).
serve: $(STAMP) $(ASSETS)
	$(BIN)/mlgate server

## The whole test suite, on SQLite and then on PostgreSQL (127.0.0.1:5432, user postgres).
test: $(STAMP) $(ASSETS) browser haproxy lint test-sqlite test-postgres

test-sqlite: $(STAMP) $(ASSETS) browser haproxy
	MLGATE_TEST_BACKEND=sqlite $(BIN)/python -m pytest

test-postgres: $(STAMP) $(ASSETS) browser haproxy
	MLGATE_TEST_BACKEND=postgres $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

## Side-by-side benchmark against the reference `mlflow server` (installs the bench extra).
bench: $(BENCH_STAMP)
	$(BIN)/python tests/perf/bench_tracking.py --backend sqlite
	$(BIN)/python tests/perf/bench_tracking.py --backend postgres
	$(BIN)/python tests/perf/bench_web.py --backend both
	$(BIN)/python tests/perf/bench_registry.py --backend sqlite
	$(BIN)/python tests/perf/bench_registry.py --backend postgres
	$(BIN)/python tests/perf/bench_search_scale.py --backend postgres

clean:
	rm -rf $(VENV) mlgate-data $(FRONTEND)/node_modules gates/server/web/static/vendor
