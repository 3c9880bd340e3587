"""The plan as text for a person, or as a dict for a script (``--json``)."""

from __future__ import annotations

from planner.evaluation import BANDWIDTH_EFFICIENCY, LORA_HOST_SHARE, EvaluationPlan
from planner.memory import Dtypes, MemoryPlan
from planner.settings import PlannedRun
from planner.shapes import ResolvedModel
from planner.timing import TimePlan

GB = 10**9


def gb(value: float) -> str:
    return f"{value / GB:7.2f} GB"


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def as_text(settings: PlannedRun, model: ResolvedModel, memory: MemoryPlan, time: TimePlan | None) -> str:
    arch, dtypes, batch = model.architecture, memory.dtypes, memory.batch
    lines = [
        f"plan: {settings.config_path} ({settings.stage}) on {memory.device.name}",
        f"model: {model.source}",
        f"  {arch.total_params / 1e9:.2f}B weights: {arch.layers} layers, hidden {arch.hidden}, MLP "
        f"{arch.intermediate}, {arch.heads} query / {arch.kv_heads} key-value heads of {arch.head_dim}, "
        f"vocabulary {arch.vocab}",
        f"precision: {dtypes.precision}; weights {_weights(settings, dtypes)}; {_training(settings)}",
        f"batch (worst case): {batch.rows} rows x {settings.max_length} tokens = {batch.tokens} tokens, "
        f"{batch.response_positions} response positions; gradient checkpointing "
        f"{'on' if settings.gradient_checkpointing else 'off'}",
        "",
        f"peak memory per device (at: {memory.peak_moment})",
    ]
    for name, value in {**memory.persistent, **memory.step}.items():
        lines.append(f"  {name:<40} {gb(value)}")
    for name, value in memory.overhead.items():
        lines.append(f"  {name + ' (overhead)':<40} {gb(value)}")
    lines.append(f"  {'total':<40} {gb(memory.peak_bytes)}")
    lines.append(
        f"  activations: {memory.activations_checkpointed / GB:.2f} GB with gradient checkpointing, "
        f"{memory.activations_full / GB:.2f} GB without"
    )
    lines.extend(f"  note: {note}" for note in memory.notes)
    verdict = "fits" if memory.fits else "does not fit"
    lines.append(f"{verdict} in {memory.device.memory_bytes / GB:g} GB")
    if time is not None:
        lines += ["", *time_lines(time)]
    return "\n".join(lines)


def time_lines(time: TimePlan) -> list[str]:
    lines = [
        f"time at MFU {time.mfu:.0%} of {time.peak_flops / 1e12:g} TFLOP/s dense bf16 x {time.devices} device(s):",
        f"  {time.train_rows} training rows, {time.val_rows} validation rows, {time.validations} validations; "
        f"{time.row_tokens:.0f} tokens per row ({time.response_share:.0%} response)",
    ]
    for stage in time.stages:
        lines.append(
            f"  {stage.name:<36} {stage.tokens / 1e6:8.2f} M tokens {stage.flops:9.3g} FLOP {hours(stage.seconds):>9}"
        )
    lines.append(f"  {'total':<36} {hours(time.seconds):>38}")
    lines.append(f"  mean tokens from: {time.source}")
    return lines


def as_dict(settings: PlannedRun, model: ResolvedModel, memory: MemoryPlan, time: TimePlan | None) -> dict:
    """The plan for scripts: bytes, the verdict, seconds per stage."""
    return {
        "config": str(settings.config_path),
        "stage": settings.stage,
        "device": memory.device.name,
        "model_source": model.source,
        "precision": memory.dtypes.precision.precision,
        "peak_bytes": memory.peak_bytes,
        "allocated_bytes": memory.allocated_bytes,
        "memory_bytes": memory.device.memory_bytes,
        "fits": memory.fits,
        "peak_moment": memory.peak_moment,
        "breakdown": {**memory.persistent, **memory.step},
        "overhead": memory.overhead,
        "activations_checkpointed_bytes": memory.activations_checkpointed,
        "activations_full_bytes": memory.activations_full,
        "batch_tokens": memory.batch.tokens,
        "response_positions": memory.batch.response_positions,
        "stage_seconds": {stage.name: stage.seconds for stage in time.stages} if time else {},
        "total_seconds": time.seconds if time else None,
        "tokens_per_row": time.row_tokens if time else None,
        "mfu": time.mfu if time else None,
    }


