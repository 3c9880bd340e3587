"""The report a person reads: ``report.md`` and its plots, from the results file and the training logs.

Reads ``<results_dir>/evaluation_results.json`` (:mod:`evaluation.results`) and the TensorBoard event files of
the SFT and DPO runs, and writes:

* ``<results_dir>/report.md`` (or any other path): the findings (paired differences with intervals, tests and
  the effect each could detect), the metric tables (base / SFT / SFT+DPO, overall and per category), the
  reward-model judge's mean rewards and win rates when a judge ran, the public benchmarks (scores, paired
  tests, lm-eval's protocol, the base model beside its published numbers) when they ran, the training curves,
  where everything came from and, given the results of several training seeds, the same metrics across those
  seeds;
* ``plots/*.png`` beside the report: per-category scores (and judge rewards) per model with 95 % intervals,
  the SFT losses, the DPO loss, ``rewards/accuracies`` and ``rewards/margins``.
"""

from __future__ import annotations

import os
import re
import statistics
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_text
from common.trees import dig
from evaluation.benchmark_stats import BENCHMARK_PREFIX, PASS_FAIL
from evaluation.findings import COMPARISONS
from evaluation.results import RESULTS_FILE, SIDE_BY_SIDE_FILE, categories_of, read_results
from reporting.formatting import (
    decimals,
    fmt,
    interval_text,
    is_benchmark,
    markdown_table,
    metric_name,
)
from reporting.headline import HEADLINE
from reporting.methods import methods_section
from reporting.plots import plot_categories, plot_curves
from reporting.published import compare_with_published
from reporting.seeds import across_seeds, seed_label
from reporting.training_logs import Curve, read_scalars

REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
# The categories whose SFT training answers are partly flawed on purpose (the tiny suite), i.e. the ones
# DPO's pairs can correct.
DEFAULT_TARGETED = ("instruction_following", "reasoning", "safety")
SFT_CURVES = ("train/loss", "val/loss")
DPO_CURVES = ("loss", "rewards/accuracies", "rewards/margins")
BASE_OF_PUBLISHED = "mistralai/Mistral-7B-v0.1"
"""The base model the published numbers of :mod:`reporting.published` were measured on."""
TINY_BENCHMARK = 30
"""Fewer items than this in a benchmark: a dry run's size, whose numbers say nothing about the models."""


def headline_table(results: dict) -> str:
    """Metrics (rows) by model (columns)."""
    variants, labels, per_model = results["meta"]["variants"], results["meta"]["labels"], results["metrics"]
    rows = []
    for headline in HEADLINE:
        values = [dig(per_model[name], *headline.path) for name in variants]
        if all(value is None for value in values):
            continue
        intervals = [dig(per_model[name], *headline.interval) if headline.interval else None for name in variants]
        cells = [
            fmt(value, headline.kind) + (interval_text(interval, headline.kind) if value is not None else "")
            for value, interval in zip(values, intervals, strict=True)
        ]
        rows.append([headline.label, *cells, headline.better])
    return markdown_table(["Metric (95 % CI)"] + [labels[name] for name in variants] + ["better"], rows)


def category_table(results: dict, path: tuple[str, ...], value: Callable[[Any], float | None], kind: str) -> str:
    """Categories (rows) by model (columns) of one per-category metric."""
    variants, labels = results["meta"]["variants"], results["meta"]["labels"]
    rows = []
    for category in categories_of(results, *path):
        cells = [fmt(value(dig(results["metrics"][name], *path, category)), kind) for name in variants]
        rows.append([category] + cells)
    return markdown_table(["Category"] + [labels[name] for name in variants], rows) if rows else ""


def finding_line(finding: dict, labels: dict[str, str]) -> str:
    """One paired comparison as the report states it: difference, 95 % interval, p, verdict, and the effect
    its test could detect (:func:`power_text`)."""
    name, scale, unit = metric_name(finding["metric"])
    difference = scale * finding["difference"]
    low, high = (scale * bound for bound in finding["ci95"])
    places = decimals(unit, [high - low] if high > low else [difference])
    verdict = "**significant**" if finding["significant"] else "not significant"
    if finding.get("categories"):
        name += f" ({', '.join(finding['categories'])})"
    return (
        f"- {labels[finding['first']]} vs {labels[finding['second']]} on {name}: "
        f"{difference:+.{places}f} {unit} (95 % CI {low:+.{places}f} to {high:+.{places}f}), "
        f"p = {finding['p']:.3g} ({finding['test']}, n = {finding['n']}; Holm-adjusted {finding['p_holm']:.3g}): "
        f"{verdict}{power_text(finding, scale, unit, places)}"
    )


