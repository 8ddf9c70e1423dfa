# One venv in the repo holds everything the tests, the demo and the benchmarks need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: setup test lint serve demo image bench system-deps clean

setup: $(STAMP)

# torch==2.13.0 is the CPU build this project pins (other specs may pull CUDA wheels).
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[server,aws,pipeline,numpy,test]'
	touch $@

lint: setup
	$(VENV)/bin/ruff check .

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

serve: setup
	$(VENV)/bin/rendezvous serve

# Debian packages the full test suite uses (CI runs this as root).
system-deps:
	bash .ci/system-deps

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
