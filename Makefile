# Every target works on a fresh machine: it creates .venv and installs the package when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install train test test-slow test-all lint format clean bench bench-quick

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e ".[dev,sweep]"
	touch $(STAMP)

# The main job: the paper's full method on the bundled sample photos, a few minutes on 2 CPU cores.
train: install
	$(PY) -m colorization.train experiment=quickstart $(ARGS)

# Training throughput, the network alone and the 2016-style pipeline in one run (see experiments/benchmarks).
# On a GPU: the full benchmark (a few minutes); ARGS="bench.memory_batches=[64,128,256,512]" adds the memory table.
bench: install
	$(PY) -m colorization.bench $(ARGS)

# About two minutes on 2 CPU cores.
bench-quick: install
	$(PY) -m colorization.bench --quick $(ARGS)

# The default test suite (under 15 minutes on 2 CPU cores).
test: install
	$(PY) -m pytest $(ARGS)

# The slower end-to-end tests only (the issues' exact commands at full size).
test-slow: install
	$(PY) -m pytest -m slow $(ARGS)

test-all: install
	$(PY) -m pytest -m "slow or not slow" $(ARGS)

lint: install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: install
	$(VENV)/bin/ruff check --fix src tests
	$(VENV)/bin/ruff format src tests

clean:
	rm -rf logs outputs multirun .pytest_cache