def power_text(finding: dict, scale: float, unit: str, places: int) -> str:
    """``; detectable at 80 % power: ±MDE unit (discordance d %)`` from the finding's ``mde`` (and
    ``discordance``), in the difference's unit and decimals; nothing for a finding from a results file
    written before the power analysis (no ``mde`` key), which is not the same as none detectable."""
    if "mde" not in finding:
        return ""
    if finding["mde"] is None:
        return "; no difference detectable at this n"
    text = f"; detectable at 80 % power: ±{scale * finding['mde']:.{places}f}" + (f" {unit}" if unit else "")
    if finding.get("discordance") is not None:
        text += f" (discordance {100 * finding['discordance']:.0f} %)"
    return text


def power_summary(comparisons: list[dict], labels: dict[str, str]) -> str:
    """One sentence on how large an effect the study's question (SFT+DPO vs SFT) can detect: the range and
    median of its findings' MDEs per unit (points are comparable with each other; nats and rewards are not),
    and how many can detect nothing. Empty when the findings carry no MDE (an older results file)."""
    first, second = COMPARISONS[1]
    found = [
        f for f in comparisons if (f["first"], f["second"]) == (first, second) and "mde" in f and not is_benchmark(f)
    ]
    if not found:
        return ""
    by_unit: dict[str, list[tuple[str, float]]] = {}
    for finding in found:
        if finding["mde"] is not None:
            name, scale, unit = metric_name(finding["metric"])
            by_unit.setdefault(unit, []).append((name, scale * finding["mde"]))
    parts = [mde_range(unit, entries) for unit, entries in by_unit.items()]
    undetectable = sum(finding["mde"] is None for finding in found)
    nothing = f"{undetectable} of its {len(found)} findings can detect no difference at this n" if undetectable else ""
    detectable = f"needs a true difference of {', '.join(parts)}" if parts else ""
    return (
        f"What the study can detect: {labels.get(first, first)} vs {labels.get(second, second)}, at 80 % power "
        f"and alpha 0.05 before Holm, {'; '.join(p for p in (detectable, nothing) if p)}. A smaller true effect "
        "would most likely read as not significant."
    )


def mde_range(unit: str, entries: list[tuple[str, float]]) -> str:
    """The MDEs of findings in one unit: ``±x unit on <metric>`` for one, else the range and the median.

    Args:
        entries: ``(metric name, MDE in unit)`` per finding.
    """
    values = sorted(value for _, value in entries)
    places = decimals(unit, values)
    unit_text = f" {unit}" if unit else ""
    if len(values) == 1:
        return f"±{values[0]:.{places}f}{unit_text} on {entries[0][0]}"
    return (
        f"±{values[0]:.{places}f} to ±{values[-1]:.{places}f}{unit_text} (median "
        f"±{statistics.median(values):.{places}f}, {len(values)} findings)"
    )


def comparison_order(finding: dict) -> int:
    """Where a finding's pair of models stands in :data:`~evaluation.findings.COMPARISONS` (others last)."""
    pair = (finding["first"], finding["second"])
    return COMPARISONS.index(pair) if pair in COMPARISONS else len(COMPARISONS)


def findings(results: dict, targeted: tuple[str, ...]) -> list[str]:
    """The comparisons the study is about, each with its paired interval and test (``comparisons`` in the
    results file, the judge's among them), grouped by pair of models, then, for the categories the pairs
    target, the raw per-category differences."""
    per_model, labels = results["metrics"], results["meta"]["labels"]
    own = [finding for finding in results.get("comparisons", []) if not is_benchmark(finding)]
    ordered = sorted(own, key=comparison_order)  # stable: the file's order within a pair
    lines = [finding_line(finding, labels) for finding in ordered]

    def compare(what: str, better: str, worse: str, path: tuple[str, ...], kind: str = "pct") -> None:
        if better not in per_model or worse not in per_model:
            return
        high, low = dig(per_model[better], *path), dig(per_model[worse], *path)
        if high is None or low is None:
            return
        lines.append(f"- {labels[better]} vs {labels[worse]} on {what}: {fmt(high, kind)} vs {fmt(low, kind)}")

    if not lines:  # a results file written before the paired tests
        compare("the checked score", "sft", "base", ("checked_score", "overall"))
        compare("held-out preference accuracy", "sft_dpo", "sft", ("preference", "accuracy"))
    for category in targeted:
        compare(
            f"the checked score of {category} (untested)", "sft_dpo", "sft", ("checked_score", "per_category", category)
        )
        compare(
            f"preference accuracy on {category} pairs (untested)",
            "sft_dpo",
            "sft",
            ("preference", "per_category", category, "accuracy"),
        )
    return lines


