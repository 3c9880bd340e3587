"""``python -m planner plan``: predicted peak memory and time of training configs, offline.

Usage::

    python -m planner plan --config configs/dpo.yaml --set model.init_args.load.load_in_4bit=true --gpu-memory-gb 24
    python -m planner plan --config configs/sft.yaml --config configs/dpo.yaml --gpu H100 --mfu 0.4
    python -m planner plan --config configs/sft.yaml --json

Several ``--config`` plan the stages one after the other and add up their time (the whole study).
"""

from __future__ import annotations

import json
import sys

from jsonargparse import ArgumentParser, Namespace

from planner.devices import GPU_SPECS, gpu, this_cpu
from planner.memory import plan_memory
from planner.report import as_dict, as_text, hours
from planner.settings import PlanError, load_settings
from planner.shapes import resolve_model
from planner.timing import plan_time

DEFAULT_MFU = 0.4


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m planner", description=__doc__.split("\n\n")[0])
    plan = ArgumentParser(description="peak memory and time of training configs")
    plan.add_argument("--config", action="append", required=True, help="a training YAML (repeat: stages in order)")
    plan.add_argument("--model-config", help="the model's config.json, when the config's model cannot be followed")
    plan.add_argument("--gpu", choices=sorted(GPU_SPECS), default="H100", help="the GPU (SXM; dense bf16 peak)")
    plan.add_argument("--cpu", action="store_true", help="plan for this machine's CPU and RAM (memory only)")
    plan.add_argument("--mfu", type=float, default=DEFAULT_MFU, help="share of the dense bf16 peak achieved")
    plan.add_argument("--gpu-memory-gb", type=float, help="memory to fit in, GB (default: the GPU's)")
    plan.add_argument("--mean-tokens", type=float, help="tokens per row, for data without known statistics")
    plan.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (dotted, YAML value)"
    )
    plan.add_argument("--json", action="store_true", help="print a machine-readable dict")
    parser.add_subcommands(required=True).add_subcommand("plan", plan, help="peak memory and time of training configs")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv).plan  # the one subcommand
    try:
        plans = [plan_one(config, args) for config in args.config]
    except PlanError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    total = sum(time.seconds for *_, time in plans if time is not None)
    if args.json:
        dicts = [as_dict(*plan) for plan in plans]
        print(json.dumps(dicts[0] if len(dicts) == 1 else {"runs": dicts, "total_seconds": total}, indent=2))
        return 0
    print("\n\n".join(as_text(*plan) for plan in plans))
    if len(plans) > 1 and not args.cpu:
        print(f"\nall {len(plans)} stages: {hours(total)} on one {plans[0][2].device.name} at MFU {args.mfu:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
