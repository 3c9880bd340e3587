#!/usr/bin/env bash
# The GPU check in one call on a CUDA machine (see benchmarks/README.md, "GPU check"):
#   bash benchmarks/gpu_check.sh [gpu_check.py options, e.g. --cases sft-lora dpo-lora --json "$OUT/gpu-check.json"]
# The machine is expected to have torch, lightning, transformers and peft; nothing the check imports needs
# datasets. What it may lack, bitsandbytes (the QLoRA cases) and jsonargparse (the planner's CLI), is installed
# from the wheels in benchmarks/wheels (benchmarks/gpu_wheels.txt; `make gpu-wheels` fills the folder where PyPI
# answers; the device tool brings it with `carry: ["benchmarks/wheels"]`), into a temporary folder put on
# PYTHONPATH: never from the network, and the machine's own environment is left as it is. Without bitsandbytes
# the QLoRA cases are skipped (and said so); the check starts no phase after --budget-s 360 (a later option
# wins), so that one call ends within 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=benchmarks/wheels

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

missing=()
for module in bitsandbytes jsonargparse; do
  "$PY" -c "import $module" 2>/dev/null || missing+=("$module")
done
if ((${#missing[@]})); then
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    site=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check-site.XXXXXX")
    "$PY" -m pip install --quiet --no-index --no-deps --find-links "$WHEELS" --target "$site" "${missing[@]}" \
      || echo "gpu_check.sh: could not install ${missing[*]} from $WHEELS; going on without" >&2
    export PYTHONPATH="$PYTHONPATH:$site"
  else
    echo "gpu_check.sh: ${missing[*]} not installed and no wheels in $WHEELS ('make gpu-wheels' where PyPI answers)" >&2
  fi
fi
if ! "$PY" -c "import bitsandbytes" 2>/dev/null; then
  echo "gpu_check.sh: bitsandbytes does not import: the QLoRA cases are skipped"
fi

if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
else
  echo "nvidia-smi: not found"
fi
"$PY" benchmarks/gpu_check.py --versions

mkdir -p benchmarks/results
exec "$PY" benchmarks/gpu_check.py --json "benchmarks/results/gpu-check-$(date +%F).json" --budget-s 360 "$@"
