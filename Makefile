# Set-up and the two everyday jobs. `make train` / `make test` create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Real CIFAR-10 beside the checkout (this team's machines) if present, else ./data (downloaded on first use).
REGLAB_DATA ?= $(if $(wildcard ../shared/data/cifar-10-batches-py),../shared/data,data)
export REGLAB_DATA

$(BIN)/reglab: pyproject.toml requirements-lock.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-lock.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

.PHONY: setup train test bench
setup: $(BIN)/reglab

train: setup  ## train the default recipe (recipes/quick.yaml) on CIFAR-10
	$(BIN)/reglab train $(ARGS)

test: setup  ## the test suite (what CI runs)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/loader_throughput.py
