"""``python scripts/plan.py plan``: predicted peak memory and time of training configs, and the time of the
evaluation, offline.

Usage::

    python scripts/plan.py plan --config configs/dpo.yaml --set model.init_args.load.load_in_4bit=true \\
        --gpu-memory-gb 24
    python scripts/plan.py plan --config configs/sft.yaml --config configs/dpo.yaml --gpu H100 --mfu 0.4
    python scripts/plan.py plan --config configs/evaluate.yaml --gpu H100
    python scripts/plan.py plan --config configs/sft.yaml --json
    python scripts/plan.py plan --config configs/sft.yaml+configs/fsdp/sft.yaml

Several ``--config`` plan the stages one after the other and add up their time (the whole study: sft.yaml,
dpo.yaml, evaluate.yaml); ``A.yaml+B.yaml`` is one stage, B's keys merged onto A's (an overlay, as train.py
reads ``--config A.yaml --config B.yaml``). An evaluation config (no ``trainer:`` section) is timed per workload
and variant (:mod:`planner.evaluation`).
"""

from __future__ import annotations

import json
import sys

from jsonargparse import ArgumentParser, Namespace

from planner.devices import GPU_SPECS, gpu, this_cpu
from planner.evaluation import HOST_SECONDS_PER_LAYER, is_evaluation_config, parse_evaluation, plan_evaluation
from planner.memory import plan_memory
from planner.report import as_dict, as_text, evaluation_dict, evaluation_text, hours
from planner.settings import PlanError, apply_override, load_settings, read_yaml
from planner.shapes import resolve_model
from planner.timing import plan_time

DEFAULT_MFU = 0.4


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python scripts/plan.py", description=__doc__.split("\n\n")[0])
    plan = ArgumentParser(description="peak memory and time of training configs, time of evaluation configs")
    plan.add_argument(
        "--config",
        action="append",
        required=True,
        help="a training or evaluation YAML, or A.yaml+B.yaml (B merged onto A); repeat: stages in order",
    )
    plan.add_argument("--model-config", help="the model's config.json, when the config's model cannot be followed")
    plan.add_argument("--gpu", choices=sorted(GPU_SPECS), default="H100", help="the GPU (SXM; dense bf16 peak)")
    plan.add_argument("--cpu", action="store_true", help="plan for this machine's CPU and RAM (memory only)")
    plan.add_argument("--mfu", type=float, default=DEFAULT_MFU, help="share of the dense bf16 peak achieved")
    plan.add_argument("--gpu-memory-gb", type=float, help="memory to fit in, GB (default: the GPU's)")
    plan.add_argument("--mean-tokens", type=float, help="tokens per row, for data without known statistics")
    plan.add_argument(
        "--host-ms-per-layer",
        type=float,
        default=HOST_SECONDS_PER_LAYER * 1e3,
        help="evaluation: host time of one eager forward per decoder layer, ms (planner/evaluation.py)",
    )
    plan.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (dotted, YAML value)"
    )
    plan.add_argument("--json", action="store_true", help="print a machine-readable dict")
    parser.add_subcommands(required=True).add_subcommand("plan", plan, help="memory and time of the study's configs")
    return parser


def plan_one(config: str, args: Namespace):
    settings = load_settings(config, args.set)
    model = resolve_model(settings, args.model_config)
    device = this_cpu(args.gpu_memory_gb) if args.cpu else gpu(args.gpu, args.gpu_memory_gb)
    memory = plan_memory(model.architecture, settings, device, model.sft_adapter)
    time = None
    if device.peak_flops is not None:
        frozen = model.sft_adapter if settings.stacked_sft_adapter else None
        frozen_params = model.architecture.lora_params(frozen) if frozen is not None else 0
        time = plan_time(model.architecture, settings, device.peak_flops, args.mfu, args.mean_tokens, frozen_params)
    return settings, model, memory, time


def plan_config(config: str, args: Namespace) -> tuple[str, dict, float | None]:
    """``(text, dict, seconds)`` of one config: a training plan, or an evaluation's time (GPU only)."""
    raw = read_yaml(config)
    if not is_evaluation_config(raw):
        plan = plan_one(config, args)
        time = plan[3]
        return as_text(*plan), as_dict(*plan), time.seconds if time is not None else None
    for override in args.set:
        apply_override(raw, override)
    planned = parse_evaluation(raw, config)
    if args.cpu:
        text = f"plan: {config} (evaluation): its time is planned for a GPU (--gpu), not a CPU"
        return text, {"config": config, "stage": "evaluation", "total_seconds": None}, None
    device = gpu(args.gpu, args.gpu_memory_gb)
    plan = plan_evaluation(planned, device, args.mfu, args.model_config, args.host_ms_per_layer / 1e3)
    return evaluation_text(plan), evaluation_dict(plan), plan.seconds


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv).plan  # the one subcommand
    try:
        plans = [plan_config(config, args) for config in args.config]
    except PlanError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    total = sum(seconds for *_, seconds in plans if seconds is not None)
    if args.json:
        dicts = [plan_dict for _, plan_dict, _ in plans]
        print(json.dumps(dicts[0] if len(dicts) == 1 else {"runs": dicts, "total_seconds": total}, indent=2))
        return 0
    print("\n\n".join(text for text, *_ in plans))
    if len(plans) > 1 and not args.cpu:
        device = gpu(args.gpu, args.gpu_memory_gb).name
        print(f"\nall {len(plans)} stages: {hours(total)} on one {device} at MFU {args.mfu:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
