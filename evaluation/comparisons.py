"""The study's comparisons with their uncertainty: per-variant intervals and paired tests between variants.

Built from per-item outcomes that the results file also stores (each held-out pair's log-prob margin per
variant, each prompt's pass / fail per variant), so every number here can be recomputed from that file. The
reward-model judge's findings (:mod:`evaluation.judge_stats`) join the same family of tests: Holm's
adjustment runs once over all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

from evaluation import statistics as stats
from evaluation.metrics import distinct_n, grouped, perplexity

# (first, second): the report states "first vs second"; the study's question is the middle one.
COMPARISONS: tuple[tuple[str, str], ...] = (("sft", "base"), ("sft_dpo", "sft"), ("sft_dpo", "base"))
ALPHA = 0.05


def variant_intervals(
    margins: list[float],
    passed: list[bool],
    refusals: dict[str, list[bool]],
    *,
    implicit_margins: Sequence[float] = (),
    nll: Sequence[tuple[float, int]] = (),
    responses: Sequence[dict] = (),
) -> dict:
    """95 % intervals of one variant's rates (Wilson) and means (bootstrap over the items behind them).

    Args:
        margins: each held-out pair's ``log p(chosen) - log p(rejected)`` (empty: no pairs).
        passed: each checked prompt's outcome (empty: no checks).
        refusals: ``{"refusal_rate": [...harmful prompts refused], "over_refusal_rate": [...benign refused]}``.
        implicit_margins: each pair's implicit-reward margin against the reference (empty: none).
        nll: each held-out instruction response's ``(summed NLL, tokens)``: the perplexity's interval is
            ``exp`` of a ratio bootstrap over the examples (tokens of one example are not independent).
        responses: the generated responses (``text``, ``response_tokens``, ``finished``), one per prompt:
            intervals of the mean length (bootstrap), the EOS rate (Wilson) and distinct-2 (jackknife).
    """
    intervals: dict[str, tuple[float, float]] = {}
    if margins:
        intervals["preference_accuracy"] = stats.wilson_interval(sum(m > 0 for m in margins), len(margins))
        intervals["mean_margin"] = stats.bootstrap_interval(margins)
    if implicit_margins:
        wins = sum(m > 0 for m in implicit_margins)
        intervals["implicit_reward_accuracy"] = stats.wilson_interval(wins, len(implicit_margins))
        intervals["implicit_reward_margin"] = stats.bootstrap_interval(implicit_margins)
    if nll:
        low, high = stats.bootstrap_ratio_interval([n for n, _ in nll], [t for _, t in nll])
        intervals["perplexity"] = (perplexity(low, 1), perplexity(high, 1))
    if passed:
        intervals["checked_score"] = stats.wilson_interval(sum(passed), len(passed))
    for name, outcomes in refusals.items():
        if outcomes:
            intervals[name] = stats.wilson_interval(sum(outcomes), len(outcomes))
    if responses:
        texts = [r["text"] for r in responses]
        intervals["mean_response_tokens"] = stats.bootstrap_interval([r["response_tokens"] for r in responses])
        intervals["finished_rate"] = stats.wilson_interval(sum(bool(r["finished"]) for r in responses), len(texts))
        if len(texts) > 1:  # a jackknife: a bootstrap's repeated responses would bias distinct-2 down
            low, high = stats.jackknife_interval(texts, lambda kept: distinct_n(kept, 2))
            intervals["distinct_2"] = (max(0.0, low), min(1.0, high))
    return intervals


def category_intervals(outcomes: list[bool], categories: list[str | None]) -> dict[str, tuple[float, float]]:
    """Wilson 95 % interval of a rate in each category, categories sorted (items without one are left out)."""
    by_category = grouped(outcomes, categories)
    return {category: stats.wilson_interval(sum(values), len(values)) for category, values in by_category.items()}


def paired_comparisons(
    margins: dict[str, list[float]], passed: dict[str, list[bool]], judged: Sequence[dict] = ()
) -> list[dict]:
    """Each comparison of :data:`COMPARISONS` on preference accuracy, mean margin and checked score, then the
    judge's findings, with Holm's adjustment once across all of them (the report's family of findings).

    Args:
        margins: per variant, each held-out pair's log-prob margin (the same pairs in the same order).
        passed: per variant, each checked prompt's outcome (the same prompts in the same order).
        judged: the reward-model judge's findings (``judge_findings(...)["findings"]`` of
            :mod:`evaluation.judge_stats`: win rates and mean rewards), without Holm's keys; empty without
            a judge.

    Returns:
        The findings in that order, each with ``p_holm`` (adjusted over the whole list) and ``significant``
        (``p_holm < ALPHA``).
    """
    found = []
    for first, second in COMPARISONS:
        if first in margins and second in margins and margins[first]:
            correct = {v: [m > 0 for m in margins[v]] for v in (first, second)}
            found.append(
                {"metric": "preference_accuracy", **stats.compare_binary(correct[first], correct[second])}
                | {"first": first, "second": second}
            )
            found.append(
                {"metric": "mean_margin", **stats.compare_means(margins[first], margins[second])}
                | {"first": first, "second": second}
            )
        if first in passed and second in passed and passed[first]:
            found.append(
                {"metric": "checked_score", **stats.compare_binary(passed[first], passed[second])}
                | {"first": first, "second": second}
            )
    return holm_family([*found, *(dict(finding) for finding in judged)])


def targeted_findings(
    passed: dict[str, list[bool]],
    checked_categories: Sequence[str | None],
    targeted: Sequence[str],
    judge_scores: dict[str, list[float]] | None = None,
    categories: Sequence[str | None] = (),
) -> list[dict]:
    """SFT+DPO vs SFT on the prompts of the categories the preference pairs target, pooled: the checked score
    (exact McNemar) and, with a judge, its win rate (exact sign test). The study's primary question, asked
    where DPO is meant to act, so that a gain there is not diluted (or hidden) by the other categories.

    Args:
        passed: per variant, each checked prompt's outcome (the order of ``checked_categories``).
        checked_categories: the category of each checked prompt.
        targeted: the categories the pairs target (``targeted_categories`` in the evaluation config).
        judge_scores: per variant, the judge's reward of every prompt's response (order of ``categories``).
        categories: the category of every prompt.

    Returns:
        Findings shaped like :func:`paired_comparisons`' (without Holm's keys), each with ``categories``.
    """
    from evaluation.judge_stats import win_rate_finding

    first, second = "sft_dpo", "sft"
    chosen = set(targeted)
    found: list[dict] = []
    keep = [category in chosen for category in checked_categories]
    if targeted and first in passed and second in passed and any(keep):
        subset = {name: [ok for ok, kept in zip(passed[name], keep, strict=True) if kept] for name in (first, second)}
        found.append(
            {"metric": "checked_score_targeted", **stats.compare_binary(subset[first], subset[second])}
            | {"first": first, "second": second, "categories": list(targeted)}
        )
    keep = [category in chosen for category in categories]
    if targeted and judge_scores and first in judge_scores and second in judge_scores and any(keep):
        subset = {n: [v for v, kept in zip(judge_scores[n], keep, strict=True) if kept] for n in (first, second)}
        rate = stats.win_rate(subset[first], subset[second])
        found.append(
            win_rate_finding(first, second, rate) | {"metric": "judge_win_rate_targeted", "categories": list(targeted)}
        )
    return found


def holm_family(found: list[dict]) -> list[dict]:
    """``found`` with ``p_holm`` and ``significant`` set on every finding: Holm's adjustment of all their
    ``p`` together, one family (:func:`evaluation.statistics.holm`)."""
    for finding, adjusted in zip(found, stats.holm([f["p"] for f in found]), strict=True):
        finding["p_holm"] = adjusted
        finding["significant"] = adjusted < ALPHA
    return found
