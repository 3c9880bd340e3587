"""The study over several training seeds: how much do the numbers move when only the training seed changes?

A single run's intervals (:mod:`evaluation.findings`) measure the noise of the held-out items; they say
nothing of the noise of training. Given the results files of runs that differ only in their training seed,
:func:`across_seeds` gives each headline metric's mean and sample standard deviation over the seeds, and
each paired finding's difference per seed with whether its sign is the same on every seed.
"""

from __future__ import annotations

import math
from typing import Any

from common.trees import dig
from reporting.headline import HEADLINE


def seed_label(results: dict[str, Any]) -> str | None:
    """The training seed of a run, from ``meta["training_seeds"]``: the seed SFT and DPO shared, ``"s/d"``
    when they differ, ``None`` when the results file does not record it."""
    seeds = (results.get("meta") or {}).get("training_seeds") or {}
    known = [str(seeds[stage]) for stage in ("sft", "dpo") if seeds.get(stage) is not None]
    if not known:
        return None
    return known[0] if len(set(known)) == 1 else "/".join(known)


def mean_and_sd(values: list[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation ``sqrt(sum (x - mean)^2 / (n - 1))`` (``None`` for one value)."""
    if not values:
        raise ValueError("a mean over seeds needs at least one value")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - 1))


def across_seeds(results: list[dict[str, Any]], labels: list[str] | None = None) -> dict[str, Any]:
    """Headline metrics and paired findings of several training seeds' results files, side by side.

    Args:
        results: the ``evaluation_results.json`` contents of each seed's run.
        labels: a name per run (default: its training seed, :func:`seed_label`, else its position).

    Returns:
        ``{"seeds": [label...], "metrics": {metric: {variant: {"values", "n", "mean", "sd"}}}, "findings":
        [{"metric", "first", "second", "differences", "same_direction"}]}``. A metric is named by its path in
        a variant's metrics (``preference.accuracy``, :data:`reporting.headline.HEADLINE`); ``values`` and
        ``differences`` hold one entry per run (``None`` where that run lacks it), ``mean`` and ``sd`` (sample,
        n - 1; ``None`` below two values) are over the runs that have it. A finding has the same direction
        when every run has it and its difference is above 0 on all of them, or below 0 on all of them.
    """
    if not results:
        raise ValueError("across_seeds needs the results of at least one run")
    if labels is None:
        labels = [seed_label(result) or str(index) for index, result in enumerate(results)]
    if len(labels) != len(results):
        raise ValueError(f"{len(results)} results but {len(labels)} labels")
    variants = list(dict.fromkeys(name for result in results for name in result["meta"]["variants"]))
    metrics: dict[str, dict[str, Any]] = {}
    for headline in HEADLINE:
        per_variant = {}
        for name in variants:
            values = [dig(result["metrics"].get(name), *headline.path) for result in results]
            present = [value for value in values if value is not None]
            if present:
                mean, sd = mean_and_sd(present)
                per_variant[name] = {"values": values, "n": len(present), "mean": mean, "sd": sd}
        if per_variant:
            metrics[headline.key] = per_variant
    return {"seeds": labels, "metrics": metrics, "findings": _findings(results)}


def _findings(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each paired finding (``comparisons`` of the results files, the judge's win rates and mean rewards among
    them when a judge ran), in the order first met, with its difference per run."""
    by_run = [
        {(finding["metric"], finding["first"], finding["second"]): finding["difference"]
         for finding in result.get("comparisons", [])}
        for result in results
    ]
    keys = list(dict.fromkeys(key for found in by_run for key in found))
    findings = []
    for metric, first, second in keys:
        differences = [found.get((metric, first, second)) for found in by_run]
        same = all(d is not None and d > 0 for d in differences) or all(d is not None and d < 0 for d in differences)
        findings.append(
            {"metric": metric, "first": first, "second": second, "differences": differences, "same_direction": same}
        )
    return findings
