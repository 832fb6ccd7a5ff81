# qrsync: `make test` is the whole suite against a real PostgreSQL (see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test lint demo bench bench-profile soak clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/qrsync demo

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# make bench QUICK=1: a tenth of the sizes (the fleet case: 1,000 accounts). FLEET_ONLY=1 runs
# just the fleet case of issue 15; FLEET_ACCOUNTS, FLEET_LATENCY_MS and FLEET_CONCURRENCY (a
# comma-separated list; the first carries the latency-floor goal) shape it. Not part of make test.
FLEET_LATENCY_MS ?= 100
FLEET_CONCURRENCY ?= 32,64
bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py $(if $(QUICK),--quick,) $(if $(FLEET_ONLY),--fleet-only,) \
		$(if $(FLEET_ACCOUNTS),--fleet-accounts $(FLEET_ACCOUNTS),) \
		--fleet-latency-ms $(FLEET_LATENCY_MS) --fleet-concurrency $(FLEET_CONCURRENCY)

# Where a no-op sync of PROFILE_ACCOUNTS accounts spends its CPU (cProfile, every thread).
PROFILE_ACCOUNTS ?= 1000
bench-profile: $(STAMP)
	$(BIN)/python bench/sync_profile.py --accounts $(PROFILE_ACCOUNTS)

# make soak SOAK_MINUTES=1: a quick trial; SOAK_SEED=N replays a run. Not part of make test.
SOAK_MINUTES ?= 20
soak: $(STAMP)
	$(BIN)/python soak/run.py --minutes $(SOAK_MINUTES) $(if $(SOAK_SEED),--seed $(SOAK_SEED),)

lint: $(STAMP)
	$(BIN)/ruff check qrsync tests bench soak deploy
	$(BIN)/ruff format --check qrsync tests bench soak deploy
	$(BIN)/mypy qrsync

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
