# Two commands for a new user: `make demo` and `make test`.
# Both create a virtual environment (.venv) unless one is already active, install the
# package with its pinned constraints, then run.
#
#   CONSTRAINTS=path   pins applied to the install (default: constraints.txt, CPU torch)
#   DEMO_ARGS=...      extra arguments for `python -m pyro_vpf demo` (trains into outputs/demo)
#   PYTEST_ARGS=...    extra arguments for pytest

SHELL := /bin/bash
CONSTRAINTS ?= constraints.txt
DEMO_ARGS ?=
PYTEST_ARGS ?=

ifdef VIRTUAL_ENV
PYTHON := $(VIRTUAL_ENV)/bin/python
VENV_DEP :=
else
PYTHON := .venv/bin/python
VENV_DEP := .venv/bin/python
endif
STAMP := $(dir $(PYTHON)).pyro-vpf-install-stamp

.PHONY: install demo test lint bench clean

.venv/bin/python:
	python3 -m venv .venv
	.venv/bin/python -m pip install --quiet --upgrade pip

$(STAMP): $(VENV_DEP) setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m pip install --quiet -c $(CONSTRAINTS) -e '.[test]'
	touch $@

install: $(STAMP)

demo: install
	$(PYTHON) -m pyro_vpf demo $(DEMO_ARGS)

lint: install
	$(PYTHON) -m ruff check .

test: lint
	$(PYTHON) -m pytest $(PYTEST_ARGS)

bench: install
	$(PYTHON) benchmarks/bench_sampling.py

clean:
	rm -rf .venv build *.egg-info .pytest_cache .ruff_cache outputs
