# voxgate — the two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BOOT   := $(VENV)/.bootstrapped
# checkov, kubernetes-validate and hadolint for the deployment tests, apart from the app's pins
DEPLOY_VENV  ?= .venv-deploy
DEPLOY_STAMP := $(DEPLOY_VENV)/.installed
# PIPER=1 (default) also installs the GPL-3.0 Piper TTS extra; PIPER=0 keeps the install permissive.
PIPER  ?= 1

.PHONY: setup installed system-deps demo test test-sqlite bench bench-smoke schema clean lock

## Install system packages (apt, when root and missing), the virtualenv and every pinned dependency.
## The app's locks and the deployment checkers' install side by side (two jobs: mostly downloads and disk).
setup: system-deps
	@$(MAKE) --no-print-directory -j2 installed

installed: $(STAMP) $(DEPLOY_STAMP)
	@:

system-deps:
	@scripts/system-deps.sh

# the virtualenv with pip and uv (requirements-bootstrap.lock), which installs every lock below
$(BOOT): requirements-bootstrap.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements-bootstrap.lock
	@touch $@

$(STAMP): $(BOOT) requirements.lock requirements-piper.lock pyproject.toml examples/harbor-telecom/backend/pyproject.toml
	scripts/install-locks.sh $(BIN)/python requirements.lock $(if $(filter 1,$(PIPER)),requirements-piper.lock)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e . -e examples/harbor-telecom/backend \
	  || $(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e . -e examples/harbor-telecom/backend
	@touch $@

# no pip of its own: the app's uv installs it (scripts/install-locks.sh adds pip only if it must fall back to it)
$(DEPLOY_STAMP): $(BOOT) requirements-deploy.lock
	$(PYTHON) -m venv --without-pip $(DEPLOY_VENV)
	scripts/install-locks.sh $(DEPLOY_VENV)/bin/python requirements-deploy.lock
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

## The cluster benchmarks run end to end at a tiny size (each starts a cluster: minutes).
bench-smoke: setup
	VOXGATE_BENCH_SMOKE=1 scripts/run-tests.sh -m bench tests/test_bench_cluster.py

bench: setup
	$(BIN)/python bench/intent.py
	$(BIN)/python bench/asr.py
	$(BIN)/python bench/tts.py
	$(BIN)/voxgate bench voice --calls 10 --duration 60

schema: setup
	$(BIN)/voxgate agent schema --out schemas/agent.schema.json
	$(BIN)/voxgate agent schema --kind topic --out schemas/topic.schema.json

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) var .pytest_cache

## Re-pin every dependency with hashes (with the uv `make setup` installs; needs the package registry).
lock: setup
	PATH="$(abspath $(BIN)):$$PATH" scripts/lock.sh
