# Two commands for a new user: `make demo` and `make test`.
# Both create a virtual environment (.venv) unless one is already active, install the
# package with its pinned constraints, then run. `make docs` builds the documentation.
#
#   CONSTRAINTS=path   pins applied to the install (default: constraints.txt, CPU torch)
#   DEMO_ARGS=...      extra arguments for `python -m pyro_vpf demo` (trains into outputs/demo)
#   PYTEST_ARGS=...    extra arguments for pytest
#   SPHINX_ARGS=...    extra arguments for sphinx-build (docs, docs-check)

SHELL := /bin/bash
CONSTRAINTS ?= constraints.txt
DEMO_ARGS ?=
PYTEST_ARGS ?=
SPHINX_ARGS ?=

ifdef VIRTUAL_ENV
PYTHON := $(VIRTUAL_ENV)/bin/python
VENV_DEP :=
else
PYTHON := .venv/bin/python
VENV_DEP := .venv/bin/python
endif
STAMP := $(dir $(PYTHON)).pyro-vpf-install-stamp

.PHONY: install demo test lint docs docs-check bench clean

.venv/bin/python:
	python3 -m venv .venv
	.venv/bin/python -m pip install --quiet --upgrade pip

$(STAMP): $(VENV_DEP) setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m pip install --quiet -c $(CONSTRAINTS) -e '.[test,docs]'
	touch $@

install: $(STAMP)

demo: install
	$(PYTHON) -m pyro_vpf demo $(DEMO_ARGS)

lint: install
	$(PYTHON) -m ruff check .

# The HTML documentation in docs/_build/html, every notebook executed (PYRO_VPF_FAST=1).
docs: install
	$(PYTHON) -m sphinx -b html -W --keep-going -d docs/_build/doctrees $(SPHINX_ARGS) \
		docs docs/_build/html

# The quick check of `make test`: every reference resolved, warnings are errors, nothing
# executed (the tests run the notebooks). -E: a fresh read, so no warning hides in a cache.
docs-check: install
	$(PYTHON) -m sphinx -b html -W --keep-going -E -q -D nb_execution_mode=off \
		-d docs/_build/check-doctrees $(SPHINX_ARGS) docs docs/_build/check

test: lint docs-check
	$(PYTHON) -m pytest $(PYTEST_ARGS)

bench: install
	$(PYTHON) benchmarks/bench_sampling.py

clean:
	rm -rf .venv build *.egg-info .pytest_cache .ruff_cache outputs docs/_build docs/_generated \
		docs/notebooks
