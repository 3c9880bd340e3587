"""The report a person reads: ``report.md`` and its plots, from the results file and the training logs.

Reads ``<results_dir>/evaluation_results.json`` (:mod:`evaluation.results`) and the TensorBoard event files of
the SFT and DPO runs, and writes:

* ``<results_dir>/report.md`` (or any other path): the findings (paired differences with intervals and tests),
  the metric tables (base / SFT / SFT+DPO, overall and per category), the reward-model judge's mean rewards
  and win rates when a judge ran, the training curves, where everything came from and, given the results of
  several training seeds, the same metrics across those seeds;
* ``plots/*.png`` beside the report: per-category scores (and judge rewards) per model with 95 % intervals,
  the SFT losses, the DPO loss, ``rewards/accuracies`` and ``rewards/margins``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_text
from evaluation.findings import COMPARISONS
from evaluation.results import RESULTS_FILE, SIDE_BY_SIDE_FILE, categories_of, dig, read_results
from reporting.headline import HEADLINE
from reporting.plots import plot_categories, plot_curves
from reporting.seeds import across_seeds, seed_label
from reporting.training_logs import Curve, read_scalars

REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
# The categories whose SFT training answers are partly flawed on purpose (the tiny suite), i.e. the ones
# DPO's pairs can correct.
DEFAULT_TARGETED = ("instruction_following", "reasoning", "safety")
SFT_CURVES = ("train/loss", "val/loss")
DPO_CURVES = ("loss", "rewards/accuracies", "rewards/margins")
METRIC_NAMES = {
    "preference_accuracy": ("held-out preference accuracy", "points"),
    "mean_margin": ("mean log-prob margin", "nats"),
    "checked_score": ("the checked score", "points"),
    "judge_win_rate": ("the judge's win rate, minus 50 % (ties count half)", "points"),
    "mean_reward": ("the judge's mean reward", "reward"),
    "checked_score_targeted": ("the checked score of the targeted categories", "points"),
    "judge_win_rate_targeted": ("the judge's win rate on the targeted categories, minus 50 %", "points"),
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


def metric_name(metric: str) -> tuple[str, float, str]:
    """``(name, scale, unit)`` of a finding's metric: its difference times ``scale`` is in ``unit``."""
    name, unit = METRIC_NAMES.get(metric, (metric.replace("_", " "), ""))
    return name, 100.0 if unit == "points" else 1.0, unit


def decimals(unit: str, values: Sequence[float]) -> int:
    """Decimals that show a number in ``unit``: one for points; otherwise two significant digits of the
    largest magnitude among ``values`` (one to four decimals; pass an interval's width to show what it
    resolves), so that a reward difference of 0.04 is not printed as +0.0 and a margin of 3.9 nats stays +3.9."""
    largest = max((abs(value) for value in values), default=0.0)
    if unit == "points" or largest == 0 or not math.isfinite(largest):
        return 1
    return max(1, min(4, 1 - math.floor(math.log10(largest))))


def finding_line(finding: dict, labels: dict[str, str]) -> str:
    """One paired comparison as the report states it: difference, 95 % interval, p, verdict."""
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
        f"{verdict}"
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
    ordered = sorted(results.get("comparisons", []), key=comparison_order)  # stable: the file's order within a pair
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


def judge_source(provenance: dict | str) -> str:
    """The judge model as recorded in ``meta.judge.model``: a Hub id with its revision and commit, or a local
    folder with the SHA-256 of its weights."""
    if isinstance(provenance, str):
        return f"`{provenance}`"
    if "hub_id" in provenance:
        return f"`{provenance['hub_id']}` (revision `{provenance['revision']}`, commit `{provenance['commit']}`)"
    digest = provenance.get("sha256")
    return f"`{provenance.get('path')}`" + (f" (local folder, weights SHA-256 `{digest[:16]}…`)" if digest else "")


def interval_text(interval: Sequence[float] | None, kind: str) -> str:
    """`` (low to high)`` in the metric's format, or nothing."""
    return f" ({fmt(interval[0], kind)} to {fmt(interval[1], kind)})" if interval else ""


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
        f"Judge: {judge_source(judge['model'])}, reading each (prompt, response) in {how}, weights in "
        f"{judge.get('dtype', '?')}. {cut}".rstrip(),
        "",
        "A higher reward means the judge prefers the response. Means over the prompts with 95 % bootstrap "
        "intervals; lengths in tokens of the study's tokenizer.",
        "",
    ]
    rows = []
    for name in variants:
        summary = per_model[name]["judge"]
        rows.append(
            [
                labels[name],
                estimate(summary["mean_reward"], summary.get("ci95")),
                estimate(summary["mean_length"], summary.get("length_ci95")),
                str(summary["n"]),
            ]
        )
    lines += [markdown_table(["Model", "mean reward (95 % CI)", "mean length, tokens (95 % CI)", "prompts"], rows), ""]

    pairs = dig(results, "judge", "pairs") or []
    if pairs:
        tested = {
            (f["first"], f["second"]): f for f in results.get("comparisons", []) if f["metric"] == "judge_win_rate"
        }
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
        lines += [
            "Win rates on the same prompts: how often the first model's response gets the higher reward (ties "
            "count half), with a 95 % bootstrap interval over the prompts and an exact sign test on the untied "
            "prompts (p, and in brackets Holm-adjusted with the findings above). The length-controlled win rate "
            "is what a logistic regression of each prompt's outcome on the length difference gives at zero "
            "difference (AlpacaEval 2's length control, Dubois et al. 2024, without its per-instruction term): "
            "the win rate if both responses had the same length. Where one model's responses are nearly always "
            "the longer, that reading is an extrapolation, and its interval is wide.",
            "",
            markdown_table(
                [
                    "Comparison",
                    "win rate (95 % CI)",
                    "wins / losses / ties",
                    "p (Holm)",
                    "length-controlled win rate (95 % CI)",
                    "mean length difference (tokens)",
                ],
                rows,
            ),
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
        + "), Holm-adjusted across these findings; significant means adjusted "
        "p < 0.05. The targeted categories (the ones the preference pairs are meant to improve) are tested pooled; "
        "per-category differences are listed without a test: they are exploratory.",
        "",
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
    lines += judged
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