def _weights(settings: PlannedRun, dtypes: Dtypes) -> str:
    if settings.load_in_4bit:
        return f"4-bit NF4 (double quantisation), embeddings, head and norms in {dtypes.precision.compute_dtype}"
    return {4: "float32", 2: dtypes.precision.compute_dtype}[dtypes.base_bytes]


def _training(settings: PlannedRun) -> str:
    if settings.lora is None:
        return "full fine-tuning"
    lora = settings.lora
    extra = f"; reference: {settings.reference}" if settings.stage == "dpo" else ""
    return f"LoRA r={lora.r} on {', '.join(lora.target_modules)} (dropout {lora.dropout}){extra}"


def evaluation_text(plan: EvaluationPlan) -> str:
    """The evaluation plan: minutes per workload (rows) and variant (columns), their totals, the assumptions."""
    planned, device = plan.planned, plan.device
    variants = planned.variants
    weights = "4-bit NF4 projections" if planned.load_in_4bit else f"load.dtype {planned.dtype}"
    lines = [
        f"plan: {planned.config_path} (evaluation) on {device.name}",
        f"model: {plan.model_source}; {weights}",
        "variants: " + "; ".join(f"{name} ({plan.adapters[name]})" for name in variants),
    ]
    if plan.judge_source is not None:
        lines.append(f"judge: {plan.judge_source}")
    lines += ["", "evaluation time, minutes (every generation batch runs to its cap: an upper bound)"]
    header = f"  {'workload':<34} {'items':>6}  {'shape':<38}" + "".join(f"{name:>9}" for name in variants)
    lines.append(header + f"{'total':>9}")
    for row in plan.rows:
        shape = row.workload.shape() if row.workload.name != "judge" else f"batch {row.workload.batch_size}"
        cells = "".join(f"{row.seconds[name] / 60:9.1f}" for name in variants)
        lines.append(f"  {row.workload.name:<34} {row.workload.items:>6}  {shape:<38}{cells}{row.total / 60:9.1f}")
    totals = "".join(f"{plan.variant_seconds(name) / 60:9.1f}" for name in variants)
    lines.append(f"  {'total':<34} {'':>6}  {'':<38}{totals}{plan.seconds / 60:9.1f}  ({hours(plan.seconds)})")
    steps = ", ".join(
        f"{name} {cost.host_seconds * 1e3:.1f} ms" for name, cost in plan.costs.items() if name in variants
    )
    base = next(iter(plan.costs.values()))
    lines += [
        f"host time of one forward: {steps}; reading the weights once: {base.weight_bytes / base.bandwidth * 1e3:.1f} "
        "ms (a decode step takes the larger)",
        f"a forward pass: the largest of its FLOPs / ({plan.mfu:.0%} x {device.peak_flops / 1e12:g} TFLOP/s), its "
        f"bytes / ({BANDWIDTH_EFFICIENCY:.0%} x {device.memory_bandwidth / 1e12:g} TB/s) and the host's "
        f"{plan.host_seconds_per_layer * 1e3:g} ms per layer (+{LORA_HOST_SHARE:.0%} per LoRA projection); "
        "planner/evaluation.py",
        "not counted: loading the variants and the judge, tokenisation, lm-eval's bookkeeping; the vLLM backend "
        "(issue 24, item 6) does not exist yet and is not modelled",
    ]
    lines.extend(f"  note: {note}" for note in plan.notes)
    lines.append("sizes from:")
    lines.extend(f"  {row.workload.source}" for row in plan.rows)
    return "\n".join(lines)


def evaluation_dict(plan: EvaluationPlan) -> dict:
    """The evaluation plan for scripts: seconds per workload and variant."""
    return {
        "config": str(plan.planned.config_path),
        "stage": "evaluation",
        "device": plan.device.name,
        "model_source": plan.model_source,
        "judge_source": plan.judge_source,
        "variants": list(plan.planned.variants),
        "workload_seconds": {row.workload.name: row.seconds for row in plan.rows},
        "variant_seconds": {name: plan.variant_seconds(name) for name in plan.planned.variants},
        "total_seconds": plan.seconds,
        "mfu": plan.mfu,
        "host_seconds_per_layer": plan.host_seconds_per_layer,
        "notes": plan.notes,
    }
