"""Predicted time of a training run: tokens x FLOPs per token / (utilisation x dense bf16 peak).

Tokens: rows x epochs x mean tokens per row (:data:`DATASETS`; preference pairs are two rows, chosen and
rejected, each with the prompt). FLOPs per token, with ``N`` the projections' weights of all layers
(``N_body``; embeddings are a lookup), ``N_head = V h`` applied at response positions only (a share ``rho`` of
the tokens, ``response_forward``), ``A = 2 L q s`` the causal attention of a row of ``s`` tokens (QK^T and AV,
each ``2 q`` FLOPs per earlier token, ``s / 2`` of them on average) and ``N_lora`` the adapters' weights:

* forward: ``F = 2 N + 2 rho N_head + A + 2 N_lora``;
* full fine-tuning step: ``3 F`` (the backward pass costs two forwards: gradients of activations and of
  weights), i.e. the classic ``6N`` plus attention;
* LoRA on a frozen base: the backward pass still multiplies every activation gradient by every frozen
  weight (``2 N + 2 rho N_head + 2 A``) but computes no weight gradient except the adapters' (``2 N_lora``):
  ``4N`` instead of ``6N``;
* gradient checkpointing: one more forward of the checkpointed decoder layers (``2 N + A + 2 N_lora`` times
  their share, ``(L - 1) / L`` by default: the last layer is not recomputed; the head is outside);
* a live DPO reference (``separate`` / ``adapter``): one no-grad forward ``F`` per trained token;
  ``precomputed``: one forward over the training and validation pairs once, before training;
* validation: one forward per validation token at every validation (and the live reference's).

``mfu`` is the share of the GPU's dense bf16 peak that these FLOPs run at. It is counted on the FLOPs the GPU
executes, recomputation included (PaLM's "hardware FLOPs utilisation" when checkpointing; plain MFU without),
so one figure compares runs with and without checkpointing. 4-bit dequantisation is not counted as FLOPs: it
lowers the utilisation a QLoRA run reaches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from planner.settings import PlanError, PlannedRun
from planner.shapes import Architecture


@dataclass(frozen=True)
class TokenStats:
    """Mean tokens of one row of a dataset in the project's prompt format (Mistral/Llama tokenizer).

    Attributes:
        rows: rows of the split (preference data: pairs).
        prompt: mean prompt tokens, the Alpaca template included.
        response: mean response tokens (preference data: the mean of chosen and rejected).
        val_rows: rows of the validation split (preference data), ``None``: carved out of ``rows``.
        source: where the figures come from.
    """

    rows: int
    prompt: float
    response: float
    val_rows: int | None
    source: str


CHARS_PER_TOKEN = 4.0
ALPACA_GPT4 = TokenStats(
    rows=52_002,
    prompt=70.0,
    response=162.0,
    val_rows=None,
    source=(
        "Wang et al. 2023 ('How Far Can Camels Go?', Table 1): GPT4-Alpaca prompts 28.0 and completions 161.8 "
        "Llama tokens; + 42 tokens of Alpaca template (166 characters on average, 40 % of rows with an input). "
        "Cross-check: the dataset card's 88,566,301 bytes / 52,002 rows hold each row twice (fields and `text`), "
        "760 characters of content = 190 tokens at 4.0 characters per token."
    ),
)
ULTRAFEEDBACK = TokenStats(
    rows=61_135,
    prompt=193.0,
    response=330.0,
    val_rows=2_000,
    source=(
        "the dataset card's split sizes: train_prefs 405,688,662 bytes and train_gen 325,040,536 bytes for 61,135 "
        "rows; their difference is taken as the chosen answer (1,319 characters; assumed: train_gen's `messages` "
        "holds the prompt alone where train_prefs' holds the chosen conversation), and train_prefs holds the "
        "prompt 4 times (prompt, chosen, "
        "rejected, messages) and the chosen answer twice: prompt 632 characters, rejected taken as long as "
        "chosen (an upper bound: rejected answers are shorter on average). At 4.0 characters per token, the "
        "rate Alpaca-GPT4's two sources agree on: prompt 158 + 35 template tokens, answers 330 tokens."
    ),
)
DATASETS = {"vicgalle/alpaca-gpt4": ALPACA_GPT4, "HuggingFaceH4/ultrafeedback_binarized": ULTRAFEEDBACK}


@dataclass(frozen=True)
class StageTime:
    """Tokens, FLOPs and seconds of one part of a run."""

    name: str
    tokens: float
    flops: float
    seconds: float


@dataclass(frozen=True)
class TimePlan:
    """The run's predicted time and the assumptions behind it."""

    stages: list[StageTime]
    train_rows: int
    val_rows: int
    row_tokens: float
    response_share: float
    validations: int
    mfu: float
    peak_flops: float
    devices: int
    source: str

    @property
    def seconds(self) -> float:
        return sum(stage.seconds for stage in self.stages)


