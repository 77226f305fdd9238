# Two commands on a fresh machine with Python 3.10+: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/python -m uv
PYTEST_ARGS ?=

.PHONY: install install-test test lint demo docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(UV) pip install --quiet --python $(BIN)/python -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(UV) pip install --quiet --python $(BIN)/python -e ".[test,bench]"
	touch $@ $(VENV)/.installed

$(VENV)/.installed-lint: pyproject.toml | $(BIN)/python
	$(UV) pip install --quiet --python $(BIN)/python -e ".[test,lint]"
	touch $@

$(VENV)/.installed-docs: pyproject.toml | $(BIN)/python
	$(UV) pip install --quiet --python $(BIN)/python -e ".[docs]"
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(UV) pip install --quiet --python $(BIN)/python -e ".[test,bench]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

test: install-test
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# ruff and mypy, configured in pyproject.toml.
lint: $(VENV)/.installed-lint
	$(BIN)/python -m ruff check .
	$(BIN)/python -m mypy

demo: install
	$(BIN)/python scripts/demo.py

docs: $(VENV)/.installed-docs
	$(BIN)/python -m mkdocs build --strict --site-dir site

bench: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VENV2) .demo demo-output site

# make test-airflow2: the suite again on the newest Airflow 2.11.x, in .venv-airflow2.
include airflow2.mk
