"""How the report writes numbers and names: table cells, intervals, Markdown tables and the findings' metrics.

Shared by :mod:`reporting.report` and the sections it is made of (:mod:`reporting.methods`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from evaluation.benchmark_stats import BENCHMARK_PREFIX

BENCHMARK_NAMES = {
    "ifeval": "IFEval (prompt-level strict)",
    "gsm8k": "GSM8K (exact match, strict)",
    "truthfulqa_mc2": "TruthfulQA MC2 (probability on the true answers)",
    "mmlu": "MMLU (accuracy, items pooled)",
    "mmlu/subject_mean": "MMLU (mean of the subjects' accuracies)",
    "arc_challenge": "ARC-Challenge (normalised accuracy)",
    "hellaswag": "HellaSwag (normalised accuracy)",
    "humaneval_sandboxed": "HumanEval (pass@1, executed)",
    "xstest/unsafe_refused": "XSTest: refused unsafe",
    "xstest/safe_complied": "XSTest: answered safe",
    "alpaca_eval/judge_win_rate": "AlpacaEval: the judge's win rate, minus 50 % (ties count half)",
    "alpaca_eval/mean_reward": "AlpacaEval: the judge's mean reward",
}
"""A public benchmark as the report names it: the benchmark and the metric the study's config tests it by."""
METRIC_NAMES = {
    "preference_accuracy": ("held-out preference accuracy", "points"),
    "mean_margin": ("mean log-prob margin", "nats"),
    "checked_score": ("the checked score", "points"),
    "judge_win_rate": ("the judge's win rate, minus 50 % (ties count half)", "points"),
    "mean_reward": ("the judge's mean reward", "reward"),
    "checked_score_targeted": ("the checked score of the targeted categories", "points"),
    "judge_win_rate_targeted": ("the judge's win rate on the targeted categories, minus 50 %", "points"),
    **{
        BENCHMARK_PREFIX + bench: (name, "reward" if bench.endswith("mean_reward") else "points")
        for bench, name in BENCHMARK_NAMES.items()
    },
}
"""A finding's metric as the report names it, and the unit of its difference (points: rates x 100)."""


def fmt(value: float | None, kind: str = "float") -> str:
    """A table cell: percentages for rates, 2-3 significant decimals otherwise, '-' for nothing."""
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "int":
        return f"{value:.0f}"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table, first column left-aligned, the rest right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|" + ":---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def metric_name(metric: str) -> tuple[str, float, str]:
    """``(name, scale, unit)`` of a finding's metric: its difference times ``scale`` is in ``unit``.

    A benchmark the report does not know by name is ``benchmark <name>`` in points: every benchmark outcome
    the engine tests is a pass rate or a score in [0, 1]."""
    if metric not in METRIC_NAMES and metric.startswith(BENCHMARK_PREFIX):
        return f"benchmark {metric.removeprefix(BENCHMARK_PREFIX)}", 100.0, "points"
    name, unit = METRIC_NAMES.get(metric, (metric.replace("_", " "), ""))
    return name, 100.0 if unit == "points" else 1.0, unit


def is_benchmark(finding: dict) -> bool:
    """Whether a finding is a public benchmark's (reported in its own section) rather than the study's own."""
    return finding["metric"].startswith(BENCHMARK_PREFIX)


def decimals(unit: str, values: Sequence[float]) -> int:
    """Decimals that show a number in ``unit``: one for points; otherwise two significant digits of the
    largest magnitude among ``values`` (one to four decimals; pass an interval's width to show what it
    resolves), so that a reward difference of 0.04 is not printed as +0.0 and a margin of 3.9 nats stays +3.9."""
    largest = max((abs(value) for value in values), default=0.0)
    if unit == "points" or largest == 0 or not math.isfinite(largest):
        return 1
    return max(1, min(4, 1 - math.floor(math.log10(largest))))


def interval_text(interval: Sequence[float] | None, kind: str) -> str:
    """`` (low to high)`` in the metric's format, or nothing."""
    return f" ({fmt(interval[0], kind)} to {fmt(interval[1], kind)})" if interval else ""