def token_stats(settings: PlannedRun, mean_tokens: float | None = None) -> TokenStats:
    """Token statistics of the run's training data: the table, or ``--mean-tokens`` and counted rows."""
    name = settings.train_files[0] if len(settings.train_files) == 1 else None
    known = DATASETS.get(name or "")
    if mean_tokens is not None:
        rows = known.rows if known else _count_rows(settings.train_files)
        val_rows = known.val_rows if known else (_count_rows(settings.val_files) if settings.val_files else None)
        share = known.response / (known.prompt + known.response) if known else 0.5
        return TokenStats(rows, mean_tokens * (1 - share), mean_tokens * share, val_rows, "--mean-tokens")
    if known is None:
        raise PlanError(
            f"data.init_args.train_files {', '.join(settings.train_files) or '(unset)'}: no token statistics "
            f"known (only {', '.join(DATASETS)}); pass --mean-tokens N (tokens per row, prompt included)."
        )
    return known


def _count_rows(files: tuple[str, ...]) -> int:
    rows = 0
    for name in files:
        path = Path(name)
        if path.suffix != ".jsonl" or not path.is_file():
            raise PlanError(f"data.init_args.train_files {name}: rows can be counted only in local .jsonl files.")
        rows += sum(1 for line in path.read_text().splitlines() if line.strip())
    return rows


def split_rows(settings: PlannedRun, stats: TokenStats) -> tuple[int, int]:
    """``(train rows, validation rows)`` as the DataModules select them."""
    if settings.stage == "sft" and stats.val_rows is None:
        kept = min(settings.num_examples or stats.rows, stats.rows)
        val = round(kept * settings.val_fraction)
        return kept - val, val
    train = min(settings.num_examples or stats.rows, stats.rows)
    val_available = stats.val_rows or 0
    val = min(settings.num_val_examples or val_available, val_available)
    return train, val


def validations_per_run(settings: PlannedRun, train_batches: int) -> int:
    """How many times validation runs: ``val_check_interval`` as a share of an epoch or a number of batches."""
    interval = settings.val_check_interval
    if isinstance(interval, float) and interval <= 1.0:
        per_epoch = math.floor(1 / interval)
    else:
        per_epoch = train_batches // int(interval)
    return per_epoch * settings.max_epochs


def plan_time(
    arch: Architecture,
    settings: PlannedRun,
    peak_flops: float,
    mfu: float,
    mean_tokens: float | None = None,
    sft_adapter_params: int = 0,
) -> TimePlan:
    """Predicted seconds of training, validation and (DPO, precomputed) the reference pass.

    Args:
        peak_flops: one device's dense bf16 peak, FLOP/s.
        mfu: the share of it achieved (see the module docstring).
        mean_tokens: tokens per row, overriding the dataset table.
        sft_adapter_params: weights of a frozen stacked adapter (DPO on 4-bit), which every token also meets.
    """
    if not 0 < mfu <= 1:
        raise PlanError(f"--mfu {mfu}: a share of the peak, between 0 and 1 (e.g. 0.4).")
    stats = token_stats(settings, mean_tokens)
    prompt = min(stats.prompt, settings.max_prompt_length if settings.stage != "sft" else stats.prompt)
    row_tokens = min(prompt + stats.response, settings.max_length)
    rho = (row_tokens - prompt) / row_tokens
    train_rows, val_rows = split_rows(settings, stats)
    rows_per = settings.rows_per_example
    train_batches = math.ceil(train_rows / (settings.batch_size * settings.devices))
    validations = validations_per_run(settings, train_batches)

    lora = arch.lora_params(settings.lora) if settings.lora is not None else 0
    head = arch.hidden if settings.stage == "reward" else arch.head_params
    attention = 2 * arch.layers * arch.q_width * row_tokens
    frozen_lora = lora + sft_adapter_params
    forward = 2 * arch.body_linear_params + 2 * rho * head + attention + 2 * frozen_lora
    if settings.lora is None:
        step = 3 * forward
    else:
        step = forward + (2 * arch.body_linear_params + 2 * rho * head + 2 * attention + 2 * frozen_lora) + 2 * lora
    if settings.gradient_checkpointing:  # one more forward of the checkpointed layers
        share = settings.checkpointed_layers(arch.layers) / arch.layers
        step += share * (2 * arch.body_linear_params + attention + 2 * frozen_lora)
    live_reference = settings.stage == "dpo" and settings.reference in ("separate", "adapter")
    if live_reference:
        step += forward

    rate = mfu * peak_flops * settings.devices
    train_tokens = train_rows * rows_per * row_tokens * settings.max_epochs
    val_tokens = val_rows * rows_per * row_tokens * validations
    stages = [
        StageTime("training", train_tokens, train_tokens * step, train_tokens * step / rate),
        _forward_stage("validation", val_tokens, forward * (2 if live_reference else 1), rate),
    ]
    if settings.stage == "dpo" and settings.reference == "precomputed":
        once = (train_rows + val_rows) * rows_per * row_tokens
        stages.append(_forward_stage("reference pass (precomputed, once)", once, forward, rate))
    return TimePlan(
        stages, train_rows, val_rows, row_tokens, rho, validations, mfu, peak_flops, settings.devices, stats.source
    )


def _forward_stage(name: str, tokens: float, flops_per_token: float, rate: float) -> StageTime:
    return StageTime(name, tokens, tokens * flops_per_token, tokens * flops_per_token / rate)
