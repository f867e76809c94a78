# Two commands for a fresh machine: `make train` and `make test`.
# Each creates the virtual environment on first use (plain pip + venv), with the exact versions
# in constraints.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: train test lint notebook mutation constraints clean-venv

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,sweeps,trackers,notebook]'
	touch $@

train: $(VENV)/.installed  ## the chapter's plain autoencoder on MNIST (extra Hydra overrides: ARGS="...")
	$(PY) src/train.py $(ARGS)

test: $(VENV)/.installed  ## the test suite, one pytest-xdist worker per core (offline, synthetic data; ARGS='-m "not slow"' for a quick check, WORKERS=0 for one process)
	$(PY) -m pytest -n $(or $(WORKERS),auto) --dist worksteal $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

notebook: $(VENV)/.installed  ## run notebooks/chapter.ipynb on MNIST (data/, or CHAPTER_DATA_DIR) and save its outputs
	$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=3600 notebooks/chapter.ipynb

mutation: $(VENV)/.installed  ## mutation testing with mutmut against the quick suite (docs/testing.md)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[mutation]'
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children $(or $(JOBS),2)
	$(VENV)/bin/mutmut results

constraints: $(VENV)/.installed  ## record the installed versions in constraints.txt
	{ sed -n '/^#/p' constraints.txt; $(PY) -m pip freeze --exclude-editable; } > constraints.new
	mv constraints.new constraints.txt

clean-venv:
	rm -rf $(VENV)
