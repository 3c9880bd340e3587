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
# Precision follows the hardware; `make demo PRECISION=32-true` forces one (e.g. to reproduce the README's fp32 table).
PRECISION ?=
demo: $(STAMP)
	bash scripts/run_full_pipeline.sh tiny $(if $(PRECISION),--precision $(PRECISION))

# The real study's configs (configs/{sft,dpo,evaluate}.yaml) on the CPU, offline: a Mistral-7B-v0.1-shaped model
# with 1 decoder layer and data files in the real datasets' schemas, once with LoRA and once with QLoRA (4-bit);
# every setting that differs from the GPU run is printed (configs/dryrun/). A rerun skips what is complete.
DRYRUN := artifacts/study-dryrun/base/model.safetensors
$(DRYRUN): $(STAMP) scripts/build_study_dryrun.py tiny_world/study_shaped.py configs/models/mistral-7b-v0.1.json
	$(PY) scripts/build_study_dryrun.py --out artifacts/study-dryrun
study-dryrun: $(DRYRUN)
	bash scripts/run_full_pipeline.sh study --overrides configs/dryrun
	bash scripts/run_full_pipeline.sh study --overrides configs/dryrun configs/dryrun/qlora

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

# The wheels benchmarks/gpu_check.sh installs on a CUDA machine that has torch, lightning, transformers and peft
# but not datasets (with the dependencies transformers does not bring) or bitsandbytes: manylinux x86_64 wheels
# for the GPU machine's Python (GPU_PYTHON_VERSION), from PyPI, with the versions this project is tested with.
# About 108 MB, 43 MB of it bitsandbytes and 55 MB pyarrow.
GPU_PYTHON_VERSION ?= 3.11
GPU_WHEELS := bitsandbytes==0.50.2 datasets==5.2.0 pyarrow==26.0.1 pandas==3.1.1 dill==0.4.1 multiprocess==0.70.19 \
	xxhash==4.1.0 python-dateutil==4.0.0 pytz==2026.6 tzdata==2026.6
gpu-wheels: $(STAMP)
	$(PY) -m pip download --no-deps --only-binary=:all: --python-version $(GPU_PYTHON_VERSION) \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux2014_x86_64 \
		-d benchmarks/wheels $(GPU_WHEELS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs outputs results artifacts lightning_logs
