# echolab: the two commands of the quick start are `make reproduce` and `make test`.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
PROFILE ?= lab
# Extra arguments for pytest, e.g. `make test PYTEST_ARGS="-k swarm"`.
PYTEST_ARGS ?=

export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help bootstrap reproduce test test-fast lint lint-ansible lint-ruff lint-mypy lint-yaml autobahn \
        lock bench clean

help:
	@echo "make reproduce [PROFILE=NAME]             set up the lab and run the experiment (PROFILE: lab, quick, seed, capacity)"
	@echo "make test                                 lint + the whole test suite (what CI runs)"
	@echo "make test-fast                            unit and loopback tests only (no lab hosts)"
	@echo "make lint                                 ruff, mypy --strict, yamllint, ansible-lint"
	@echo "make bench                                benchmarks: wsecho and wsswarm vs node.js ws"

bootstrap:
	@scripts/bootstrap.sh

# Only what the controller needs for site.yml (requirements/run.txt); `make bootstrap` adds the rest.
reproduce:
	@scripts/bootstrap.sh --run
	$(BIN)/ansible-playbook site.yml -e echolab_profile=$(PROFILE)

# One target per linter, so that `make -j2` (.ci/run) runs ansible-lint, by far the slowest,
# next to the others and the conformance suite's install; it comes first so that it starts first.
lint: lint-ansible lint-ruff lint-mypy lint-yaml

lint-ansible: bootstrap
	$(BIN)/ansible-lint

lint-ruff: bootstrap
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

lint-mypy: bootstrap
	$(BIN)/mypy server plugins library roles vm molecule   # every .py; a run per conftest.py: mypy refuses duplicate modules
	$(BIN)/mypy client
	$(BIN)/mypy tests
	$(BIN)/mypy bench

lint-yaml: bootstrap
	$(BIN)/yamllint --strict .

test: lint autobahn
	$(BIN)/pytest --durations=25 $(PYTEST_ARGS)

# The conformance suite (Python 2.7), installed once into .cache/.
autobahn: bootstrap
	scripts/autobahn.sh >/dev/null

test-fast: bootstrap
	$(BIN)/pytest -m "not lab" $(PYTEST_ARGS)

bench: bootstrap
	$(BIN)/python bench/server_bench.py
	$(BIN)/python bench/client_bench.py

# Re-resolve the pinned toolchain from requirements/dev.in into requirements/dev.txt, and
# reproduce's subset from requirements/run.in into requirements/run.txt (at dev.txt's versions).
lock:
	rm -rf /tmp/echolab-lock && python3 -m venv /tmp/echolab-lock
	/tmp/echolab-lock/bin/pip install -q -r requirements/dev.in
	/tmp/echolab-lock/bin/pip freeze --exclude-editable | sort > requirements/dev.txt
	rm -rf /tmp/echolab-lock && python3 -m venv /tmp/echolab-lock
	/tmp/echolab-lock/bin/pip install -q -c requirements/dev.txt -r requirements/run.in
	{ echo "# Exact pins of what \`make reproduce\` installs (bootstrap.sh --run). Made by 'make lock' from run.in."; \
	  /tmp/echolab-lock/bin/pip freeze --exclude-editable | sort; } > requirements/run.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