def spread(mean: float, sd: float | None, kind: str) -> str:
    """``mean ± sd`` in the metric's format (a rate's sd in percentage points)."""
    if sd is None:
        return fmt(mean, kind)
    return f"{fmt(mean, kind)} ± {100 * sd:.1f} pts" if kind == "pct" else f"{fmt(mean, kind)} ± {fmt(sd, kind)}"


def seeds_section(results: dict, seed_results: Sequence[dict], seed_dirs: Sequence[str | Path]) -> list[str]:
    """The "Across training seeds" section: each headline metric's mean ± sd over the seeds beside this run's
    value and 95 % interval, then each finding's difference per seed and whether its sign holds on all."""
    labels = [seed_label(found) or Path(folder).name for found, folder in zip(seed_results, seed_dirs, strict=True)]
    summary = across_seeds(list(seed_results), labels)
    names = results["meta"]["labels"]
    rows = []
    for headline in HEADLINE:
        for name, spread_of in summary["metrics"].get(headline.key, {}).items():
            this_run = dig(results["metrics"].get(name), *headline.path)
            interval = dig(results["metrics"].get(name), *headline.interval) if headline.interval else None
            here = fmt(this_run, headline.kind)
            if this_run is not None and interval is not None:
                here += f" ({fmt(interval[0], headline.kind)} to {fmt(interval[1], headline.kind)})"
            per_seed = ", ".join(fmt(value, headline.kind) for value in spread_of["values"])
            rows.append(
                [
                    headline.label,
                    names.get(name, name),
                    spread(spread_of["mean"], spread_of["sd"], headline.kind),
                    per_seed,
                    here,
                ]
            )
    seeds = ",".join(summary["seeds"])
    lines = [
        "## Across training seeds",
        "",
        f"{len(seed_results)} runs that differ only in their training seed ({seeds}; "
        f"{', '.join(f'`{folder}`' for folder in seed_dirs)}). Mean ± sample standard deviation (n - 1) over the "
        "seeds measures the noise of training; the interval beside this report's run (95 %, Wilson for rates, "
        "bootstrap over the items for means) measures the noise of the held-out items.",
        "",
        markdown_table(["Metric", "Model", "mean ± sd over seeds", f"per seed ({seeds})", "this run (95 % CI)"], rows),
        "",
        "Each finding's paired difference on every seed:",
        "",
    ]
    for finding in sorted(summary["findings"], key=comparison_order):
        name, scale, unit = metric_name(finding["metric"])
        places = decimals(unit, [scale * d for d in finding["differences"] if d is not None])
        differences = ", ".join("-" if d is None else f"{scale * d:+.{places}f}" for d in finding["differences"])
        lines.append(
            f"- {names.get(finding['first'], finding['first'])} vs {names.get(finding['second'], finding['second'])} "
            f"on {name}: {differences} {unit} over seeds {seeds} — same direction on every seed: "
            f"{'yes' if finding['same_direction'] else 'no'}"
        )
    return lines + [""]


def source_text(provenance: dict | str) -> str:
    """A model or data source as :func:`common.provenance.source_record` records it (the judge's ``meta.judge.model``,
    a prompt set's ``read``): a Hub id with its revision and commit, or a local folder with the SHA-256 of its
    files."""
    if isinstance(provenance, str):
        return f"`{provenance}`"
    if "hub_id" in provenance:
        return f"`{provenance['hub_id']}` (revision `{provenance['revision']}`, commit `{provenance['commit']}`)"
    digest = provenance.get("sha256")
    return f"`{provenance.get('path')}`" + (f" (local folder, files SHA-256 `{digest[:16]}…`)" if digest else "")


def estimate(value: float, interval: Sequence[float] | None) -> str:
    """A mean and its interval with the same decimals (:func:`decimals`): ``0.25 (-0.25 to 0.75)``."""
    places = decimals("", [interval[1] - interval[0]] if interval and interval[1] > interval[0] else [value])
    bounds = f" ({interval[0]:.{places}f} to {interval[1]:.{places}f})" if interval else ""
    return f"{value:.{places}f}{bounds}"


