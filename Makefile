# Two commands set everything up on a fresh clone: `make demo` and `make test`.
# Each creates .venv and installs the project into it first.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TINY := artifacts/tiny-base/model.safetensors
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv tiny demo test test-slow test-all bench lint clean

venv: $(STAMP)

# torch is pinned to the CPU build on disk first, so nothing pulls the multi-GB CUDA wheels.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# The embedded tiny base: a local BPE tokenizer and a briefly pre-trained tiny Mistral.
tiny: $(TINY)
$(TINY): $(STAMP) scripts/build_tiny_model.py data/tiny/pretrain.txt
	$(PY) scripts/build_tiny_model.py --out artifacts/tiny-base

# The whole study on the tiny default, on a CPU: tiny base -> SFT -> DPO -> evaluation -> report.
# Precision follows the hardware; `make demo PRECISION=32-true` forces one (e.g. to reproduce the README's fp32 table).
PRECISION ?=
demo: $(STAMP)
	bash scripts/run_full_pipeline.sh tiny $(if $(PRECISION),--precision $(PRECISION))

# Fast suite (pytest exit code 5 = "no tests collected" is a failure here: something is wrong).
test: $(STAMP)
	$(PY) -m pytest -q

# Tests marked slow (over a minute each); exit code 5 (none selected) is fine.
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow; rc=$$?; if [ $$rc -eq 5 ]; then echo "no slow tests"; rc=0; fi; exit $$rc

test-all: test test-slow

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/bench_vs_trl.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs outputs results artifacts lightning_logs
