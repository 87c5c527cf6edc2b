# physdiff — set-up and the two commands of the README.
# `make demo` and `make test` create .venv if missing and install the package. If no torch is
# importable they first install the CPU wheel (torch==2.13.0); a torch you already have is kept.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.physdiff-installed

.PHONY: setup demo test test-fast lint bench results reliability clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/physdiff reproduce three-body --preset quick

test: $(STAMP)
	$(PY) -m pytest -q

# The development loop: everything but the end-to-end tests marked `slow` (which `make test` and CI still run).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_core.py

# The published tables (docs/results.md): every quick preset on the test split, 3 seeds. Hours on a CPU;
# not part of CI.
results: $(STAMP)
	$(VENV)/bin/physdiff reproduce all --preset quick --out results/

# The bad-input and interrupt figures of docs/reliability.md (minutes).
reliability: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/reliability.py --examples 25 --chains 2 --faults 25 --json results/reliability.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
