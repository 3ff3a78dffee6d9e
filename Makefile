# The two commands: `make demo` and `make test`. Both create .venv on first use (quick afterwards).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gleam-installed
PYTEST_ARGS ?=
export MLFLOW_DISABLE_TELEMETRY := true
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: venv bench-venv browser demo test bench lint format clean

# Reinstalls only when pyproject.toml changes. torch is capped at <=2.14.1 (see pyproject.toml).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,dev]'
	@touch $(STAMP)

venv: $(STAMP)

# autofaiss for benchmarks/index_build.py, apart from .venv: it pins numpy<2 and pandas<3.
AF_VENV ?= .venv-autofaiss
AF_STAMP := $(AF_VENV)/.installed
$(AF_STAMP): benchmarks/autofaiss-requirements.txt
	@test -x $(AF_VENV)/bin/python || $(PYTHON) -m venv $(AF_VENV)
	$(AF_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AF_VENV)/bin/python -m pip install --quiet -r benchmarks/autofaiss-requirements.txt
	@touch $(AF_STAMP)

bench-venv: $(AF_STAMP)

demo: venv
	$(VENV)/bin/gleam demo

# Debian's chromium for the web page test (Playwright drives it; no browser download). Installed with
# apt when running as root; elsewhere the test is skipped with a reason.
browser:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium not installed: the web page test will be skipped"

test: venv browser
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv bench-venv
	$(PY) benchmarks/prepare_throughput.py
	$(PY) benchmarks/world_baseline.py
	$(PY) benchmarks/train_step.py --with-decode --threads 1
	$(PY) benchmarks/train_step.py --ray-workers 2 --threads 1
	$(PY) benchmarks/train_quality.py
	$(PY) benchmarks/index_build.py
	$(PY) benchmarks/serve_load.py

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf .gleam .pytest_cache .ruff_cache
