# The two commands: `make run` starts the whole system, `make test` checks it.
# Everything they need is installed from requirements/ into .venv by scripts/venv.sh.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# Processes started by honcho find daphne and celery in the venv.
export PATH := $(CURDIR)/$(BIN):$(PATH)

# Defaults of settings/local.py (make run) and settings/test.py (make test), checked up front.
RUN_REDIS_URL = $${REDIS_URL:-redis://127.0.0.1:6379/0}
TEST_REDIS_URL = $${REDIS_URL:-redis://127.0.0.1:6379/15}
TEST_DATABASE_URL = $${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/messaging}
TEST_SETTINGS := messaging_project.settings.test
NO_HISTORY_WARNING := -W "ignore:Got an error checking a consistent migration history:RuntimeWarning"
PYTEST_ARGS ?=
# `make run` and `make migrate` read .env (as honcho does) so that every step sees one config.
LOAD_ENV = if [[ -f .env ]]; then set -a; source .env; set +a; fi

.PHONY: help run test test-faults lint fmt migrate venv venv-dev services-run services-test clean bench venv-bench

help:
	@echo "make run      start web (daphne, port \$$PORT or 8000), worker and beat with honcho"
	@echo "make test     install dev requirements, check PostgreSQL/Redis, lint, migrations, pytest"
	@echo "make test-faults  the fault-injection suites and the schemathesis CLI run, with their figures (about 5 min; CI runs it too)"
	@echo "make lint     ruff format --check, ruff check, import contracts, makemigrations --check"
	@echo "make fmt      ruff format and ruff check --fix"
	@echo "make migrate  apply migrations to the local database (SQLite unless DATABASE_URL)"
	@echo "make bench    start the real processes and measure throughput and latency (BENCH_ARGS=...)"
	@echo "make clean    remove caches, collected static files and .run/ (stops a Redis make run started)"

venv:
	@scripts/venv.sh base

venv-dev:
	@scripts/venv.sh dev

venv-bench:
	@scripts/venv.sh bench

services-run: venv
	@mkdir -p .run
	@$(LOAD_ENV); args=(--redis "$(RUN_REDIS_URL)"); \
	if [[ -n "$${CELERY_BROKER_URL:-}" && "$${CELERY_BROKER_URL}" == redis* ]]; then \
		args+=(--redis "$$CELERY_BROKER_URL"); fi; \
	if [[ "$${DATABASE_URL:-}" == postgres* ]]; then args+=(--postgres "$$DATABASE_URL"); fi; \
	scripts/ensure_services.sh "$${args[@]}"

services-test: venv-dev
	@scripts/ensure_tools.sh
	@scripts/ensure_services.sh --postgres "$(TEST_DATABASE_URL)" --redis "$(TEST_REDIS_URL)"

migrate: venv
	@$(LOAD_ENV); set -x; $(PY) manage.py migrate --noinput

run: services-run migrate
	@$(LOAD_ENV); set -x; $(PY) manage.py collectstatic --noinput --verbosity 0
	@$(LOAD_ENV); echo "Starting web on http://127.0.0.1:$${PORT:-8000}/ , worker and beat (Ctrl-C stops all)"; \
	set -x; exec $(BIN)/honcho start --no-colour --port "$${PORT:-8000}" --procfile Procfile

lint: venv-dev
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	@# The migration-history check needs the (not yet created) database; the model check does not.
	DJANGO_SETTINGS_MODULE=$(TEST_SETTINGS) $(PY) $(NO_HISTORY_WARNING) manage.py makemigrations --check --dry-run

fmt: venv-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: services-test lint
	@# WhiteNoise warns on every test request when STATIC_ROOT does not exist (clean checkout).
	@mkdir -p staticfiles
	$(BIN)/pytest $(addprefix --ignore=,$(FAULT_SUITES)) --deselect $(CLI_FUZZ) $(PYTEST_ARGS)

# The fault-injection suites (processes killed, Redis restarted, PostgreSQL cut three ways, ...)
# and the schemathesis command line against a live server (about 5 minutes together), their
# FAULT and HOSTILE figure lines shown. Kept out of `make test`, which they would push past 10
# minutes on 2 cores; .ci/run runs both.
FAULT_SUITES := tests/e2e/test_faults.py tests/e2e/test_database_outage.py
CLI_FUZZ := tests/ops/test_schema_fuzz.py::test_the_schemathesis_command_line_finds_no_failure_and_warns_of_nothing
test-faults: services-test
	@mkdir -p staticfiles
	$(BIN)/pytest -s -q $(FAULT_SUITES) $(CLI_FUZZ) $(PYTEST_ARGS)

# The benchmark (bench/run.py) recreates its own database, bench_messaging, on the local
# PostgreSQL server (as the e2e tests' processes, tests/e2e/harness.py) and starts a private
# redis-server; it takes about 4 minutes. Bigger runs: make bench BENCH_ARGS="--clients 2000".
BENCH_ARGS ?=
bench: venv-bench
	@scripts/ensure_services.sh --postgres postgres://postgres@127.0.0.1:5432/postgres --redis "$(TEST_REDIS_URL)"
	@command -v redis-server >/dev/null || { echo "make bench: redis-server is needed on PATH (apt-get install redis-server)" >&2; exit 1; }
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	@scripts/ensure_services.sh --stop-started
	rm -rf .run staticfiles .pytest_cache .ruff_cache .hypothesis .schemathesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
