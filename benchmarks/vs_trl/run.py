"""The command: arguments, the shared set-up, each case's processes in lock-step, the table and the result file."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from argparse import SUPPRESS
from pathlib import Path

from jsonargparse import ArgumentParser, Namespace

import benchmarks.vs_trl as vs_trl
from benchmarks.vs_trl import REPO
from benchmarks.vs_trl.cases import CASES, DEFAULT_CASES, IMPL_ENV, LEVER_CASES, TASK
from benchmarks.vs_trl.flops import matmul_peak_gflops
from benchmarks.vs_trl.held_out import initial_held_out_losses, reference_eval_logps
from benchmarks.vs_trl.protocol import QUIET_CORES, QuietWait, read_line
from benchmarks.vs_trl.same_order import agreement, agreement_text, write_trl_order
from benchmarks.vs_trl.table import (
    device_name,
    precision_check,
    print_repeat_table,
    print_table,
    repeat_summary,
    summarise,
)
from benchmarks.vs_trl.worker import worker
from benchmarks.vs_trl.workload import WORKLOADS, build_workdir, lora_parameter_count

RESULTS = REPO / "benchmarks" / "results"
ENTRY_POINT = REPO / "benchmarks" / "bench_vs_trl.py"
"""The script every worker process runs, with ``--worker SPEC``."""
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def run_case(
    case: str, impls: list[str], setup: dict, args: Namespace, workdir: Path, waiting: QuietWait, repeat: int = 0
) -> list[dict]:
    """Start one process per implementation, then step them in turn; return their results."""
    task, lora = TASK[case]
    total_steps = args.warmup_steps + (args.precision_steps if case == "precision" else args.steps)
    mean_row = setup["mean_sft_row_tokens"]
    processes = {}
    for impl in impls:
        spec = {
            "case": case,
            "impl": impl,
            "repeat": repeat,
            "task": task,
            "lora": lora,
            "workdir": str(workdir),
            "files": setup["files"],
            "seed": args.seed,
            "threads": args.threads,
            "lr": learning_rate(args, setup, task, lora),
            "batch_size": args.batch_size if task == "sft" else args.dpo_batch_size,
            "packing_batch_size": max(1, round(args.batch_size * mean_row / args.max_length)),
            "max_length": args.max_length,
            "precision": args.resolved_precision,
            "total_steps": total_steps,
            "reference_eval_logps": setup.get("reference_eval_logps"),
            "result_path": str(workdir / f"result-{case}-{impl}.json"),
        }
        spec_path = workdir / f"spec-{case}-{impl}.json"
        spec_path.write_text(json.dumps(spec))
        log_path = workdir / f"log-{case}-{impl}.txt"
        processes[impl] = (
            subprocess.Popen(
                [sys.executable, str(ENTRY_POINT), "--worker", str(spec_path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_path.open("w"),
                text=True,
                cwd=REPO,
                env={**os.environ, **IMPL_ENV.get(impl, {})},
            ),
            log_path,
        )
    try:
        # Set-up one process at a time (so the reference pass is timed alone), then lock-step training.
        for impl, (process, log_path) in processes.items():
            process.stdin.write("start\n")
            process.stdin.flush()
            read_line(process, "ready", f"{case}/{impl}", log_path)
        for step in range(total_steps):
            for impl, (process, log_path) in processes.items():
                if step:
                    read_line(process, "ready", f"{case}/{impl}", log_path)
                if step >= args.warmup_steps:
                    waiting.wait()
                process.stdin.write("go\n")
                process.stdin.flush()
                read_line(process, "done", f"{case}/{impl}", log_path)
            print(f"  {case}: step {step + 1}/{total_steps}", end="\r", flush=True)
        print()
        # One at a time: a worker's teardown and held-out loss must not overlap another one's timed step.
        for impl, (process, log_path) in processes.items():
            process.stdin.write("release\n")
            process.stdin.flush()
            read_line(process, "finished", f"{case}/{impl}", log_path)
            process.wait(timeout=600)
    finally:
        for process, _ in processes.values():
            if process.poll() is None:
                process.kill()
    return [json.loads((workdir / f"result-{case}-{impl}.json").read_text()) for impl in impls]


DEFAULT_DECODER_PARAMETERS = 24.1e6
"""The decoder weights of the default model (hidden 1024, 2 layers): the size the learning-rate options are for."""


def learning_rate(args: Namespace, setup: dict, task: str, lora: bool) -> float:
    """The option's rate for LoRA, a tenth for full fine-tuning, and for a larger decoder than the default's that
    times ``sqrt(default / this size)``: at 117M parameters the default's DPO rate made the held-out loss of both
    sides rise from 0.69 to 1.7-2.4 in 5 steps (2026-12-02)."""
    rate = (args.sft_lr if task == "sft" else args.dpo_lr) * (1.0 if lora else 0.1)
    return rate * min(1.0, DEFAULT_DECODER_PARAMETERS / setup["decoder_parameters"]) ** 0.5


def parse_args(argv: list[str] | None) -> Namespace:
    parser = ArgumentParser(description=vs_trl.__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES, choices=[*CASES, *LEVER_CASES])
    # Mistral's shape in small: head size 128, 4 query heads per key/value head; wide enough for the matmuls
    # to dominate as they do at 7B (a narrower model spends relatively more time in attention and casts).
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=8, help="SFT rows per step")
    parser.add_argument("--dpo-batch-size", type=int, default=4, help="preference pairs per step")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument(
        "--workload",
        default="realistic",
        choices=list(WORKLOADS),
        help="how long the generated prompts and responses are: "
        + "; ".join(f"{name}: {text}" for name, text in WORKLOADS.items()),
    )
    parser.add_argument("--min-text-tokens", type=int, default=16, help="log_uniform's shortest text")
    parser.add_argument("--max-text-tokens", type=int, default=400, help="log_uniform's longest text")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of every case, each in fresh processes; the table gives the spread"
    )
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per case")
    parser.add_argument("--precision-steps", type=int, default=8, help="steps of the bf16-vs-fp32 loss check")
    parser.add_argument("--eval-rows", type=int, default=16)
    rates = "LoRA at the default size; full fine-tuning uses a tenth, a larger model less (learning_rate)"
    parser.add_argument("--sft-lr", type=float, default=1e-3, help=rates)
    parser.add_argument("--dpo-lr", type=float, default=1e-4, help=rates)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--precision", default="auto", help="auto (the project's rule: bf16-mixed only where bf16 is native) or a name"
    )
    parser.add_argument("--quiet-wait", type=float, default=10.0, help="most seconds to wait for idle CPUs a step")
    parser.add_argument("--quiet-budget", type=float, default=240.0, help="most seconds of such waiting in all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default results/<date>-<device>.json)")
    parser.add_argument("--keep-workdir", action="store_true")
    parser.add_argument("--worker", default=None, help=SUPPRESS)
    return parser.parse_args(argv)


def shared_setup(workdir: Path, args: Namespace) -> dict:
    """What every case shares, built once in the parent: the model and data (``build_workdir``), the SFT rows'
    token lengths, the LoRA parameter count, the held-out DPO reference log-probs and the losses before training."""
    from datamodules.instruction import tokenize_instruction
    from datamodules.tokenizer import load_tokenizer

    setup = build_workdir(workdir, args)
    tokenizer = load_tokenizer(str(workdir / "base"))
    sft_rows = [json.loads(line) for line in Path(setup["files"]["sft"]).read_text().splitlines()]
    row_lengths = [
        tokenize_instruction({**r, "_row": i, "_source": ""}, tokenizer, "alpaca", args.max_length)["length"]
        for i, r in enumerate(sft_rows)
    ]
    setup["mean_sft_row_tokens"] = sum(row_lengths) / len(row_lengths)
    setup["sft_row_tokens_min_max"] = [min(row_lengths), max(row_lengths)]
    setup["lora_parameters"] = lora_parameter_count(workdir, setup)
    if any(TASK[c][0] == "dpo" for c in args.cases):
        setup["reference_eval_logps"] = reference_eval_logps(workdir, args, setup["files"])
    setup["initial_held_out_loss"] = initial_held_out_losses(workdir, args, setup)
    for case in args.cases:
        if case.endswith("_same_order"):
            task = TASK[case][0]
            spec = {
                "task": task,
                "files": setup["files"],
                "workdir": str(workdir),
                "max_length": args.max_length,
                "batch_size": args.batch_size if task == "sft" else args.dpo_batch_size,
                "seed": args.seed,
            }
            name = "trl_sft_same_order" if task == "sft" else "trl_prefs_same_order"
            setup["files"][name] = write_trl_order(workdir, spec)
    return setup


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    from common.precision import announce, detect_hardware, resolve_precision

    # One precision for both sides, by the project's rule: timing emulated bf16 would measure the emulation.
    choice = resolve_precision(args.precision, detect_hardware("cpu"))
    announce(choice, "bench")
    args.resolved_precision = choice.precision
    if choice.precision != "bf16-mixed" and "precision" in args.cases:
        print("[bench] skipping the 'precision' case (bf16-mixed against fp32): this run does not compute in bf16")
        args.cases = [case for case in args.cases if case != "precision"]
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="bench-vs-trl-"))
    try:
        import torch
        import transformers
        import trl

        setup = shared_setup(workdir, args)
        waiting = QuietWait(args.quiet_wait, args.quiet_budget)
        waiting.wait()
        peak = matmul_peak_gflops(args.threads, args.resolved_precision)
        print(
            f"model: {setup['parameters'] / 1e6:.1f}M parameters ({setup['decoder_parameters'] / 1e6:.1f}M decoder), "
            f"hidden {args.hidden}, {args.layers} layers, vocabulary {setup['vocab_size']}; "
            f"SFT rows {setup['sft_row_tokens_min_max'][0]}-{setup['sft_row_tokens_min_max'][1]} tokens "
            f"(mean {setup['mean_sft_row_tokens']:.0f}); {choice.compute_dtype} matmul peak {peak:.0f} GFLOP/s"
        )
        means = ", ".join(f"{part} {tokens:.0f}" for part, tokens in setup["mean_pair_text_tokens"].items())
        print(f"workload {args.workload}: {WORKLOADS[args.workload]}; pairs' mean tokens: {means}")
        raw: dict[str, list] = {case: [] for case in args.cases}
        case_info: dict[str, list] = {case: [] for case in args.cases}
        all_cases = {**CASES, **LEVER_CASES}
        # Repeat-major: a drift of the machine over the run spreads over every case instead of one.
        for repeat in range(args.repeats):
            for case in args.cases:
                waiting.wait()
                peak = max(peak, matmul_peak_gflops(args.threads, args.resolved_precision))
                case_start, load_before = time.perf_counter(), os.getloadavg()[0]
                if args.repeats > 1:
                    print(f"repeat {repeat + 1}/{args.repeats}")
                raw[case].append(run_case(case, all_cases[case], setup, args, workdir, waiting, repeat))
                wall = time.perf_counter() - case_start
                case_info[case].append({"load_average_before": load_before, "case_wall_s": wall})
        waiting.wait()
        peak = max(peak, matmul_peak_gflops(args.threads, args.resolved_precision))
        rows = [
            {**row, **case_info[case][repeat], "repeat": repeat, "workload": args.workload}
            for repeat in range(args.repeats)
            for case in args.cases
            for row in summarise(raw[case][repeat], case, setup, args, peak)
        ]
        first = [row for row in rows if row["repeat"] == 0]
        precision = precision_check(first)
        same_training = agreement(first, args.resolved_precision)
        print(f"\nworkload {args.workload}, repeat 1 of {args.repeats}:")
        table = print_table(first)
        spread = repeat_summary(rows)
        print(f"\nacross {args.repeats} repeats (median, range), workload {args.workload}:")
        spread_table = print_repeat_table(spread)
        print(
            "held-out loss before training: "
            + ", ".join(f"{task} {loss:.4f}" for task, loss in setup["initial_held_out_loss"].items())
        )
        if precision:
            print(
                f"\nbf16-mixed vs fp32 (ours, SFT full, {len(precision['bf16'])} steps): max |loss difference| "
                f"{precision['max_abs_diff']:.4f} (largest relative {precision['max_rel_diff']:.2%})"
            )
        if same_training:
            print("\n" + agreement_text(same_training))
        wall = time.perf_counter() - started
        print(
            f"\nwall time {wall / 60:.1f} min, of which {waiting.waited:.0f} s waiting for idle CPUs; "
            f"load average {os.getloadavg()}"
        )
        date = datetime.date.today().isoformat()
        device = device_name()
        out = args.out or RESULTS / f"{date}-{device.replace(' ', '-').lower()}-{args.workload}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {
                    "date": date,
                    "device": device,
                    "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "trl": trl.__version__,
                    "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "model": {k: v for k, v in setup.items() if k not in ("files", "reference_eval_logps")},
                    "matmul_peak_gflops": peak,
                    "precision": str(choice),
                    "rows": rows,
                    "precision_check": precision,
                    "same_training_check": same_training,
                    "table": table,
                    "workload": args.workload,
                    "repeats": spread,
                    "repeat_table": spread_table,
                    "wall_s": wall,
                    "quiet_wait_s": waiting.waited,
                    "quiet_cores_threshold": QUIET_CORES,
                    "raw": raw,
                },
                indent=1,
            )
        )
        print(f"wrote {out}")
    finally:
        if args.keep_workdir:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