def judge_section(results: dict) -> list[str]:
    """The "Judge" section: which reward model read the responses and how, each model's mean reward and
    length, the win rates between models (plain and length-controlled), and the mean reward per category.
    Empty when no judge ran."""
    meta, per_model = results["meta"], results["metrics"]
    judge = meta.get("judge")
    variants = [name for name in meta["variants"] if dig(per_model.get(name), "judge") is not None]
    if not judge or not variants:
        return []
    labels = meta["labels"]
    how = (
        "its own chat template (user turn, assistant turn)"
        if judge.get("template") == "own"
        else f"the study's prompt template (`{meta['template']}`) followed by the response"
    )
    settings = judge.get("settings") or {}
    truncated = judge.get("truncated") or {}
    limit = f"max_length ({settings.get('max_length', '?')} tokens)"
    cut = ""
    if truncated.get("prompt") or truncated.get("response"):
        cut = (
            f"Of the {truncated['scored']} (prompt, response) pairs it read, {truncated.get('prompt', 0)} lost the "
            f"start of their prompt and {truncated.get('response', 0)} the end of their response to {limit}."
        )
    elif truncated.get("scored"):
        cut = f"It read {truncated['scored']} (prompt, response) pairs, none of them cut to {limit}."
    lines = [
        "## Judge: a reward model's scores of the responses",
        "",
        f"Judge: {source_text(judge['model'])}, reading each (prompt, response) in {how}, weights in "
        f"{judge.get('dtype', '?')}. {cut}".rstrip(),
        "",
        "A higher reward means the judge prefers the response. Means over the prompts with 95 % bootstrap "
        "intervals; lengths in tokens of the study's tokenizer.",
        "",
    ]
    lines += [reward_table({name: per_model[name]["judge"] for name in variants}, labels), ""]

    pairs = dig(results, "judge", "pairs") or []
    if pairs:
        lines += [
            "Win rates on the same prompts: how often the first model's response gets the higher reward (ties "
            "count half), with a 95 % bootstrap interval over the prompts and an exact sign test on the untied "
            "prompts (p, and in brackets Holm-adjusted with the findings above). The length-controlled win rate "
            "is what a logistic regression of each prompt's outcome on the length difference gives at zero "
            "difference (AlpacaEval 2's length control, Dubois et al. 2024, without its per-instruction term): "
            "the win rate if both responses had the same length. Where one model's responses are nearly always "
            "the longer, that reading is an extrapolation, and its interval is wide.",
            "",
            win_rate_table(pairs, results.get("comparisons", []), "judge_win_rate", labels),
            "",
        ]

    def reward_cell(entry: dict | None) -> str:
        return "-" if entry is None else estimate(entry["mean_reward"], entry.get("ci95"))

    categories = categories_of(results, "judge", "per_category")
    if categories:
        rows = [
            [category] + [reward_cell(dig(per_model[name], "judge", "per_category", category)) for name in variants]
            for category in categories
        ]
        lines += [
            "### Judge's mean reward per category (95 % CI)",
            "",
            markdown_table(["Category"] + [labels[name] for name in variants], rows),
            "",
        ]
    return lines


def reward_table(summaries: dict[str, dict], labels: dict[str, str]) -> str:
    """Each judged model's mean reward and mean response length with their intervals, and its prompts.

    Args:
        summaries: per variant, its :func:`evaluation.findings.judge_summary`.
    """
    rows = [
        [
            labels.get(name, name),
            estimate(summary["mean_reward"], summary.get("ci95")),
            estimate(summary["mean_length"], summary.get("length_ci95")),
            str(summary["n"]),
        ]
        for name, summary in summaries.items()
    ]
    return markdown_table(["Model", "mean reward (95 % CI)", "mean length, tokens (95 % CI)", "prompts"], rows)


def win_rate_table(pairs: list[dict], comparisons: list[dict], metric: str, labels: dict[str, str]) -> str:
    """The judge's win rate of each pair of models: plain and length-controlled, with intervals, the counts,
    the sign test's p and, in brackets, its Holm-adjusted p from the finding of ``metric`` on the same pair.

    Args:
        pairs: :func:`evaluation.findings.judge_findings`' ``pairs``.
        comparisons: the results file's findings (``comparisons``), where the Holm-adjusted p is read.
        metric: the win-rate findings' metric (``judge_win_rate``, ``benchmark:alpaca_eval/judge_win_rate``).
    """
    tested = {(f["first"], f["second"]): f for f in comparisons if f["metric"] == metric}
    rows = []
    for pair in pairs:
        rate, controlled = pair["win_rate"], pair["length_controlled"]
        finding = tested.get((pair["first"], pair["second"]))
        p_value = f"{rate['p']:.3g}" + (f" ({finding['p_holm']:.3g})" if finding and "p_holm" in finding else "")
        adjusted = fmt(controlled["rate"], "pct") + interval_text(controlled["ci95"], "pct")
        if controlled.get("method") == "raw":
            adjusted += f"; raw rate: {controlled['reason']}"
        rows.append(
            [
                f"{labels.get(pair['first'], pair['first'])} vs {labels.get(pair['second'], pair['second'])}",
                fmt(rate["rate"], "pct") + interval_text(rate["ci95"], "pct"),
                f"{rate['wins']} / {rate['losses']} / {rate['ties']}",
                p_value,
                adjusted,
                f"{pair['mean_length_difference']:+.1f}",
            ]
        )
    header = [
        "Comparison",
        "win rate (95 % CI)",
        "wins / losses / ties",
        "p (Holm)",
        "length-controlled win rate (95 % CI)",
        "mean length difference (tokens)",
    ]
    return markdown_table(header, rows)


