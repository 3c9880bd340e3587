#!/usr/bin/env bash
# The GPU check in one call on a CUDA machine (see benchmarks/README.md, "GPU check"):
#   bash benchmarks/gpu_check.sh [gpu_check.py options, e.g. --cases sft-qlora dpo-qlora]
# The machine is expected to have torch, lightning, transformers and peft. What it lacks (datasets, which the
# project's modules import, and bitsandbytes for QLoRA) is installed from the wheels in benchmarks/wheels
# (`make gpu-wheels` fills it, from PyPI, on a machine that has PyPI), never from the network.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=benchmarks/wheels

missing=()
for module in datasets bitsandbytes; do
  "$PY" -c "import $module" 2>/dev/null || missing+=("$module")
done
if ((${#missing[@]})); then
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "error: ${missing[*]} not installed and no wheels in $WHEELS: run 'make gpu-wheels' where PyPI answers" >&2
    exit 2
  fi
  "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" "${missing[@]}"
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: not found"
"$PY" -c "import torch, transformers, peft, lightning, bitsandbytes; print('torch', torch.__version__, \
'cuda', torch.version.cuda, '| transformers', transformers.__version__, '| peft', peft.__version__, \
'| lightning', lightning.__version__, '| bitsandbytes', bitsandbytes.__version__)"

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p benchmarks/results
exec "$PY" benchmarks/gpu_check.py --json "benchmarks/results/gpu-check-$(date +%F).json" "$@"
