# taskyard — every target is thin and calls one tool. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3.12 python3.11 python3.13 python3; do $$p -c "import sys; sys.exit(not (3,11) <= sys.version_info[:2] <= (3,13))" >/dev/null 2>&1 && { command -v $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1

.DEFAULT_GOAL := help
.PHONY: help dev test test-fast lint fmt typecheck check bench migrate schema docs clean install lock

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade 'pip>=25.1'
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[embedded]' --group dev
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install taskyard with its dev tools

dev: $(STAMP) ## Run API, scheduler and a worker on embedded defaults (SQLite + embedded Redis)
	$(BIN)/taskyard dev

test: $(STAMP) ## Run the whole test suite (real Redis/PostgreSQL where present, else embedded)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff lint and format check, import contracts (layers, no circles)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

fmt: $(STAMP) ## Format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP) ## mypy (strict) on every package
	$(BIN)/mypy

check: lint typecheck test ## Everything CI runs

bench: $(STAMP) ## Benchmarks against peers (not part of the tests)
	$(BIN)/python -m bench

migrate: $(STAMP) ## Apply database migrations (DATABASE_URL, else the dev SQLite file)
	$(BIN)/taskyard migrate

schema: $(STAMP) ## Export the protocol JSON Schema into docs/
	$(BIN)/python -m protocol.schema

lock: $(STAMP) ## Re-pin every dependency (all Pythons we support) into requirements.lock after a pyproject change
	$(BIN)/python -m pip install -q uv
	$(BIN)/uv pip compile pyproject.toml --extra embedded --group dev --universal --python-version 3.11 \
		--quiet --custom-compile-command "make lock" -o requirements.lock

docs: $(STAMP) ## Regenerate the configuration tables in docs/operations.md from the settings classes
	$(BIN)/python deploy/configdoc.py

clean: ## Remove the virtualenv, caches and dev data
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .taskyard *.egg-info
