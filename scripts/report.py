"""Turn the evaluation results and the training logs into a report a person can read.

Reads ``<results-dir>/evaluation_results.json`` (written by ``scripts/evaluate.py``) and the
TensorBoard event files of the SFT and DPO runs, and writes:

* ``<results-dir>/report.md``: the metric tables (base / SFT / SFT+DPO, overall and per category),
  what the numbers show, the training curves and where everything came from;
* ``<results-dir>/plots/*.png`` (matplotlib): per-category scores per model, the SFT losses, the DPO
  loss, ``rewards/accuracies`` and ``rewards/margins``.

Usage::

    python scripts/report.py --results-dir results --sft-run runs/tiny/sft --dpo-run runs/tiny/dpo
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from evaluation.files import atomic_write_text  # noqa: E402

RESULTS_FILE = "evaluation_results.json"
REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
# The categories whose SFT training answers are partly flawed on purpose (evaluation.suite), i.e.
# the ones DPO's pairs can correct.
DEFAULT_TARGETED = ("instruction_following", "reasoning", "safety")
SFT_CURVES = ("train/loss", "val/loss")
DPO_CURVES = ("loss", "rewards/accuracies", "rewards/margins")
COLORS = {"base": "#9e9e9e", "sft": "#1f77b4", "sft_dpo": "#d62728"}

Curve = list[tuple[int, float]]


def read_scalars(run_dir: str | Path) -> dict[str, Curve]:
    """Every scalar of a run's TensorBoard event files, as ``{tag: [(step, value), ...]}``.

    Looks in ``<run_dir>/tensorboard`` (the configs' fixed logger version) or ``run_dir`` itself.
    When a step was logged twice (a resumed run), the later value is kept. A missing folder gives ``{}``.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = Path(run_dir)
    if (folder / "tensorboard").is_dir():
        folder = folder / "tensorboard"
    if not any(folder.glob("events.out.tfevents.*")):
        return {}
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    scalars = {}
    for tag in accumulator.Tags()["scalars"]:
        by_step: dict[int, tuple[float, float]] = {}
        for event in accumulator.Scalars(tag):
            if event.step not in by_step or event.wall_time >= by_step[event.step][0]:
                by_step[event.step] = (event.wall_time, event.value)
        scalars[tag] = [(step, value) for step, (_, value) in sorted(by_step.items())]
    return scalars


def fmt(value: float | None, kind: str = "float") -> str:
    """A table cell: percentages for rates, 2-3 significant decimals otherwise, '-' for nothing."""
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "int":
        return f"{value:.0f}"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def dig(tree: dict | None, *keys: str) -> Any:
    """``tree[k1][k2]...`` or ``None`` where a level is missing or ``None``."""
    for key in keys:
        if not isinstance(tree, dict) or tree.get(key) is None:
            return None
        tree = tree[key]
    return tree


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table, first column left-aligned, the rest right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|" + ":---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# (label, path into a model's metrics, format, which direction is better)
HEADLINE: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("Held-out preference accuracy (log p chosen > rejected)", ("preference", "accuracy"), "pct", "higher"),
    ("Mean log-prob margin, chosen - rejected (nats)", ("preference", "mean_margin"), "float", "higher"),
    ("Implicit-reward accuracy vs SFT reference", ("implicit_reward", "accuracy"), "pct", "higher"),
    ("Mean implicit-reward margin vs SFT (beta x nats)", ("implicit_reward", "mean_margin"), "float", "higher"),
    ("Perplexity on held-out instruction responses", ("perplexity", "value"), "float", "lower"),
    ("Checked score, all prompts", ("checked_score", "overall"), "pct", "higher"),
    ("Refusal rate on harmful prompts", ("generation", "refusal_rate"), "pct", "higher"),
    ("Over-refusal rate on benign prompts", ("generation", "over_refusal_rate"), "pct", "lower"),
    ("Mean response length (tokens)", ("generation", "mean_response_tokens"), "float", "-"),
    ("Responses ending with EOS", ("generation", "finished_rate"), "pct", "-"),
    ("Distinct-2 of the responses", ("generation", "distinct_2"), "float", "-"),
)


def headline_table(results: dict) -> str:
    """Metrics (rows) by model (columns)."""
    variants, labels, per_model = results["meta"]["variants"], results["meta"]["labels"], results["metrics"]
    rows = []
    for label, path, kind, better in HEADLINE:
        values = [dig(per_model[name], *path) for name in variants]
        if all(value is None for value in values):
            continue
        rows.append([label] + [fmt(value, kind) for value in values] + [better])
    return markdown_table(["Metric"] + [labels[name] for name in variants] + ["better"], rows)


def categories_of(results: dict, *path: str) -> list[str]:
    """Every category that appears under ``path`` for any model, sorted."""
    found: set[str] = set()
    for metrics in results["metrics"].values():
        found.update(dig(metrics, *path) or {})
    return sorted(found)


def category_table(results: dict, path: tuple[str, ...], value: Callable[[Any], float | None], kind: str) -> str:
    """Categories (rows) by model (columns) of one per-category metric."""
    variants, labels = results["meta"]["variants"], results["meta"]["labels"]
    rows = []
    for category in categories_of(results, *path):
        cells = [fmt(value(dig(results["metrics"][name], *path, category)), kind) for name in variants]
        rows.append([category] + cells)
    return markdown_table(["Category"] + [labels[name] for name in variants], rows) if rows else ""


METRIC_NAMES = {
    "preference_accuracy": ("held-out preference accuracy", "points"),
    "mean_margin": ("mean log-prob margin", "nats"),
    "checked_score": ("the checked score", "points"),
}


def finding_line(finding: dict, labels: dict[str, str]) -> str:
    """One paired comparison as the report states it: difference, 95 % interval, p, verdict."""
    name, unit = METRIC_NAMES[finding["metric"]]
    scale = 100.0 if unit == "points" else 1.0
    low, high = (scale * bound for bound in finding["ci95"])
    verdict = "**significant**" if finding["significant"] else "not significant"
    return (
        f"- {labels[finding['first']]} vs {labels[finding['second']]} on {name}: "
        f"{scale * finding['difference']:+.1f} {unit} (95 % CI {low:+.1f} to {high:+.1f}), "
        f"p = {finding['p']:.3g} ({finding['test']}, n = {finding['n']}; Holm-adjusted {finding['p_holm']:.3g}): "
        f"{verdict}"
    )


def findings(results: dict, targeted: tuple[str, ...]) -> list[str]:
    """The comparisons the study is about, each with its paired interval and test (``comparisons`` in the
    results file), then, for the categories the pairs target, the raw per-category differences."""
    per_model, labels = results["metrics"], results["meta"]["labels"]
    lines = [finding_line(finding, labels) for finding in results.get("comparisons", [])]

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
        compare(f"the checked score of {category} (untested)", "sft_dpo", "sft",
                ("checked_score", "per_category", category))
        compare(
            f"preference accuracy on {category} pairs (untested)",
            "sft_dpo",
            "sft",
            ("preference", "per_category", category, "accuracy"),
        )
    return lines


def plot_categories(results: dict, path: Path) -> bool:
    """Grouped bars: checked score and held-out preference accuracy per category, one bar per model."""
    panels = [
        ("Checked score of generated responses", ("checked_score", "per_category"), lambda v: v),
        ("Held-out preference accuracy", ("preference", "per_category"), lambda v: dig(v, "accuracy")),
    ]
    panels = [panel for panel in panels if categories_of(results, *panel[1])]
    if not panels:
        return False
    variants, labels = results["meta"]["variants"], results["meta"]["labels"]
    figure, axes = plt.subplots(len(panels), 1, figsize=(10, 3.6 * len(panels)), squeeze=False)
    width = 0.8 / len(variants)
    for axis, (title, keys, value) in zip(axes[:, 0], panels, strict=True):
        categories = categories_of(results, *keys)
        for offset, name in enumerate(variants):
            scores = [value(dig(results["metrics"][name], *keys, category)) or 0.0 for category in categories]
            positions = [i + (offset - (len(variants) - 1) / 2) * width for i in range(len(categories))]
            axis.bar(positions, scores, width, label=labels[name], color=COLORS.get(name))
        axis.set_xticks(range(len(categories)), [c.replace("_", "\n") for c in categories])
        axis.set_ylim(0, 1.05)
        axis.set_title(title)
        axis.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(ncols=len(variants), loc="upper right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def plot_curves(scalars: dict[str, Curve], panels: list[tuple[str, list[str]]], title: str, path: Path) -> bool:
    """One panel per quantity, each with its train and val curves; ``False`` when nothing was logged."""
    panels = [(name, [tag for tag in tags if scalars.get(tag)]) for name, tags in panels]
    panels = [(name, tags) for name, tags in panels if tags]
    if not panels:
        return False
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for axis, (name, tags) in zip(axes[0], panels, strict=True):
        for tag in tags:
            steps, values = zip(*scalars[tag], strict=True)
            style = {"marker": "o"} if tag.startswith("val/") else {"alpha": 0.85}
            axis.plot(steps, values, label=tag.split("/")[0], **style)
        axis.set_title(name)
        axis.set_xlabel("optimizer step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def last_values(scalars: dict[str, Curve], tags: list[str]) -> str:
    """``tag first -> last`` for the logged ones, as one line."""
    parts = [f"`{tag}` {fmt(scalars[tag][0][1])} -> {fmt(scalars[tag][-1][1])}" for tag in tags if scalars.get(tag)]
    return "; ".join(parts) if parts else "no TensorBoard scalars found"


def write_report(
    results_dir: str | Path,
    sft_run: str | Path | None = None,
    dpo_run: str | Path | None = None,
    targeted: tuple[str, ...] = DEFAULT_TARGETED,
) -> Path:
    """Write ``report.md`` and its plots into ``results_dir``; return the report's path.

    Raises:
        FileNotFoundError: ``evaluation_results.json`` is missing (run ``scripts/evaluate.py`` first).
    """
    folder = Path(results_dir)
    results_path = folder / RESULTS_FILE
    if not results_path.is_file():
        raise FileNotFoundError(f"{results_path} not found: run scripts/evaluate.py first (it writes that file).")
    results = json.loads(results_path.read_text())
    meta = results["meta"]
    plots = folder / PLOTS_DIR
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
    lines = [
        "# SFT vs DPO: evaluation report",
        "",
        f"Evaluated {meta['created']} on {meta['device']} ({meta['host']['platform']}, torch {meta['host']['torch']}) "
        f"in {meta['seconds']:.0f}s. Report written {datetime.now(timezone.utc).isoformat(timespec='seconds')}.",
        "",
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
        "randomization test for means), Holm-adjusted across these findings; significant means adjusted "
        "p < 0.05. Per-category differences are listed without a test: they are exploratory.",
        "",
        *(findings(results, targeted) or ["- (the comparisons need base, SFT and SFT+DPO results)"]),
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
        f"- `{RESULTS_FILE}`: every metric per model, and every prompt with each model's response and token counts.",
        "- `side_by_side_comparison.txt`: each prompt with the responses one under another.",
        "",
    ]
    report = folder / REPORT_FILE
    atomic_write_text(report, "\n".join(lines))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", default="results", help="folder of evaluation_results.json (and the report)")
    parser.add_argument("--sft-run", default="runs/tiny/sft", help="the SFT run folder (holds tensorboard/)")
    parser.add_argument("--dpo-run", default="runs/tiny/dpo", help="the DPO run folder (holds tensorboard/)")
    parser.add_argument(
        "--targeted",
        nargs="*",
        default=list(DEFAULT_TARGETED),
        help="categories the preference pairs are meant to improve (compared SFT+DPO vs SFT)",
    )
    args = parser.parse_args(argv)
    try:
        report = write_report(args.results_dir, args.sft_run, args.dpo_run, tuple(args.targeted))
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")
    print(f"[report] wrote {report} and its plots in {report.parent / PLOTS_DIR}")


if __name__ == "__main__":
    main()