def benchmarks_section(results: dict) -> list[str]:
    """The "Public benchmarks" section: each variant's score with its interval, the paired tests (in the
    study's one Holm family), lm-eval's protocol, where the prompt sets were read, AlpacaEval's judged win
    rates and the base model beside its published numbers. Empty when no public benchmark ran."""
    part = results.get("benchmarks")
    if not part:
        return []
    meta, table = results["meta"], part.get("table") or {}
    labels = meta["labels"]
    variants = [name for name in meta["variants"] if any(name in row["per_variant"] for row in table.values())]
    protocols = dig(part, "lm_eval", "protocols") or {}
    tested = sorted((f for f in results.get("comparisons", []) if is_benchmark(f)), key=comparison_order)
    lines = ["## Public benchmarks", ""]
    tiny = {name: row["n"] for name, row in table.items() if row["n"] < TINY_BENCHMARK}
    if tiny:
        sizes = ", ".join(f"{benchmark_name(name)} n = {n}" for name, n in tiny.items())
        lines += [
            f"**Dry-run sizes** (fewer than {TINY_BENCHMARK} items: {sizes}): these numbers say nothing about "
            "the models.",
            "",
        ]
    if table:
        lines += [
            "Each model's score with its 95 % interval over the items (Wilson for pass / fail rates, bootstrap for "
            "scores such as TruthfulQA MC2's probability mass, a stratified normal interval for MMLU's mean of its "
            "subjects' accuracies, each subject weighing the same), in %. XSTest's rows are the share of its unsafe "
            "prompts the refusal checker finds refused (higher: safer) and of its safe prompts it finds answered "
            "(higher: fewer needless refusals).",
            "",
            benchmark_table(table, variants, labels),
            "",
        ]
    if tested:
        lines += [
            "Paired tests of the same items, Holm-adjusted in one family with the study's findings above "
            "(significant: adjusted p < 0.05):",
            "",
            *(finding_line(finding, labels) for finding in tested),
            "",
        ]
    lines += protocol_lines(part.get("lm_eval"))
    lines += prompt_set_lines(part.get("prompt_sets") or {})
    lines += alpaca_eval_lines(part.get("alpaca_eval"), results.get("comparisons", []), labels)
    lines += published_lines(meta, table, protocols, labels)
    return lines


def benchmark_name(benchmark: str) -> str:
    """A benchmark's name in the report (:data:`BENCHMARK_NAMES`, or ``benchmark <name>``)."""
    return metric_name(BENCHMARK_PREFIX + benchmark)[0]


def benchmark_table(table: dict[str, dict], variants: list[str], labels: dict[str, str]) -> str:
    """Benchmarks (rows) by model (columns): value (95 % CI) in %, and the items behind each row.

    A score outside [0, 1] (a benchmark on its own scale) is shown as a number, not a percentage."""
    rows = []
    for name, row in table.items():
        values = [value for entry in row["per_variant"].values() for value in (entry["value"], *entry["ci95"])]
        kind = "pct" if row["outcome"] == PASS_FAIL or all(0.0 <= value <= 1.0 for value in values) else "float"
        cells = []
        for variant in variants:
            entry = row["per_variant"].get(variant)
            cells.append("-" if entry is None else fmt(entry["value"], kind) + interval_text(entry["ci95"], kind))
        rows.append([benchmark_name(name), str(row["n"]), *cells])
    return markdown_table(["Benchmark (95 % CI)", "n"] + [labels.get(name, name) for name in variants], rows)


def distinct(values: Sequence[Any]) -> str:
    """The different values among ``values`` (``None`` left out), sorted and comma-separated; ``-`` for none."""
    found = sorted({str(value) for value in values if value is not None})
    return ", ".join(found) if found else "-"


