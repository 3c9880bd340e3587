"""The result rows of a case (throughput on quiet steps, memory, losses, ratios), the table, the bf16 check."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
from pathlib import Path

from jsonargparse import Namespace

from benchmarks.vs_trl.cases import TASK
from benchmarks.vs_trl.flops import throughput
from benchmarks.vs_trl.protocol import QUIET_CORES

MIN_QUIET_STEPS = 3
"""Throughput is read from the quiet steps when every implementation of a case has at least this many."""


def summarise(results: list[dict], case: str, setup: dict, args: Namespace, peak: float) -> list[dict]:
    """Per implementation: throughput over the quiet timed steps when every implementation of the case has
    at least ``MIN_QUIET_STEPS`` of them, else over all timed steps; memory; losses; ratios to the first."""
    task, lora = TASK[case]
    stats = []
    for result in results:
        timed = chosen_steps(result, args.warmup_steps, quiet_only=False)
        quiet = chosen_steps(result, args.warmup_steps, quiet_only=True)
        stats.append(
            {
                "all": throughput(result, timed, setup, task, lora, peak),
                "quiet": throughput(result, quiet, setup, task, lora, peak) if len(quiet) >= MIN_QUIET_STEPS else None,
            }
        )
    basis = "quiet" if all(s["quiet"] for s in stats) else "all"
    rows = []
    for result, stat in zip(results, stats, strict=True):
        chosen = stat[basis]
        row = {
            "case": case,
            "impl": result["impl"],
            "basis": basis,
            "tokens_per_s": chosen["tokens_per_s"],
            "s_per_step": chosen["s_per_step"],
            "mfu": chosen["mfu"],
            "timed_steps": stat["all"]["steps"],
            "quiet_steps": stat["quiet"]["steps"] if stat["quiet"] else 0,
            "tokens_per_s_all_steps": stat["all"]["tokens_per_s"],
            "tokens_per_s_quiet_steps": stat["quiet"]["tokens_per_s"] if stat["quiet"] else None,
            "tokens_per_step": stat["all"]["tokens"] / stat["all"]["steps"],
            "peak_rss_mib": result["peak_rss_bytes"] / 2**20,
            "rss_increase_mib": (result["peak_rss_bytes"] - result["baseline_rss_bytes"]) / 2**20,
            "final_train_loss": result["losses"][-1] if result["losses"] else float("nan"),
            "held_out_loss": result["held_out_loss"],
            "losses": result["losses"],
            "threads_in_training": result.get("threads_in_training"),
            "dataset_tokens": result.get("dataset_tokens"),
        }
        reference = reference_share(result, chosen_steps(result, args.warmup_steps, basis == "quiet"))
        if reference is not None:
            row["reference_share"] = reference
        if "reference_pass_s" in result:
            # One epoch over exactly these pairs: each pair carries its share of the one-off pass.
            share = result["reference_pass_s"] * chosen["tokens"] / sum(result["step_tokens"])
            row["reference_pass_s"] = result["reference_pass_s"]
            row["reference_pass_others_cores"] = result.get("reference_pass_others_cores")
            row["amortised_tokens_per_s"] = chosen["tokens"] / (chosen["seconds"] + share)
        rows.append(row)
    first = rows[0]
    for row in rows:
        row["tokens_per_s_ratio"] = row["tokens_per_s"] / first["tokens_per_s"]
        row["tokens_per_s_all_steps_ratio"] = row["tokens_per_s_all_steps"] / first["tokens_per_s_all_steps"]
        row["peak_rss_ratio"] = row["peak_rss_mib"] / first["peak_rss_mib"]
        row["rss_increase_ratio"] = row["rss_increase_mib"] / first["rss_increase_mib"]
    add_matched_ratios(rows)
    add_paired_speed_intervals(rows, results, args.warmup_steps, basis == "quiet")
    return rows


def chosen_steps(result: dict, warmup_steps: int, quiet_only: bool) -> list[int]:
    """The timed steps the row's throughput reads: all of them, or the quiet ones."""
    others = result.get("step_others_cores") or [0.0] * len(result["step_seconds"])
    timed = range(warmup_steps, len(result["step_seconds"]))
    return [i for i in timed if not quiet_only or others[i] < QUIET_CORES]


