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

.PHONY: venv tiny demo study-dryrun test test-slow test-all bench gpu-wheels lint clean

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
# Precision follows the hardware; `make demo PRECISION=32-true` forces one (e.g. to reproduce an fp32 table of docs/results.md).
PRECISION ?=
demo: $(STAMP)
	$(PY) scripts/run_study.py tiny $(if $(PRECISION),--precision $(PRECISION))

# The real study's configs (configs/{sft,dpo,evaluate}.yaml) on the CPU, offline: a Mistral-7B-v0.1-shaped model
# with 1 decoder layer and data files in the real datasets' schemas, once with LoRA and once with QLoRA (4-bit);
# every setting that differs from the GPU run is printed (configs/dryrun/). A rerun skips what is complete.
DRYRUN := artifacts/study-dryrun/base/model.safetensors
$(DRYRUN): $(STAMP) scripts/build_study_dryrun.py tiny_world/study_shaped.py configs/models/mistral-7b-v0.1.json
	$(PY) scripts/build_study_dryrun.py --out artifacts/study-dryrun
study-dryrun: $(DRYRUN)
	$(PY) scripts/run_study.py study --overrides configs/dryrun
	$(PY) scripts/run_study.py study --overrides configs/dryrun configs/qlora configs/dryrun/qlora

# Fast suite (pytest exit code 5 = "no tests collected" is a failure here: something is wrong).
test: $(STAMP)
	$(PY) -m pytest -q

# Tests marked slow (over a minute each); exit code 5 (none selected) is fine.
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow; rc=$$?; if [ $$rc -eq 5 ]; then echo "no slow tests"; rc=0; fi; exit $$rc

test-all: test test-slow

# Ours vs TRL (benchmarks/README.md). `make bench WORKLOAD=short_uniform` (or log_uniform) runs the alternative
# lengths instead of the realistic ones; `CASES="sft_full dpo_full"` a subset of the cases.
WORKLOAD ?=
CASES ?=
bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/bench_vs_trl.py $(if $(WORKLOAD),--workload $(WORKLOAD)) $(if $(CASES),--cases $(CASES))

# The wheels benchmarks/gpu_check.sh installs on the GPU machine (torch, lightning, transformers, peft there; no
# network): bitsandbytes for the QLoRA cases and jsonargparse for the planner's CLI, as listed with their sizes in
# benchmarks/gpu_wheels.txt (~41.3 MiB in all; the device tool carries at most 64 MiB: `carry: ["benchmarks/wheels"]`,
# the folder stays out of git). manylinux x86_64, --no-deps, for the GPU machine's Python; the folder is refilled,
# then checked against the list (each file's size, the total).
GPU_PYTHON_VERSION ?= 3.12
GPU_WHEELS = $(shell awk '!/^\#/ && NF {print $$1}' benchmarks/gpu_wheels.txt)
gpu-wheels: $(STAMP)
	rm -rf benchmarks/wheels
	$(PY) -m pip download --no-deps --only-binary=:all: --python-version $(GPU_PYTHON_VERSION) \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux2014_x86_64 \
		-d benchmarks/wheels $(GPU_WHEELS)
	$(PY) benchmarks/gpu_check.py --check-wheels benchmarks/wheels

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs outputs results artifacts lightning_logs