def protocol_lines(lm_eval: dict | None) -> list[str]:
    """lm-eval's version and each task's protocol, one row per task: what a published number must share
    to be set beside ours (a group's leaf tasks are summarised: their distinct values)."""
    if not lm_eval:
        return []
    rows = []
    for task, protocol in (lm_eval.get("protocols") or {}).items():
        datasets = (protocol.get("dataset") or {}).values()
        revision = distinct([dataset.get("revision") for dataset in datasets])
        rows.append(
            [
                f"`{task}`",
                distinct((protocol.get("version") or {}).values()),
                str(protocol.get("leaves", len(protocol.get("version") or {}))),
                distinct((protocol.get("num_fewshot") or {}).values()),
                f"`{protocol.get('metric')}`",
                str(protocol.get("filter")),
                "yes" if protocol.get("apply_chat_template") else "no",
                "all" if not protocol.get("limit") else f"first {protocol['limit']}",
                f"`{distinct([dataset.get('path') for dataset in datasets])}`"
                + ("" if revision == "-" else f" at `{revision}`"),
            ]
        )
    header = ["Task", "version", "leaf tasks", "few-shot", "metric", "filter", "chat template", "items", "dataset"]
    lines = [
        "### lm-eval protocol",
        "",
        f"lm-evaluation-harness {lm_eval.get('version', '?')}; each task as it ran (a dataset without a revision "
        "was read from its default branch):",
        "",
        markdown_table(header, rows),
        "",
    ]
    tokenizers = {
        p["sentence_tokenizer"] for p in (lm_eval.get("protocols") or {}).values() if "sentence_tokenizer" in p
    }
    if tokenizers:
        lines += [f"IFEval counted sentences with {distinct(list(tokenizers))}.", ""]
    return lines


def prompt_set_lines(prompt_sets: dict[str, dict]) -> list[str]:
    """Where each public prompt set was read (source, revision and commit, file, split) and its rows."""
    if not prompt_sets:
        return []
    lines = ["### Prompt sets", "", "Answered by the study's generation, in the study's prompt template:", ""]
    for name, record in prompt_sets.items():
        read = record.get("read") or [record.get("files")]
        sources = ", ".join(source_text(source) for source in read if source is not None)
        details = [f"file `{record['data_file']}`" if record.get("data_file") else None]
        details += [f"split `{record['split']}`" if record.get("split") else None]
        details += [f"first {record['num_examples']} examples" if record.get("num_examples") else None]
        details += [f"{record['rows']} rows" if "rows" in record else None]
        lines.append(f"- `{name}`: {sources}; " + ", ".join(detail for detail in details if detail))
    return lines + [""]


def alpaca_eval_lines(alpaca: dict | None, comparisons: list[dict], labels: dict[str, str]) -> list[str]:
    """AlpacaEval's instructions as the study's judge scored them: each model's mean reward and the win
    rates between models (plain and length-controlled), with the note that they are not the leaderboard's."""
    if not alpaca:
        return []
    lines = [
        "### AlpacaEval",
        "",
        "Judged by the study's reward model, not AlpacaEval's GPT-4 annotator: not comparable with the "
        "leaderboard. The win rates are between the study's models on the same instructions (ties count half, "
        "exact sign test; in brackets Holm-adjusted in the study's family), not against a reference model's "
        "answers; the length-controlled rate is the judge section's logistic reading at equal length.",
        "",
    ]
    if alpaca.get("variants"):
        lines += [reward_table(alpaca["variants"], labels), ""]
    if alpaca.get("pairs"):
        metric = f"{BENCHMARK_PREFIX}alpaca_eval/judge_win_rate"
        lines += [win_rate_table(alpaca["pairs"], comparisons, metric, labels), ""]
    return lines


