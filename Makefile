# The two commands: `make demo` and `make test`. Both create .venv on first use (quick afterwards).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gleam-installed
PYTEST_ARGS ?=
export MLFLOW_DISABLE_TELEMETRY := true
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: venv demo test bench lint format clean

# Reinstalls only when pyproject.toml changes. torch is capped at <=2.14.1 (see pyproject.toml).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(VENV)/bin/gleam demo

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv
	$(PY) benchmarks/prepare_throughput.py
	$(PY) benchmarks/world_baseline.py
	$(PY) benchmarks/train_step.py --with-decode --threads 1
	$(PY) benchmarks/train_step.py --ray-workers 2 --threads 1
	$(PY) benchmarks/train_quality.py

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf .gleam .pytest_cache .ruff_cache
