#!/usr/bin/env bash
# The whole study, stage by stage: [tiny base] -> SFT -> DPO -> evaluate -> report.
#
#   bash scripts/run_full_pipeline.sh [tiny|study] [--force] [--precision P]
#
#   tiny   (default) the embedded CPU study: configs/tiny/{sft,dpo,evaluate}.yaml, results in results/
#   study  the real study on a GPU (Mistral-7B-v0.1): configs/{sft,dpo,evaluate}.yaml, results/study/
#   --precision P   train (and pre-train the tiny base) in P, e.g. 32-true, instead of the configs'
#                   `auto` (bf16-mixed where the hardware computes bf16 natively, else 32-true / 16-mixed)
#
# A stage is skipped when its output is complete (the tiny base's weights, an export's
# export_info.json, evaluation_results.json, report.md), so a rerun after a crash continues where it
# stopped: a training stage that left a last.ckpt resumes from it (--ckpt_path last). A stage that
# runs makes every later stage start afresh, since its input changed: their old outputs, checkpoints
# and TensorBoard event files are removed first. --force redoes every stage from scratch.
#
# Environment: PYTHON (default .venv/bin/python when present, else python3).
set -euo pipefail

usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
}

SET="tiny"
FORCE=0
PRECISION=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --force) FORCE=1 ;;
        --precision)
            if [[ $# -lt 2 || -z "$2" ]]; then echo "error: --precision needs a value, e.g. 32-true" >&2; exit 2; fi
            PRECISION="$2"
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        tiny | study) SET="$1" ;;
        *) echo "error: unknown argument '$1'; expected tiny, study, --force or --precision P" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
# Passed on to every stage that computes in a precision; empty: the configs' `auto`.
TRAIN_PRECISION=() BUILD_PRECISION=()
if [[ -n "$PRECISION" ]]; then
    TRAIN_PRECISION=(--trainer.precision "$PRECISION")
    BUILD_PRECISION=(--precision "$PRECISION")
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export TOKENIZERS_PARALLELISM=false
# OpenMP's default wait policy (spin briefly, then sleep) is left alone: forcing PASSIVE made the tiny
# pre-training ~15% slower on a 2-core CPU (29-31 s against 22-26 s for 51 steps). On a CPU shared with other
# jobs, OMP_WAIT_POLICY=PASSIVE in the environment is kinder to them, and is kept when set.

case "$SET" in
    tiny)
        SFT_CONFIG=configs/tiny/sft.yaml DPO_CONFIG=configs/tiny/dpo.yaml EVAL_CONFIG=configs/tiny/evaluate.yaml
        OFFLINE_DEFAULT=1 # everything is on disk
        ;;
    study)
        SFT_CONFIG=configs/sft.yaml DPO_CONFIG=configs/dpo.yaml EVAL_CONFIG=configs/evaluate.yaml
        OFFLINE_DEFAULT=0 # Mistral-7B and the datasets come from the Hub (unless already set offline)
        ;;
esac
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-$OFFLINE_DEFAULT}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-$OFFLINE_DEFAULT}"

# Where each stage writes, read from its config (so the configs stay the one source of truth).
# Prints: base model, SFT export, SFT run dir, SFT last.ckpt, DPO export, DPO run dir, DPO last.ckpt, results dir.
read_paths() {
    "$PYTHON" - "$SFT_CONFIG" "$DPO_CONFIG" "$EVAL_CONFIG" <<'EOF'
import sys
from pathlib import Path

import yaml

def stage(path):
    config = yaml.safe_load(Path(path).read_text())
    trainer = config["trainer"]
    logger = trainer["logger"]["init_args"]
    def dirpath(kind):
        return next(c["init_args"]["dirpath"] for c in trainer["callbacks"] if c["class_path"].endswith(kind))

    run = Path(logger["save_dir"]) / logger["name"]
    last = Path(dirpath("ModelCheckpoint")) / "last.ckpt"
    return config["model"]["init_args"]["model_name_or_path"], dirpath("HFExportCallback"), run, last

base, sft_export, sft_run, sft_last = stage(sys.argv[1])
_, dpo_export, dpo_run, dpo_last = stage(sys.argv[2])
results = yaml.safe_load(Path(sys.argv[3]).read_text()).get("results_dir", "results")
print(base, sft_export, sft_run, sft_last, dpo_export, dpo_run, dpo_last, results)
EOF
}
PATHS="$(read_paths)"
read -r BASE SFT_EXPORT SFT_RUN SFT_LAST DPO_EXPORT DPO_RUN DPO_LAST RESULTS <<<"$PATHS"
if [[ -z "$RESULTS" ]]; then
    echo "error: could not read the output paths from $SFT_CONFIG, $DPO_CONFIG and $EVAL_CONFIG" >&2
    exit 1