def reference_share(result: dict, steps: list[int]) -> float | None:
    """A live reference's cost: its forwards' seconds over the rest of those steps (the policy's forward and
    backward, the optimiser step), ``sum ref / sum (step - ref)``; ``None`` without a timed reference."""
    seconds = result.get("step_reference_seconds")
    if not seconds or not steps:
        return None
    reference = sum(seconds[i] for i in steps)
    return reference / (sum(result["step_seconds"][i] for i in steps) - reference)


def add_paired_speed_intervals(rows: list[dict], results: list[dict], warmup_steps: int, quiet_only: bool) -> None:
    """Where an implementation trained the very batches of the case's first (the lever cases, the same-order
    cases): its speed ratio to the first with a 95 % interval and a p-value, the timed steps as paired items.

    The ratio is ``sum(first's step times) / sum(its step times)`` (the same tokens on both sides), its interval
    the percentile bootstrap over steps and its p the sign-flip test of the per-step time differences
    (``evaluation.statistics``). Steps where either side had a busy neighbour are left out when the table reads
    quiet steps.
    """
    from evaluation.statistics import bootstrap_ratio_interval, sign_flip_p

    first = results[0]
    for row, result in zip(rows[1:], results[1:], strict=True):
        steps = range(warmup_steps, len(first["step_seconds"]))
        if result["step_tokens"][warmup_steps:] != first["step_tokens"][warmup_steps:]:
            continue
        if quiet_only:
            busy = [first.get("step_others_cores"), result.get("step_others_cores")]
            steps = [i for i in steps if all(cores is None or cores[i] < QUIET_CORES for cores in busy)]
        if len(steps) < MIN_QUIET_STEPS:
            continue
        theirs = [first["step_seconds"][i] for i in steps]
        ours = [result["step_seconds"][i] for i in steps]
        row["paired_steps"] = len(steps)
        row["paired_speed_ratio"] = sum(theirs) / sum(ours)
        row["paired_speed_ci95"] = list(bootstrap_ratio_interval(theirs, ours))
        row["paired_speed_p"] = sign_flip_p([a - b for a, b in zip(theirs, ours, strict=True)])


def add_matched_ratios(rows: list[dict]) -> None:
    """Each of our rows against TRL's default at the same checkpointing setting (``trl_gc`` for ``ours_gc*``,
    ``trl`` otherwise), where the case has that row: the targets compare matched settings."""
    by_impl = {row["impl"]: row for row in rows}
    for row in rows:
        matched = by_impl.get("trl_gc" if "_gc" in row["impl"] else "trl")
        if row["impl"].startswith("trl") or matched is None:
            continue
        row["matched_trl"] = matched["impl"]
        row["speed_vs_matched_trl"] = row["tokens_per_s"] / matched["tokens_per_s"]
        if "amortised_tokens_per_s" in row:
            row["amortised_speed_vs_matched_trl"] = row["amortised_tokens_per_s"] / matched["tokens_per_s"]
        row["peak_rss_vs_matched_trl"] = row["peak_rss_mib"] / matched["peak_rss_mib"]


def print_table(rows: list[dict]) -> str:
    header = (
        "| case | impl | tokens/s | x first | s/step | all steps: tokens/s (x first) | quiet steps "
        "| peak RSS MiB (x first) | RSS over imports MiB (x first) | vs TRL matched: speed (charged), RSS "
        "| MFU | final train loss | held-out loss |"
    )
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for r in rows:
        tps = f"{r['tokens_per_s']:.0f}"
        if "amortised_tokens_per_s" in r:
            tps += f" ({r['amortised_tokens_per_s']:.0f} amortised over a {r['reference_pass_s']:.1f} s reference pass)"
        if "reference_share" in r:
            tps += f" (reference forward {r['reference_share']:.2f}x the rest of the step)"
        lines.append(
            f"| {r['case']} | {r['impl']} | {tps} | {ratio_cell(r)} | {r['s_per_step']:.2f} "
            f"| {r['tokens_per_s_all_steps']:.0f} ({r['tokens_per_s_all_steps_ratio']:.2f}) "
            f"| {r['quiet_steps']}/{r['timed_steps']} | {r['peak_rss_mib']:.0f} ({r['peak_rss_ratio']:.2f}) "
            f"| {r['rss_increase_mib']:.0f} ({r['rss_increase_ratio']:.2f}) | {matched_cell(r)} "
            f"| {100 * r['mfu']:.0f}% | {r['final_train_loss']:.4f} | {r['held_out_loss']:.4f} |"
        )
    table = "\n".join(lines)
    print(table)
    return table


