# Two commands do all the set-up:  make run  (train the embedded default)  and  make test.
# make test checks the dependency order of the package (lint-imports, pyproject.toml [tool.importlinter])
# before it runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test test-fast bench lint docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/lmx train

test: $(VENV)/.dev-installed
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n 2

test-fast: $(VENV)/.dev-installed
	$(PY) -m pytest -q -n 2 -m "not slow"

bench: $(VENV)/.installed
	$(PY) benchmarks/main_job.py

docs: $(VENV)/.installed
	$(PY) -m lmx.config_docs

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check lmx tests benchmarks configs
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache .import_linter_cache .grimp_cache
