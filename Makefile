# Two commands for a fresh machine: `make train` and `make test`.
# Each creates the virtual environment on first use (plain pip + venv: see README).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: train test lint clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,sweeps]'
	touch $@

train: $(VENV)/.installed  ## the chapter's plain autoencoder on MNIST (extra Hydra overrides: ARGS="...")
	$(PY) src/train.py $(ARGS)

test: $(VENV)/.installed  ## the test suite (offline, synthetic data)
	$(PY) -m pytest $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests

clean-venv:
	rm -rf $(VENV)
