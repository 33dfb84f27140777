# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-multinode bench lint install clean-data

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m troupe run

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# The two-node `ray start` + `serve deploy` test (tests/test_multinode_deploy.py), on its own.
test-multinode: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m multinode $(PYTEST_ARGS)

# Prefect (a baseline) lives in its own venv so its pins never touch Troupe's.
.venv-prefect/bin/python:
	$(PYTHON) -m venv .venv-prefect
	.venv-prefect/bin/python -m pip install --quiet 'prefect>=3.0'

bench: $(STAMP) .venv-prefect/bin/python
	$(PY) -m bench

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-data:
	rm -rf .troupe