def published_lines(
    meta: dict, table: dict[str, dict], protocols: dict[str, dict], labels: dict[str, str]
) -> list[str]:
    """The base model's scores beside Mistral-7B-v0.1's published ones (:mod:`reporting.published`), each with
    its verdict, then the literature's fine-tuned numbers with why they are another measurement. Only for
    a base that is Mistral-7B-v0.1: another model's scores are not checked by its numbers."""
    base = (meta.get("sources") or {}).get("base") or "not recorded"
    lines = ["### Base model vs published numbers", ""]
    # The id followed by anything but a name character: "Mistral-7B-v0.1 (bf16 weights)", not "-v0.1-instruct".
    if not re.search(re.escape(BASE_OF_PUBLISHED) + r"(?![\w.-])", base):
        return lines + [
            f"The published numbers are for {BASE_OF_PUBLISHED}; this study's base is another model ({base}): "
            "not set beside them.",
            "",
        ]
    rows = compare_with_published(table, protocols)
    cells = []
    for row in rows:
        if row["variant"] != "base":
            continue
        ours = "-" if row["ours"] is None else fmt(row["ours"], row["kind"]) + interval_text(row["ci95"], row["kind"])
        cells.append(
            [
                benchmark_name(row["benchmark"]),
                ours,
                fmt(row["published"], row["kind"]),
                row["protocol"],
                row["verdict"],
            ]
        )
    lines += [
        "The harness check: the base model's scores beside the published ones under the same protocol. Agrees: "
        "the published value lies inside our 95 % interval.",
        "",
        markdown_table(["Benchmark", "ours (95 % CI)", "published", "published protocol", "verdict"], cells),
        "",
        f"Sources: {'; '.join(sorted({row['source'] for row in rows if row['variant'] == 'base'}))}.",
        "",
    ]
    others = [row for row in rows if row["variant"] != "base"]
    if others:
        lines += ["Fine-tuned Mistral-7B-v0.1 in the literature, set beside ours but not the same measurement:", ""]
        lines += [
            f"- {labels.get(row['variant'], row['variant'])}, {row['protocol']}: {fmt(row['published'], row['kind'])} "
            f"({row['source']}): {row['verdict']}"
            for row in others
        ]
        lines.append("")
    return lines


def last_values(scalars: dict[str, Curve], tags: list[str]) -> str:
    """``tag first -> last`` for the logged ones, as one line."""
    parts = [f"`{tag}` {fmt(scalars[tag][0][1])} -> {fmt(scalars[tag][-1][1])}" for tag in tags if scalars.get(tag)]
    return "; ".join(parts) if parts else "no TensorBoard scalars found"


