# The suite on the newest Airflow 2.11.x, in its own venv (.venv-airflow2). Include it from the
# Makefile (`include airflow2.mk`) and run `make test-airflow2`; `.ci/run` runs it after `make test`.
# The venv is built with uv like .venv: about 15 s from scratch here with the package index
# reachable (uv's cache cold or warm made little difference on this machine).
AIRFLOW2_SPEC ?= apache-airflow==2.11.*
VENV2 := .venv-airflow2
BIN2 := $(VENV2)/bin
PYTEST2_ARGS ?=

.PHONY: install-airflow2 test-airflow2

$(BIN2)/python:
	$(PYTHON) -m venv $(VENV2)
	$(BIN2)/python -m pip install --quiet --upgrade pip uv

$(VENV2)/.installed-test: pyproject.toml | $(BIN2)/python
	$(BIN2)/python -m uv pip install --quiet --python $(BIN2)/python "$(AIRFLOW2_SPEC)" -e ".[test]"
	touch $@

install-airflow2: $(VENV2)/.installed-test

test-airflow2: install-airflow2
	$(BIN2)/python -m pytest -q $(PYTEST2_ARGS)
