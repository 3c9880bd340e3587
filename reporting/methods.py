"""The methods study's section of the report: every preference method trained from the same SFT model, side by
side, in one table shaped like the SimPO paper's (Meng et al. 2024, Table 4: method x metric), with intervals,
each method's verdict against SFT and against DPO (the paired tests, Holm-adjusted in the report's one family),
and what its training run cost."""

from __future__ import annotations

from typing import Any

from common.trees import dig
from reporting.formatting import fmt, interval_text, is_benchmark, markdown_table, metric_name

CORE = ("base", "sft", "sft_dpo")


def method_variants(results: dict) -> list[str]:
    """The methods study's variants (``sft_ipo``, ``sft_simpo``...) in the results, in the file's order."""
    return [name for name in results["meta"]["variants"] if name not in CORE]


def recipe(record: dict | None) -> str:
    """A run's loss list as one cell: ``sigmoid + 1 x sft, beta 1.0``."""
    if not record or not record.get("losses"):
        return "-"
    terms = []
    for entry in record["losses"]:
        weight = entry.get("weight", 1.0)
        terms.append(entry["name"] if weight in (None, 1, 1.0) else f"{weight:g} x {entry['name']}")
    beta = record.get("beta")
    return " + ".join(terms) + (f", beta {beta:g}" if beta is not None else "")


def cost(record: dict | None) -> tuple[str, str]:
    """``(training time, peak memory)`` cells from a run's recorded cost (``-``: not recorded)."""
    spent = (record or {}).get("cost") or {}
    seconds, rss, gpu = spent.get("fit_seconds"), spent.get("peak_rss_bytes"), spent.get("peak_gpu_bytes")
    memory = f"{gpu / 2**30:.1f} GiB GPU" if gpu else f"{rss / 2**30:.2f} GiB RSS" if rss else "-"
    return (f"{seconds:.0f} s" if seconds is not None else "-"), memory


def verdict(comparisons: list[dict], first: str, second: str) -> str:
    """What the paired tests of ``first`` against ``second`` found: the significant differences (Holm-adjusted
    over the report's whole family) with their size, and how many were not significant."""
    found = [f for f in comparisons if (f["first"], f["second"]) == (first, second) and not is_benchmark(f)]
    if not found:
        return "-"
    said = []
    for direction, sign in (("better", 1), ("worse", -1)):
        named = []
        for finding in found:
            if finding.get("significant") and sign * finding["difference"] > 0:
                name, scale, unit = metric_name(finding["metric"])
                named.append(
                    f"{name} {scale * finding['difference']:+.1f} {unit}".rstrip()
                    + f" (Holm p {finding['p_holm']:.2g})"
                )
        if named:
            said.append(f"{direction}: " + "; ".join(named))
    quiet = sum(not finding.get("significant") for finding in found)
    if not said:
        return f"not significant on any of {len(found)} tests"
    return ". ".join(said) + (f". Not significant on {quiet} more" if quiet else "")


def win_rate_cell(pairs: list[dict], first: str, second: str) -> tuple[str, str]:
    """``(win rate, length-controlled win rate)`` of ``first`` over ``second``, with intervals (``-``: not judged)."""
    for pair in pairs:
        if (pair["first"], pair["second"]) == (first, second):
            rate, controlled = pair["win_rate"], pair["length_controlled"]
            return (
                fmt(rate["rate"], "pct") + interval_text(rate["ci95"], "pct"),
                fmt(controlled["rate"], "pct") + interval_text(controlled["ci95"], "pct"),
            )
    return "-", "-"


def metric_cell(metrics: dict[str, Any], path: tuple[str, ...], interval: tuple[str, ...]) -> str:
    value = dig(metrics, *path)
    return "-" if value is None else fmt(value, "pct") + interval_text(dig(metrics, *interval), "pct")


def methods_section(results: dict) -> list[str]:
    """The "Methods side by side" section; empty when the results hold no method besides DPO."""
    methods = method_variants(results)
    if not methods:
        return []
    meta, per_model = results["meta"], results["metrics"]
    labels, training = meta["labels"], meta.get("training") or {}
    comparisons = results.get("comparisons", [])
    pairs = dig(results, "judge", "pairs") or []
    rows = []
    for name in [v for v in ("sft", "sft_dpo", *methods) if v in per_model]:
        win, controlled = win_rate_cell(pairs, name, "sft")
        seconds, memory = cost(training.get(name))
        rows.append(
            [
                labels[name],
                recipe(training.get(name)) if name != "sft" else "SFT (no preference step)",
                metric_cell(per_model[name], ("checked_score", "overall"), ("ci95", "checked_score")),
                metric_cell(per_model[name], ("preference", "accuracy"), ("ci95", "preference_accuracy")),
                win,
                controlled,
                verdict(comparisons, name, "sft") if name != "sft" else "-",
                verdict(comparisons, name, "sft_dpo") if name not in ("sft", "sft_dpo") else "-",
                seconds,
                memory,
            ]
        )
    header = [
        "Model",
        "losses",
        "checked score (95 % CI)",
        "preference accuracy (95 % CI)",
        "judge win rate vs SFT (95 % CI)",
        "length-controlled (95 % CI)",
        "vs SFT",
        "vs SFT+DPO",
        "training",
        "peak memory",
    ]
    return [
        "## Methods side by side",
        "",
        "Every preference method trained from the same SFT export on the same pairs (a `base+` method from the "
        "base model itself, with no SFT stage), each in its own run, and "
        "evaluated on the same prompts and pairs. The verdicts are the paired tests of the findings above "
        "(Holm-adjusted with all of them, one family): a method is better or worse than SFT or DPO only where "
        'that holds at adjusted p < 0.05; "not significant" is not "equal" (each finding above says how '
        "large a difference it could detect). Training time and peak memory are each run's own (from the "
        "trainer's setup to its export, the precomputed reference pass included; peak resident memory of the "
        "process on a CPU, peak allocated GPU memory on a GPU).",
        "",
        markdown_table(header, rows),
        "",
    ]
