#!/usr/bin/env bash
# The whole study, stage by stage: [tiny base -> reward model] -> SFT -> DPO -> evaluate -> report.
#
#   bash scripts/run_full_pipeline.sh [tiny|study] [--seeds S [S ...]] [--force] [--precision P] [--overrides DIR [DIR ...]]
#
#   tiny   (default) the embedded CPU study: configs/tiny/{sft,dpo,reward,evaluate}.yaml, results in results/
#   study  the real study on a GPU (Mistral-7B-v0.1): configs/{sft,dpo,evaluate}.yaml, results/study/
#   --seeds S ...   train SFT and DPO once per training seed, each into its own folders (runs/<set>/seedS,
#                   outputs/<set>/seedS, results[/study]/seedS), evaluate and report each, then report all
#                   seeds together (mean +- sd across seeds) in <results>/seeds/report.md
#   --precision P   train (and pre-train the tiny base) in P, e.g. 32-true, instead of the configs'
#                   `auto` (bf16-mixed where the hardware computes bf16 natively, else 32-true / 16-mixed);
#                   a complete stage recorded in another precision is redone
#   --overrides DIR ...  run the set's configs with each DIR's {sft,dpo,evaluate,reward}.yaml merged on top and
#                   the output folders its outputs.yaml names moved (scripts/pipeline_configs.py prints every
#                   difference); `make study-dryrun` runs `study --overrides configs/dryrun [configs/dryrun/qlora]`
#
# A stage is skipped when its output is complete (the tiny base's weights, an export's
# export_info.json, evaluation_results.json, report.md), so a rerun after a crash continues where it
# stopped (and a rerun with --seeds skips the seeds already complete): a training stage that left a
# last.ckpt resumes from it (--ckpt_path last). A stage that runs makes the stages that read its output
# start afresh: their old outputs, checkpoints and TensorBoard event files are removed first.
# --force redoes every stage from scratch.
#
# Environment: PYTHON (default .venv/bin/python when present, else python3).
set -euo pipefail

usage() {
    sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
}

