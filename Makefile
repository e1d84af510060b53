# Set-up and the two everyday jobs. `make train` / `make test` create .venv on first use: `make train` installs the
# runtime set (requirements-lock.txt), `make test` adds the test tools and the optional extras
# (requirements-dev-lock.txt). tools/install_deps.py installs with uv where it can (the runtime set in about half
# pip's time: record setup-uv-icelake), else with pip.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Real CIFAR-10 beside the checkout (this team's machines) if present, else ./data (downloaded on first use).
REGLAB_DATA ?= $(if $(wildcard ../shared/data/cifar-10-batches-py),../shared/data,data)
export REGLAB_DATA

$(BIN)/reglab: pyproject.toml requirements-lock.txt
	$(PY) -m venv $(VENV)
	$(PY) tools/install_deps.py $(VENV) -r requirements-lock.txt
	$(PY) tools/install_deps.py $(VENV) --no-deps -e .
	touch $@

$(VENV)/.dev-installed: $(BIN)/reglab requirements-dev-lock.txt
	$(PY) tools/install_deps.py $(VENV) -r requirements-dev-lock.txt
	touch $@

.PHONY: setup setup-dev train test lint format bench browser
setup: $(BIN)/reglab
setup-dev: $(VENV)/.dev-installed

# The HTML report tests drive Debian's chromium (through playwright's Python API, no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: sudo apt-get install chromium (the HTML report tests need it)"; fi; }

train: setup  ## train the default recipe (default.yaml, or default-fp32.yaml without bf16) on CIFAR-10
	$(BIN)/reglab train $(ARGS)

# All tests, the ones marked slow included (each over ~20 s: real trainings, killed and resumed processes, DDP,
# the Slurm and PostgreSQL servers). The quick local loop leaves those out:
#   make test PYTEST_ARGS="-m 'not slow'"
test: lint browser  ## the linter, then the test suite (what CI runs)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# ruff: lint rules and line length in pyproject.toml; `make format` rewrites the files the check would reject.
lint: setup-dev
	$(BIN)/ruff check reglab tests benchmarks tools
	$(BIN)/ruff format --check reglab tests benchmarks tools

format: setup-dev
	$(BIN)/ruff check --fix reglab tests benchmarks tools
	$(BIN)/ruff format reglab tests benchmarks tools

bench: setup
	$(BIN)/python benchmarks/loader_throughput.py
