# cinnamon-pool: `make demo` runs the pool with real jobs, `make test` runs every test.
# Both set up what they need on a fresh machine (Python venv, Redis, Docker, images).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all venv services images clients demo test unit integration faults soak lint bench clean stop-services

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

services:
	bash compose/scripts/services.sh --browser

images: services
	bash compose/scripts/build-images.sh all

# The foreign clients of the e2e tests (tests/e2e/clients): the MCP TypeScript SDK and BullMQ, from npm.
CLIENTS := tests/e2e/clients/node_modules/.installed
$(CLIENTS): tests/e2e/clients/package.json
	cd tests/e2e/clients && npm install --silent --no-audit --no-fund
	touch $(CLIENTS)

clients: services $(CLIENTS)

demo: venv images
	$(BIN)/python -m workers.demo

# Every test, then three short soaks (jobs under random faults, checked): on one Redis, then with failovers of a
# primary watched by Sentinel, then of the primary of the pool's slot in a Redis Cluster.
test: venv images clients
	$(BIN)/python -m pytest
	$(BIN)/python -m tests.soak --duration $(SHORT_SOAK) --interval 10 --connect-clients 2
	$(BIN)/python -m tests.soak --duration 60 --interval 10 --redis-ha --faults $(FAILOVER_FAULTS) --connect-clients 2 --out soak-ha-results.json
	$(BIN)/python -m tests.soak --duration 60 --interval 10 --redis-cluster --faults $(FAILOVER_FAULTS) --connect-clients 2 --out soak-cluster-results.json

FAILOVER_FAULTS = failover-redis,kill-horse,kill-container,kill-client

SHORT_SOAK ?= 90
DURATION ?= 300

faults: venv images
	$(BIN)/python -m pytest tests/faults

# make soak DURATION=300: the concurrent lease clients and the model machine for 10x the steps of `make test`, then jobs
# flow while faults are injected, every kind at least once: on one Redis (restart-redis), on a primary, a replica and
# a Sentinel, then on a Redis Cluster (failover-redis); summaries in soak-results.json, soak-ha-results.json and
# soak-cluster-results.json.
soak: venv images
	CINNAMON_CONCURRENT_STEPS=60000 CINNAMON_MODEL_STEPS=50000 $(BIN)/python -m pytest -q tests/integration/test_concurrent_leases.py tests/integration/test_lease_model.py
	$(BIN)/python -m tests.soak --duration $(DURATION) --connect-clients 2 --every-fault --overlap
	$(BIN)/python -m tests.soak --duration $(DURATION) --connect-clients 2 --every-fault --overlap --redis-ha --out soak-ha-results.json
	$(BIN)/python -m tests.soak --duration $(DURATION) --connect-clients 2 --every-fault --overlap --redis-cluster --out soak-cluster-results.json

unit: venv
	$(BIN)/python -m pytest tests/unit -q

integration: venv images clients
	$(BIN)/python -m pytest tests/integration tests/e2e

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: venv images
	$(BIN)/python -m tests.bench

stop-services:
	-[ -f .run/redis.pid ] && kill $$(cat .run/redis.pid)
	-[ -f .run/dockerd.pid ] && kill $$(cat .run/dockerd.pid)

clean:
	rm -rf .build .pytest_cache .mypy_cache .ruff_cache
