# voxgate — the two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup system-deps demo test test-sqlite bench lint schema clean

## Install system packages (apt, when root and missing), the virtualenv and every pinned dependency.
setup: system-deps $(STAMP)

system-deps:
	@scripts/system-deps.sh

$(STAMP): requirements.lock pyproject.toml examples/harbor-telecom/backend/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==26.0.1"
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e . -e examples/harbor-telecom/backend
	@touch $@

## Run the Harbor Telecom demo: backend + voxgate on loopback with the embedded SQLite store.
demo: setup
	$(BIN)/voxgate demo

## Run the whole test suite; database tests run on SQLite and on a throwaway PostgreSQL cluster.
test: setup
	scripts/run-tests.sh

## Tests on SQLite only (no PostgreSQL needed).
test-sqlite: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/intent.py

schema: setup
	$(BIN)/voxgate agent schema --out schemas/agent.schema.json
	$(BIN)/voxgate agent schema --kind topic --out schemas/topic.schema.json

clean:
	rm -rf $(VENV) var .pytest_cache
