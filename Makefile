# Every target works on a fresh machine: it creates .venv and installs the package when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install system-deps train test test-slow test-all test-lowest lint format clean bench bench-quick

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e ".[all,dev]"
	touch $(STAMP)

# Debian's Chromium and its driver, for the web pages' browser tests (the demo, the perceptual study). Installed
# when missing and we may (root, as on CI); otherwise those tests are skipped with a line saying so.
system-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "chromium / chromedriver not installed (needs root): the browser tests will be skipped"; fi

# The main job: the paper's full method on the bundled sample photos, a few minutes on 2 CPU cores.
train: install
	$(PY) -m colorization.train experiment=quickstart $(ARGS)

# Training throughput, the network alone and the 2016-style pipeline in one run (see experiments/benchmarks).
# On a GPU: the full benchmark (a few minutes); ARGS="bench.memory_batches=[64,128,256,512]" adds the memory table.
bench: install
	$(PY) -m colorization.bench $(ARGS)

# About two minutes on 2 CPU cores.
bench-quick: install
	$(PY) -m colorization.bench preset=quick $(ARGS)

# The default test suite (under 15 minutes on 2 CPU cores).
test: install system-deps
	$(PY) -m pytest $(ARGS)

# The slower end-to-end tests only (the issues' exact commands at full size).
test-slow: install
	$(PY) -m pytest -m slow $(ARGS)

test-all: install
	$(PY) -m pytest -m "slow or not slow" $(ARGS)

# The lowest versions pyproject.toml allows (uv's --resolution lowest-direct: torch 2.4, lightning 2.6, numpy 2.0,
# datasets 2.20, gradio 6.0, ...) in a second environment, and the default test suite there. Measured on 2 CPU cores:
# 5.8 GB in .venv-lowest (a CUDA build of torch 2.4 from PyPI), 45 s to install, about 9 min for the suite.
LOWEST ?= .venv-lowest
test-lowest: system-deps
	@test -x $(LOWEST)/bin/uv || { $(PYTHON) -m venv $(LOWEST) && $(LOWEST)/bin/pip install -q uv; }
	$(LOWEST)/bin/uv pip install --python $(LOWEST)/bin/python -q --resolution lowest-direct -e ".[all,dev]"
	$(LOWEST)/bin/python -m pytest $(ARGS)

lint: install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: install
	$(VENV)/bin/ruff check --fix src tests
	$(VENV)/bin/ruff format src tests

clean:
	rm -rf logs outputs multirun .pytest_cache
