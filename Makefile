# Two entry points from a fresh machine: `make test` and `make demo`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/py311.txt
PYTEST_ARGS ?=

.PHONY: test demo bench lint gpu-checks clean

$(STAMP): pyproject.toml $(LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r $(LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/srp demo --out demo_out

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

# On a GPU machine (see docs/hardware.md): tests/gpu and SmolLM2-1.7B throughput beside Megatron-LM's figure.
gpu-checks:
	bash tests/gpu/run_gpu_checks.sh

lint: $(STAMP)
	$(BIN)/ruff check srp_megatron tests bench

clean:
	rm -rf $(VENV) demo_out bench_out .pytest_cache
