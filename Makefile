# Two commands: `make run` starts the service; `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo test lint typecheck pytest pytest-sqlite pytest-postgres reliability \
	bench-ingest bench-drain bench-coldstart bench-ingest-pg bench-drain-pg clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/bridge serve

# The bridge with local stand-ins for Graph, its identity authority and Nexudus.
demo: $(STAMP)
	$(BIN)/python -m demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The whole suite on each database the service supports.
pytest: pytest-sqlite pytest-postgres

# Emptied so that a server named in the developer's shell does not take over.
pytest-sqlite: $(STAMP)
	BRIDGE_TEST_DATABASE_URL= $(BIN)/pytest

# On a throwaway PostgreSQL cluster that tests/postgres.py installs (if need be),
# starts and stops; it fails, never skips, when PostgreSQL cannot start.
pytest-postgres: $(STAMP)
	$(BIN)/python -m tests.postgres $(BIN)/pytest

test: lint typecheck pytest

# The reliability suite alone (make test runs it too), on SQLite then on PostgreSQL;
# each run ends with its figures (docs/reliability.md). BRIDGE_RELIABILITY_FIGURES=F
# also appends them to F as JSON lines.
reliability: $(STAMP)
	BRIDGE_TEST_DATABASE_URL= $(BIN)/pytest tests/reliability
	$(BIN)/python -m tests.postgres $(BIN)/pytest tests/reliability

bench-ingest: $(STAMP)
	$(BIN)/python -m bench.ingest

bench-drain: $(STAMP)
	$(BIN)/python -m bench.drain

# On a throwaway PostgreSQL cluster with fsync on (bench/database.py): one web
# process, then two on one database.
bench-ingest-pg: $(STAMP)
	$(BIN)/python -m bench.ingest --database postgres
	$(BIN)/python -m bench.ingest --database postgres --web 2

# Three `bridge worker` processes on one PostgreSQL database (~5 min).
bench-drain-pg: $(STAMP)
	$(BIN)/python -m bench.drain --database postgres --workers 3

bench-coldstart: $(STAMP)
	$(BIN)/python -m bench.coldstart --runs 10
	$(BIN)/python -m bench.coldstart --runs 10 --no-worker

clean:
	rm -rf $(VENV) var/*.db*