SPREAD_KEYS = (
    "tokens_per_s",
    "speed_vs_matched_trl",
    "amortised_speed_vs_matched_trl",
    "peak_rss_vs_matched_trl",
    "reference_share",
)
"""What :func:`repeat_summary` gives the median and range of across repeats."""


def repeat_summary(rows: list[dict]) -> list[dict]:
    """Per case and implementation, across the repeats (each a fresh set of processes on the same data): the
    median, smallest and largest of each of :data:`SPREAD_KEYS` the rows have.

    Returns:
        ``[{"case", "impl", "repeats", key: {"median", "min", "max"}}]`` in the rows' order.
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["case"], row["impl"]), []).append(row)
    summary = []
    for (case, impl), group in groups.items():
        entry: dict = {"case": case, "impl": impl, "repeats": len(group)}
        for key in SPREAD_KEYS:
            values = [row[key] for row in group if key in row]
            if values:
                entry[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        summary.append(entry)
    return summary


def print_repeat_table(summary: list[dict]) -> str:
    """The medians and ranges of :func:`repeat_summary`, one row per case and implementation."""

    def cell(entry: dict, key: str, unit: str = "x", digits: int = 2) -> str:
        if key not in entry:
            return ""
        value = entry[key]
        return f"{value['median']:.{digits}f}{unit} ({value['min']:.{digits}f}-{value['max']:.{digits}f})"

    header = (
        "| case | impl | repeats | tokens/s median (range) | speed vs TRL matched | charged with the reference pass "
        "| peak RSS vs TRL matched | live reference forward / rest of the step |"
    )
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for entry in summary:
        lines.append(
            f"| {entry['case']} | {entry['impl']} | {entry['repeats']} | {cell(entry, 'tokens_per_s', '', 0)} "
            f"| {cell(entry, 'speed_vs_matched_trl')} | {cell(entry, 'amortised_speed_vs_matched_trl')} "
            f"| {cell(entry, 'peak_rss_vs_matched_trl')} | {cell(entry, 'reference_share')} |"
        )
    table = "\n".join(lines)
    print(table)
    return table


def ratio_cell(row: dict) -> str:
    """``1.08``, or with the same batches as the first row ``1.08 [1.03, 1.14] p 0.002`` (paired over steps)."""
    if "paired_speed_ci95" not in row:
        return f"{row['tokens_per_s_ratio']:.2f}"
    low, high = row["paired_speed_ci95"]
    return f"{row['tokens_per_s_ratio']:.2f} [{low:.2f}, {high:.2f}] p {row['paired_speed_p']:.3f}"


def matched_cell(row: dict) -> str:
    """``2.52x (2.01x), 0.70x vs trl_gc``, or empty for TRL's rows."""
    if "matched_trl" not in row:
        return ""
    speed = f"{row['speed_vs_matched_trl']:.2f}x"
    if "amortised_speed_vs_matched_trl" in row:
        speed += f" ({row['amortised_speed_vs_matched_trl']:.2f}x)"
    return f"{speed}, {row['peak_rss_vs_matched_trl']:.2f}x vs {row['matched_trl']}"


def device_name() -> str:
    cores = os.cpu_count()
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{cores}-core {model}"


def precision_check(rows: list[dict]) -> dict | None:
    by_impl = {r["impl"]: r for r in rows if r["case"] == "precision"}
    if {"ours", "ours_fp32"} - set(by_impl):
        return None
    bf16, fp32 = by_impl["ours"]["losses"], by_impl["ours_fp32"]["losses"]
    diffs = [abs(a - b) for a, b in zip(bf16, fp32, strict=True)]
    return {
        "bf16": bf16,
        "fp32": fp32,
        "max_abs_diff": max(diffs),
        "max_rel_diff": max(d / abs(b) for d, b in zip(diffs, fp32, strict=True)),
        "bf16_speedup": by_impl["ours"]["tokens_per_s"] / by_impl["ours_fp32"]["tokens_per_s"],
    }