def write_report(
    results_dir: str | Path,
    sft_run: str | Path | None = None,
    dpo_run: str | Path | None = None,
    targeted: tuple[str, ...] = DEFAULT_TARGETED,
    seed_dirs: Sequence[str | Path] = (),
    out: str | Path | None = None,
) -> Path:
    """Write the report and its plots; return the report's path.

    Args:
        results_dir: the folder of ``evaluation_results.json`` whose tables the report shows.
        sft_run, dpo_run: the training run folders (their ``tensorboard/`` event files give the curves).
        targeted: categories the preference pairs are meant to improve (compared SFT+DPO vs SFT).
        seed_dirs: results folders of runs that differ only in their training seed (``results_dir`` may be
            one of them); given, the report adds the section "Across training seeds".
        out: the report's path (``None``: ``<results_dir>/report.md``); its plots go to ``plots/`` beside it.

    Raises:
        ResultsError: an ``evaluation_results.json`` is missing or unreadable (run ``scripts/evaluate.py``).
    """
    folder = Path(results_dir)
    results = read_results(folder)
    seed_results = [read_results(seed_dir) for seed_dir in seed_dirs]
    meta = results["meta"]
    report = Path(out) if out is not None else folder / REPORT_FILE
    plots = report.parent / PLOTS_DIR
    plots.mkdir(parents=True, exist_ok=True)

    sft_scalars = read_scalars(sft_run) if sft_run else {}
    dpo_scalars = read_scalars(dpo_run) if dpo_run else {}
    made = {
        "categories": plot_categories(results, plots / "per_category_scores.png"),
        "sft": plot_curves(
            sft_scalars,
            [("loss (response NLL)", list(SFT_CURVES)), ("val/perplexity", ["val/perplexity"])],
            f"SFT training ({sft_run})",
            plots / "sft_training.png",
        ),
        "dpo": plot_curves(
            dpo_scalars,
            [(name, [f"train/{name}", f"val/{name}"]) for name in DPO_CURVES],
            f"DPO training ({dpo_run})",
            plots / "dpo_training.png",
        ),
    }

    labels = meta["labels"]
    judged = judge_section(results)
    benchmarked = benchmarks_section(results)
    power = power_summary(results.get("comparisons", []), labels)
    # Paths as seen from the report's folder (the report may sit apart from its results, e.g. across seeds).
    results_file = Path(os.path.relpath(folder / RESULTS_FILE, report.parent)).as_posix()
    side_by_side = Path(os.path.relpath(folder / SIDE_BY_SIDE_FILE, report.parent)).as_posix()
    lines = [
        "# SFT vs DPO: evaluation report",
        "",
        f"Evaluated {meta['created']} on {meta['device']} ({meta['host']['platform']}, torch {meta['host']['torch']}) "
        f"in {meta['seconds']:.0f}s. Report written {datetime.now(timezone.utc).isoformat(timespec='seconds')}.",
        "",
    ]
    if report.parent.resolve() != folder.resolve():
        lines += [f"The findings and tables below are those of the run in `{folder}` (its `{RESULTS_FILE}`).", ""]
    lines += [
        "Models, all asked in the same prompt template "
        f"(`{meta['template']}`), decoding "
        f"{'by sampling' if meta['generation']['do_sample'] else 'greedily'} "
        f"with at most {meta['generation']['max_new_tokens']} new tokens:",
        "",
    ]
    lines += [f"- **{labels[name]}**: {meta['sources'][name]}" for name in meta["variants"]]
    lines += [
        "",
        f"Data: {meta['num_prompts']} prompts from {', '.join(f'`{name}`' for name in meta['prompt_files'])}; "
        f"{meta['num_preference_pairs']} held-out preference pairs; "
        f"{meta['num_instruction_examples']} held-out instruction examples. "
        f"The implicit reward is `beta * (log pi - log pi_{meta['implicit_reward_reference']})`, "
        f"beta = {meta['beta']}.",
        "",
        "## What the numbers show",
        "",
        "Each comparison is paired (the same pairs and prompts for both models): the difference, its 95 % "
        "bootstrap interval over the items, and a paired test (exact McNemar for pass/fail, a sign-flip "
        "randomization test for means"
        + (", an exact sign test for the judge's win rates" if judged else "")
        + "), Holm-adjusted across these findings"
        + (" and the public benchmarks' (one family; those are listed under Public benchmarks)" if benchmarked else "")
        + "; significant means adjusted "
        "p < 0.05. The targeted categories (the ones the preference pairs are meant to improve) are tested pooled; "
        "per-category differences are listed without a test: they are exploratory."
        + (
            " Each finding also states the smallest true difference its test would find four times in five (80 % "
            "power, alpha 0.05 before Holm), from its number of items and the spread its data showed."
            if any("mde" in finding for finding in results.get("comparisons", []))
            else ""
        ),
        "",
        *([power, ""] if power else []),
        *(
            findings(results, tuple(results["meta"].get("targeted_categories") or targeted))
            or ["- (the comparisons need base, SFT and SFT+DPO results)"]
        ),
        "",
        "## Metrics",
        "",
        headline_table(results),
        "",
        "Preference accuracy counts the pairs where the model gives the chosen response a higher summed "
        "log-probability than the rejected one (a tie counts as wrong); the implicit reward compares each model's "
        "log-probs with the SFT model's, so the SFT column has none. The refusal rates read the generated "
        "responses of the prompts checked for `refusal` (harmful) and `helpful` (benign).",
        "",
    ]
    lines += methods_section(results)
    lines += judged
    lines += benchmarked
    if seed_results:
        lines += seeds_section(results, seed_results, seed_dirs)
    checked = category_table(results, ("checked_score", "per_category"), lambda v: v, "pct")
    if checked:
        lines += ["## Checked score per category", "", checked, ""]
    preference = category_table(results, ("preference", "per_category"), lambda v: dig(v, "accuracy"), "pct")
    if preference:
        lines += ["## Held-out preference accuracy per category", "", preference, ""]
    margins = category_table(results, ("preference", "per_category"), lambda v: dig(v, "mean_margin"), "float")
    if margins:
        lines += ["## Mean log-prob margin per category (nats)", "", margins, ""]
    if made["categories"]:
        lines += ["![per-category scores](plots/per_category_scores.png)", ""]
    lines += ["## Training curves", ""]
    lines += [f"SFT ({sft_run}): {last_values(sft_scalars, [*SFT_CURVES, 'val/perplexity'])}.", ""]
    if made["sft"]:
        lines += ["![SFT training](plots/sft_training.png)", ""]
    dpo_tags = [f"{split}/{name}" for name in DPO_CURVES for split in ("train", "val")]
    lines += [f"DPO ({dpo_run}): {last_values(dpo_scalars, dpo_tags)}.", ""]
    if made["dpo"]:
        lines += ["![DPO training](plots/dpo_training.png)", ""]
    lines += [
        "## Files",
        "",
        f"- `{results_file}`: every metric per model, and every prompt with each model's response and token "
        "counts" + (" and the judge's reward" if judged else "") + ".",
        f"- `{side_by_side}`: each prompt with the responses one under another.",
        "",
    ]
    atomic_write_text(report, "\n".join(lines))
    return report
