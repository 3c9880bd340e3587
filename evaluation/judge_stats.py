"""The reward-model judge's findings: mean rewards, win rates and length-controlled win rates between variants.

Built from per-prompt data the results file also stores (each prompt's reward and response length per
variant), so every number can be recomputed from that file. The findings have the shape of
:func:`evaluation.comparisons.paired_comparisons`'s entries, to join the report's family of tests.
"""

from __future__ import annotations

from collections.abc import Sequence

from evaluation import statistics as stats
from evaluation.comparisons import COMPARISONS


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def variant_summary(scores: list[float], lengths: list[int], categories: Sequence[str | None] | None) -> dict:
    """One variant's mean reward and mean response length with bootstrap intervals, and its mean reward
    per category (prompts without a category are left out of that split).

    Returns:
        ``{"n", "mean_reward", "ci95", "mean_length", "length_ci95", "per_category": {category: {"n",
        "mean_reward", "ci95"}}}``.
    """
    per_category: dict[str, list[float]] = {}
    for category, score in zip(categories or [None] * len(scores), scores, strict=True):
        if category is not None:
            per_category.setdefault(category, []).append(score)
    return {
        "n": len(scores),
        "mean_reward": _mean(scores),
        "ci95": stats.bootstrap_interval(scores),
        "mean_length": _mean(lengths),
        "length_ci95": stats.bootstrap_interval(lengths),
        "per_category": {
            category: {"n": len(values), "mean_reward": _mean(values), "ci95": stats.bootstrap_interval(values)}
            for category, values in sorted(per_category.items())
        },
    }


def win_rate_finding(first: str, second: str, rate: dict) -> dict:
    """A :func:`~evaluation.statistics.win_rate` as a finding: the difference is the rate minus one half.

    So that, like every other finding, 0 means "no difference", the sign says who is ahead, and the interval
    is read against 0: "+12.5 points" is a 62.5 % win rate. The rate itself stays under ``rate``.
    """
    low, high = rate["ci95"]
    return {
        "metric": "judge_win_rate",
        "n": rate["n"],
        "difference": rate["rate"] - 0.5,
        "ci95": (low - 0.5, high - 0.5),
        "p": rate["p"],
        "test": rate["test"],
        "rate": rate["rate"],
        "wins": rate["wins"],
        "losses": rate["losses"],
        "ties": rate["ties"],
        "first": first,
        "second": second,
    }


def judge_findings(
    scores: dict[str, list[float]],
    lengths: dict[str, list[int]],
    categories: Sequence[str | None] | None = None,
) -> dict:
    """Everything the report says about the judge, for each comparison of
    :data:`~evaluation.comparisons.COMPARISONS` whose two variants were judged.

    Args:
        scores: per variant, the judge's reward of its response to each prompt (the same prompts in the
            same order for every variant).
        lengths: per variant, each response's length in tokens (same order).
        categories: each prompt's category (``None``: none), for the per-category mean rewards.

    Returns:
        ``{"variants": {variant: variant_summary(...)}, "pairs": [{"first", "second", "win_rate":
        win_rate(...), "length_controlled": length_controlled_win_rate(...), "mean_length_difference"}],
        "findings": [...]}``. ``findings`` holds, per pair, a ``judge_win_rate`` entry
        (:func:`win_rate_finding`) and a ``mean_reward`` entry (the paired difference of rewards,
        :func:`~evaluation.statistics.compare_means`), with the keys of ``paired_comparisons``' entries
        (``metric, n, difference, ci95, p, test, first, second``) but without ``p_holm`` / ``significant``:
        Holm's adjustment belongs to the report's whole family, so add these findings to it before adjusting.

    Raises:
        ValueError: variants with different numbers of prompts, or lengths / categories that do not match.
    """
    sizes = {len(values) for values in scores.values()} | {len(lengths.get(name, [])) for name in scores}
    if categories is not None:
        sizes.add(len(categories))
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(
            "judge findings need, for every judged variant, one reward and one length per prompt (and one "
            f"category per prompt when given); got sizes {sorted(sizes)}."
        )
    variants = {name: variant_summary(scores[name], lengths[name], categories) for name in scores}
    pairs: list[dict] = []
    findings: list[dict] = []
    for first, second in COMPARISONS:
        if first not in scores or second not in scores:
            continue
        rate = stats.win_rate(scores[first], scores[second])
        differences = [a - b for a, b in zip(lengths[first], lengths[second], strict=True)]
        pairs.append(
            {
                "first": first,
                "second": second,
                "win_rate": rate,
                "length_controlled": stats.length_controlled_win_rate(
                    stats.pairwise_wins(scores[first], scores[second]), differences
                ),
                "mean_length_difference": _mean(differences),
            }
        )
        findings.append(win_rate_finding(first, second, rate))
        findings.append(
            {"metric": "mean_reward", **stats.compare_means(scores[first], scores[second])}
            | {"first": first, "second": second}
        )
    return {"variants": variants, "pairs": pairs, "findings": findings}
