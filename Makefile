# The two set-up commands of the README are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# test workers: one per core (pytest-xdist); each computes with one torch thread (tests/conftest.py)
WORKERS ?= auto
PYTEST := $(BIN)/python -m pytest -q

.PHONY: install demo test test-slow test-portability lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'

demo: install
	$(BIN)/entrobust demo

# Tests that start several busy processes (marker `multiprocess`) run after the parallel part,
# alone, so that they never compete with the workers for the cores.
test: install
	$(PYTEST) -n $(WORKERS) -m "not slow and not multiprocess"
	$(PYTEST) -m "not slow and multiprocess"

test-slow: install
	$(PYTEST) -n $(WORKERS) -m "slow and not multiprocess"
	$(PYTEST) -m "slow and multiprocess"

# The default suite with the CPU kernels forced lower (no AVX-512; no AVX at all) and again beside
# two CPU-busy processes: results must not depend on the CPU kind or on load (.ci/portability).
test-portability: install
	bash .ci/portability

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache
