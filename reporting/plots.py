"""The report's figures (matplotlib, written to files): per-category rates (and the judge's mean rewards)
with their 95 % intervals, and the training curves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from common.trees import dig  # noqa: E402
from evaluation.results import categories_of  # noqa: E402
from reporting.training_logs import Curve  # noqa: E402

COLORS = {"base": "#9e9e9e", "sft": "#1f77b4", "sft_dpo": "#d62728"}


@dataclass(frozen=True)
class CategoryPanel:
    """One panel of per-category values (rates, or the judge's mean rewards).

    Attributes:
        title: the panel's title.
        path: keys into ``metrics[variant]`` of the ``{category: ...}`` mapping.
        field: the value's key inside each category's entry (``None``: the entry is the value).
        interval: where each category's 95 % interval is: its key in ``metrics[variant]["ci95_per_category"]``
            or, with ``interval_in_entry``, its key inside each category's entry.
        interval_in_entry: the interval sits in the category's entry beside the value.
        interval_kind: how the interval was computed, for the title.
        rate: a rate in [0, 1] (the axis is fixed to it); otherwise an unbounded mean, drawn around 0.
    """

    title: str
    path: tuple[str, ...]
    field: str | None
    interval: str
    interval_in_entry: bool = False
    interval_kind: str = "Wilson"
    rate: bool = True


CATEGORY_PANELS = (
    CategoryPanel("Checked score of generated responses", ("checked_score", "per_category"), None, "checked_score"),
    CategoryPanel("Held-out preference accuracy", ("preference", "per_category"), "accuracy", "preference_accuracy"),
    CategoryPanel("Judge's mean reward of generated responses", ("judge", "per_category"), "mean_reward", "ci95",
                  interval_in_entry=True, interval_kind="bootstrap", rate=False),
)


@dataclass
class BarSeries:
    """One variant's bars in a panel: a rate per category and the distances to its 95 % interval's ends
    (``None``: the results file has no per-category intervals, e.g. one written before they existed)."""

    variant: str
    values: list[float]
    below: list[float] | None
    above: list[float] | None


def category_series(results: dict, panel: CategoryPanel) -> tuple[list[str], list[BarSeries]]:
    """The panel's categories and, per variant, its bars; a category a variant lacks is a 0 without interval."""
    categories = categories_of(results, *panel.path)
    series = []
    for name in results["meta"]["variants"]:
        metrics = results["metrics"][name]
        field = (panel.field,) if panel.field else ()
        values = [dig(metrics, *panel.path, category, *field) or 0.0 for category in categories]
        if panel.interval_in_entry:
            entries = dig(metrics, *panel.path) or {}
            intervals = {category: entry[panel.interval] for category, entry in entries.items()
                         if dig(entry, panel.interval) is not None} or None
        else:
            intervals = dig(metrics, "ci95_per_category", panel.interval)
        if intervals is None:
            series.append(BarSeries(name, values, None, None))
            continue
        bounds = [intervals.get(category, (value, value)) for category, value in zip(categories, values, strict=True)]
        below = [max(0.0, value - low) for value, (low, _) in zip(values, bounds, strict=True)]
        above = [max(0.0, high - value) for value, (_, high) in zip(values, bounds, strict=True)]
        series.append(BarSeries(name, values, below, above))
    return categories, series


def plot_categories(results: dict, path: Path) -> bool:
    """Grouped bars: checked score, held-out preference accuracy and (with a judge) the judge's mean reward per
    category, one bar per model, each with its 95 % interval; ``False`` when the results have no per-category
    values."""
    panels = [panel for panel in CATEGORY_PANELS if categories_of(results, *panel.path)]
    if not panels:
        return False
    variants, labels = results["meta"]["variants"], results["meta"]["labels"]
    figure, axes = plt.subplots(len(panels), 1, figsize=(10, 3.6 * len(panels)), squeeze=False)
    width = 0.8 / len(variants)
    for axis, panel in zip(axes[:, 0], panels, strict=True):
        categories, series = category_series(results, panel)
        for offset, bars in enumerate(series):
            positions = [i + (offset - (len(variants) - 1) / 2) * width for i in range(len(categories))]
            errors = None if bars.below is None else [bars.below, bars.above]
            axis.bar(positions, bars.values, width, yerr=errors, capsize=2, error_kw={"elinewidth": 0.8},
                     label=labels[bars.variant], color=COLORS.get(bars.variant))
        axis.set_xticks(range(len(categories)), [c.replace("_", "\n") for c in categories])
        if panel.rate:
            axis.set_ylim(0, 1.05)
        else:
            axis.axhline(0.0, color="black", linewidth=0.6)
        with_intervals = any(bars.below is not None for bars in series)
        axis.set_title(panel.title + (f" (bars: 95 % {panel.interval_kind} intervals)" if with_intervals else ""))
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