SET="tiny"
FORCE=0
PRECISION=""
SEEDS=()
OVERRIDES=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --force) FORCE=1 ;;
        --precision)
            if [[ $# -lt 2 || -z "$2" ]]; then echo "error: --precision needs a value, e.g. 32-true" >&2; exit 2; fi
            PRECISION="$2"
            shift
            ;;
        --seeds)
            while [[ $# -gt 1 && "$2" =~ ^[0-9]+$ ]]; do SEEDS+=("$2"); shift; done
            if [[ ${#SEEDS[@]} -eq 0 ]]; then echo "error: --seeds needs one or more integers, e.g. --seeds 0 1 2" >&2; exit 2; fi
            ;;
        --overrides)
            while [[ $# -gt 1 && "$2" != -* && "$2" != tiny && "$2" != study ]]; do OVERRIDES+=("$2"); shift; done
            if [[ ${#OVERRIDES[@]} -eq 0 ]]; then echo "error: --overrides needs one or more folders, e.g. --overrides configs/dryrun" >&2; exit 2; fi
            ;;
        -h | --help) usage; exit 0 ;;
        tiny | study) SET="$1" ;;
        *) echo "error: unknown argument '$1'; expected tiny, study, --seeds S..., --force, --precision P or --overrides DIR..." >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [[ ${#SEEDS[@]} -gt 0 && $(printf '%s\n' "${SEEDS[@]}" | sort -u | wc -l) -ne ${#SEEDS[@]} ]]; then
    echo "error: --seeds lists a seed twice: ${SEEDS[*]}" >&2
    exit 2
fi
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

REWARD_CONFIG=""
case "$SET" in
    tiny)
        SFT_CONFIG=configs/tiny/sft.yaml DPO_CONFIG=configs/tiny/dpo.yaml EVAL_CONFIG=configs/tiny/evaluate.yaml
        REWARD_CONFIG=configs/tiny/reward.yaml # the judge of the generated responses, trained on the tiny pairs
        OFFLINE_DEFAULT=1                      # everything is on disk
        ;;
    study)
        SFT_CONFIG=configs/sft.yaml DPO_CONFIG=configs/dpo.yaml EVAL_CONFIG=configs/evaluate.yaml
        OFFLINE_DEFAULT=0 # Mistral-7B and the datasets come from the Hub (unless already set offline)
        ;;
esac
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-$OFFLINE_DEFAULT}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-$OFFLINE_DEFAULT}"
if [[ ${#OVERRIDES[@]} -gt 0 ]]; then # the same stages on merged copies of the configs, written beside their runs
    MERGED="$("$PYTHON" scripts/pipeline_configs.py "$SFT_CONFIG" "$DPO_CONFIG" "$EVAL_CONFIG" \
        ${REWARD_CONFIG:+--reward "$REWARD_CONFIG"} --overrides "${OVERRIDES[@]}")"
    SFT_CONFIG="$MERGED/sft.yaml" DPO_CONFIG="$MERGED/dpo.yaml" EVAL_CONFIG="$MERGED/evaluate.yaml"
    if [[ -n "$REWARD_CONFIG" ]]; then REWARD_CONFIG="$MERGED/reward.yaml"; fi
fi

# Where each stage writes, read from its config (the configs stay the one source of truth); with a seed,
# per-seed copies of the configs are written first and their paths read instead.
# Sets: BASE SFT_EXPORT SFT_RUN SFT_LAST DPO_EXPORT DPO_RUN DPO_LAST RESULTS REWARD_EXPORT REWARD_RUN REWARD_LAST
read_paths() {
    local paths
    paths="$("$PYTHON" scripts/pipeline_configs.py "$SFT_CONFIG" "$DPO_CONFIG" "$EVAL_CONFIG" \
        ${REWARD_CONFIG:+--reward "$REWARD_CONFIG"} "$@")"
    read -r BASE SFT_EXPORT SFT_RUN SFT_LAST DPO_EXPORT DPO_RUN DPO_LAST RESULTS REWARD_EXPORT REWARD_RUN REWARD_LAST <<<"$paths"
    if [[ -z "${REWARD_LAST:-}" ]]; then
        echo "error: could not read the output paths from $SFT_CONFIG, $DPO_CONFIG and $EVAL_CONFIG" >&2
        exit 1
    fi
}
read_paths
RESULTS_ROOT="$RESULTS" RUNS_ROOT="$(dirname "$SFT_RUN")"

STAGES=$(( (${#SEEDS[@]} > 0 ? ${#SEEDS[@]} : 1) * 4 + (${#SEEDS[@]} > 0 ? 1 : 0) ))
if [[ "$SET" == "tiny" ]]; then STAGES=$((STAGES + 1)); fi
if [[ -n "$REWARD_CONFIG" ]]; then STAGES=$((STAGES + 1)); fi
STAGE=0
PIPELINE_START=$SECONDS

# run_stage NAME OUTPUTS DONE_FILE CLEAN_PATHS CHECKPOINT REDO -- COMMAND...
# REDO=1: an input changed (or --force): start afresh. Otherwise a complete stage is skipped and a stage
# that left CHECKPOINT (its last.ckpt; "-": none) resumes from it. Sets RAN=1 when the stage ran, else 0.
run_stage() {
    local name="$1" outputs="$2" done_file="$3" clean="$4" checkpoint="$5" redo="$6"
    shift 7
    STAGE=$((STAGE + 1))
    RAN=0
    if [[ $redo -eq 0 && -f "$done_file" ]]; then
        echo "[stage $STAGE/$STAGES] $name: skipped, already complete -> $outputs"
        return
    fi
    local start=$SECONDS
    if [[ $redo -eq 0 && "$checkpoint" != "-" && -f "$checkpoint" ]]; then
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
    RAN=1
}

either() { if [[ "$1" -eq 1 || "$2" -eq 1 ]]; then echo 1; else echo 0; fi; }

# stale_base FILE NAME: 1 when the complete stage's export_info.json (FILE) records a local base model whose
# files have changed since (e.g. the tiny base rebuilt by another run: a seed's SFT adapter would sit on new weights).
stale_base() {
    local file="$1" name="$2"
    if [[ ! -f "$file" ]]; then echo 0; return; fi
    if "$PYTHON" - "$file" <<'CHECK'
import json, sys
from pathlib import Path

from common.provenance import MODEL_FILE_SUFFIXES, files_sha256

source = (json.loads(Path(sys.argv[1]).read_text()).get("provenance") or {}).get("model") or {}
path, recorded = source.get("path"), source.get("sha256")
sys.exit(3 if path and recorded and Path(path).exists() and files_sha256(path, MODEL_FILE_SUFFIXES) != recorded else 0)
CHECK
    then echo 0; else
        if [[ $? -eq 3 ]]; then
            echo "[pipeline] $name was trained on an earlier version of its base model: redoing it" >&2
        else  # redoing a stage costs time; keeping one trained on other weights would cost the results
            echo "[pipeline] could not compare $name's base model with the one recorded in $file: redoing it" >&2
        fi
        echo 1
    fi
}

# stale_precision FILE NAME: 1 when --precision P was given and the complete stage's record (FILE, a JSON with a
# "precision" entry such as "bf16-mixed (CPU with native bf16: AVX512_BF16)") says it ran in another one.
stale_precision() {
    local file="$1" name="$2" recorded
    if [[ -z "$PRECISION" || ! -f "$file" ]]; then echo 0; return; fi
    recorded="$("$PYTHON" -c 'import json, sys; print((json.load(open(sys.argv[1])).get("precision") or "?").split(" ")[0])' "$file")"
    if [[ "$recorded" == "$PRECISION" ]]; then echo 0; return; fi
    echo "[pipeline] $name was done in $recorded, and --precision $PRECISION asks for another: redoing it" >&2
    echo 1
}

echo "Pipeline '$SET' with $PYTHON: $SFT_CONFIG -> $DPO_CONFIG -> $EVAL_CONFIG$([[ $FORCE -eq 1 ]] && echo ' (--force)')$([[ -n "$PRECISION" ]] && echo " (precision $PRECISION)")$([[ ${#SEEDS[@]} -gt 0 ]] && echo " (training seeds ${SEEDS[*]})")"
BASE_CHANGED=$FORCE
if [[ "$SET" == "tiny" ]]; then
    run_stage "build tiny base" "$BASE" "$BASE/model.safetensors" "$BASE" - \
        "$(either "$FORCE" "$(stale_precision "$BASE/build_args.json" "the tiny base")")" -- \
        "$PYTHON" scripts/build_tiny_model.py --out "$BASE" "${BUILD_PRECISION[@]}"
    BASE_CHANGED=$(either "$FORCE" "$RAN")
fi
JUDGE_CHANGED=0
if [[ -n "$REWARD_CONFIG" ]]; then
    run_stage "reward model" "$REWARD_EXPORT (TensorBoard: $REWARD_RUN/tensorboard)" "$REWARD_EXPORT/export_info.json" \
        "$REWARD_EXPORT $REWARD_RUN $(dirname "$REWARD_LAST")" "$REWARD_LAST" \
        "$(either "$(either "$BASE_CHANGED" "$(stale_precision "$REWARD_EXPORT/export_info.json" "the reward model")")" \
            "$(stale_base "$REWARD_EXPORT/export_info.json" "the reward model")")" -- \
        "$PYTHON" train.py fit --config "$REWARD_CONFIG" "${TRAIN_PRECISION[@]}"
    JUDGE_CHANGED=$RAN
fi

# train_and_evaluate NAME_SUFFIX SFT_CONFIG DPO_CONFIG EVAL_CONFIG: SFT -> DPO -> evaluate -> report with the configs read last by read_paths.
REPORTED=0
train_and_evaluate() {
    local suffix="$1" sft_config="$2" dpo_config="$3" eval_config="$4" redo
    redo=$(either "$BASE_CHANGED" "$(stale_precision "$SFT_EXPORT/export_info.json" "SFT$suffix")")
    redo=$(either "$redo" "$(stale_base "$SFT_EXPORT/export_info.json" "SFT$suffix")")
    run_stage "SFT$suffix" "$SFT_EXPORT (TensorBoard: $SFT_RUN/tensorboard)" "$SFT_EXPORT/export_info.json" \
        "$SFT_EXPORT $SFT_RUN $(dirname "$SFT_LAST")" "$SFT_LAST" "$redo" -- \
        "$PYTHON" train.py fit --config "$sft_config" "${TRAIN_PRECISION[@]}"
    redo=$(either "$(either "$redo" "$RAN")" "$(stale_precision "$DPO_EXPORT/export_info.json" "DPO$suffix")")
    run_stage "DPO$suffix" "$DPO_EXPORT (TensorBoard: $DPO_RUN/tensorboard)" "$DPO_EXPORT/export_info.json" \
        "$DPO_EXPORT $DPO_RUN $(dirname "$DPO_LAST")" "$DPO_LAST" "$redo" -- \
        "$PYTHON" train.py fit --config "$dpo_config" "${TRAIN_PRECISION[@]}"
    redo=$(either "$(either "$redo" "$RAN")" "$JUDGE_CHANGED")
    run_stage "evaluate$suffix" "$RESULTS/evaluation_results.json, $RESULTS/side_by_side_comparison.txt" \
        "$RESULTS/evaluation_results.json" "$RESULTS/evaluation_results.json $RESULTS/side_by_side_comparison.txt" - "$redo" -- \
        "$PYTHON" scripts/evaluate.py --config "$eval_config"
    redo=$(either "$redo" "$RAN")
    run_stage "report$suffix" "$RESULTS/report.md" "$RESULTS/report.md" "$RESULTS/report.md $RESULTS/plots" - "$redo" -- \
        "$PYTHON" scripts/report.py --results-dir "$RESULTS" --sft-run "$SFT_RUN" --dpo-run "$DPO_RUN"
    REPORTED=$(either "$REPORTED" "$RAN")
}

if [[ ${#SEEDS[@]} -eq 0 ]]; then
    train_and_evaluate "" "$SFT_CONFIG" "$DPO_CONFIG" "$EVAL_CONFIG"
    echo "Pipeline '$SET' complete in $((SECONDS - PIPELINE_START))s. Read $RESULTS/report.md" \
        "(side by side: $RESULTS/side_by_side_comparison.txt)."
    exit 0
fi

SEED_RESULTS=()
for seed in "${SEEDS[@]}"; do
    configs="$RUNS_ROOT/seed$seed/configs"
    read_paths --seed "$seed" --out "$configs"
    train_and_evaluate " (seed $seed)" "$configs/sft.yaml" "$configs/dpo.yaml" "$configs/evaluate.yaml"
    SEED_RESULTS+=("$RESULTS")
    if [[ ${#SEED_RESULTS[@]} -eq 1 ]]; then FIRST_SFT_RUN="$SFT_RUN" FIRST_DPO_RUN="$DPO_RUN"; fi
done
SUMMARY="$RESULTS_ROOT/seeds"
mkdir -p "$SUMMARY"
run_stage "report across seeds" "$SUMMARY/report.md" "$SUMMARY/report.md" "$SUMMARY/report.md" - "$(either "$FORCE" "$REPORTED")" -- \
    "$PYTHON" scripts/report.py --results-dir "${SEED_RESULTS[0]}" --sft-run "$FIRST_SFT_RUN" --dpo-run "$FIRST_DPO_RUN" \
    --out "$SUMMARY/report.md" --seed-results "${SEED_RESULTS[@]}"
echo "Pipeline '$SET' complete in $((SECONDS - PIPELINE_START))s (training seeds ${SEEDS[*]}). Read $SUMMARY/report.md" \
    "(each seed: $RESULTS_ROOT/seed<S>/report.md)."