fi

if [[ "$SET" == "tiny" ]]; then STAGES=5; else STAGES=4; fi
STAGE=0
REDO=$FORCE
PIPELINE_START=$SECONDS

# run_stage NAME OUTPUTS DONE_FILE CLEAN_PATHS CHECKPOINT -- COMMAND...
# CHECKPOINT: the stage's last.ckpt, resumed from when the stage is not redone from scratch ("-": none).
run_stage() {
    local name="$1" outputs="$2" done_file="$3" clean="$4" checkpoint="$5"
    shift 6
    STAGE=$((STAGE + 1))
    if [[ $REDO -eq 0 && -f "$done_file" ]]; then
        echo "[stage $STAGE/$STAGES] $name: skipped, already complete -> $outputs"
        return
    fi
    local start=$SECONDS
    if [[ $REDO -eq 0 && "$checkpoint" != "-" && -f "$checkpoint" ]]; then
        echo "[stage $STAGE/$STAGES] $name: resuming from $checkpoint ... -> $outputs"
        "$@" --ckpt_path last
    else
        echo "[stage $STAGE/$STAGES] $name: running ... -> $outputs"
        # shellcheck disable=SC2086  # CLEAN_PATHS is a space-separated list of paths
        rm -rf $clean
        "$@"
    fi
    if [[ ! -f "$done_file" ]]; then
        echo "error: stage '$name' finished without writing $done_file" >&2
        exit 1
    fi
    echo "[stage $STAGE/$STAGES] $name: done in $((SECONDS - start))s -> $outputs"
    REDO=1 # every later stage depends on this one's output
}

echo "Pipeline '$SET' with $PYTHON: $SFT_CONFIG -> $DPO_CONFIG -> $EVAL_CONFIG$([[ $FORCE -eq 1 ]] && echo ' (--force)')$([[ -n "$PRECISION" ]] && echo " (precision $PRECISION)")"
if [[ "$SET" == "tiny" ]]; then
    run_stage "build tiny base" "$BASE" "$BASE/model.safetensors" "$BASE" - -- \
        "$PYTHON" scripts/build_tiny_model.py --out "$BASE" "${BUILD_PRECISION[@]}"
fi
run_stage "SFT" "$SFT_EXPORT (TensorBoard: $SFT_RUN/tensorboard)" "$SFT_EXPORT/export_info.json" \
    "$SFT_EXPORT $SFT_RUN $(dirname "$SFT_LAST")" "$SFT_LAST" -- "$PYTHON" train.py fit --config "$SFT_CONFIG" "${TRAIN_PRECISION[@]}"
run_stage "DPO" "$DPO_EXPORT (TensorBoard: $DPO_RUN/tensorboard)" "$DPO_EXPORT/export_info.json" \
    "$DPO_EXPORT $DPO_RUN $(dirname "$DPO_LAST")" "$DPO_LAST" -- "$PYTHON" train.py fit --config "$DPO_CONFIG" "${TRAIN_PRECISION[@]}"
run_stage "evaluate" "$RESULTS/evaluation_results.json, $RESULTS/side_by_side_comparison.txt" \
    "$RESULTS/evaluation_results.json" "$RESULTS/evaluation_results.json $RESULTS/side_by_side_comparison.txt" - -- \
    "$PYTHON" scripts/evaluate.py --config "$EVAL_CONFIG"
run_stage "report" "$RESULTS/report.md" "$RESULTS/report.md" "$RESULTS/report.md $RESULTS/plots" - -- \
    "$PYTHON" scripts/report.py --results-dir "$RESULTS" --sft-run "$SFT_RUN" --dpo-run "$DPO_RUN"

echo "Pipeline '$SET' complete in $((SECONDS - PIPELINE_START))s. Read $RESULTS/report.md" \
    "(side by side: $RESULTS/side_by_side_comparison.txt)."
