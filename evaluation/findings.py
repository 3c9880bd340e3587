"""The statistics step: every per-variant number with its 95 % interval, and the paired findings between variants.

Built from the per-item outcomes the results file also stores (each held-out pair's log-prob margin per
variant, each prompt's pass / fail, reward and response length per variant), so every number here can be
recomputed from that file. :func:`study_findings` runs the whole step; the functions after it, in the order
it calls them, are its parts: a variant's metrics and their intervals (Wilson for rates, bootstrap for
means), the reward-model judge's mean rewards and win rates, the paired comparisons of :data:`COMPARISONS`,
the targeted categories' pooled tests, and Holm's adjustment, once over all the findings (one family).
The tests themselves are the pure functions of :mod:`evaluation.statistics`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from evaluation import metrics, power
from evaluation import statistics as stats
from evaluation.scoring import VariantOutput

# (first, second): the report states "first vs second"; the study's question is the middle one.
COMPARISONS: tuple[tuple[str, str], ...] = (("sft", "base"), ("sft_dpo", "sft"), ("sft_dpo", "base"))
"""The study's comparisons, ``(first, second)``: is ``first`` better than ``second``."""


def comparisons_of(variants: Iterable[str]) -> list[tuple[str, str]]:
    """:data:`COMPARISONS`, then each method of the methods study (a variant ``sft_<method>`` other than these)
    against SFT and against SFT+DPO: the question its users ask is whether it beats DPO."""
    methods = [name for name in dict.fromkeys(variants) if name not in ("base", "sft", "sft_dpo")]
    return [*COMPARISONS, *((method, other) for method in methods for other in ("sft", "sft_dpo"))]
ALPHA = 0.05
REFERENCE_VARIANT = "sft"
"""The implicit reward of every other variant is measured against this one (DPO's reference)."""


@dataclass
class Findings:
    """What the statistics step makes of the variants' outputs (and the judge's scores).

    Attributes:
        margins: per variant, each held-out pair's ``log p(chosen) - log p(rejected)`` (pairs in order).
        implicit_margins: per variant but the reference, each pair's implicit-reward margin against
            :data:`REFERENCE_VARIANT`.
        metrics: per variant, the results file's ``metrics`` entry (:func:`variant_metrics`, with the
            judge's summary under ``judge`` when a judge ran).
        comparisons: the paired findings, Holm-adjusted as one family (:func:`paired_comparisons`).
        judge_pairs: the judge's win rates between variants (``None``: no judge).
    """

    margins: dict[str, list[float]]
    implicit_margins: dict[str, list[float]]
    metrics: dict[str, dict[str, Any]]
    comparisons: list[dict]
    judge_pairs: list[dict] | None = None


def study_findings(
    prompts: list[dict],
    pairs: list[dict],
    outputs: dict[str, VariantOutput],
    beta: float,
    num_examples: int,
    judge_scores: dict[str, list[float]] | None = None,
    targeted: Sequence[str] = (),
    extra: Sequence[dict] = (),
) -> Findings:
    """The statistics of one evaluation: each variant's metrics with their intervals, then the findings.

    Args:
        prompts: the prompt rows, in order; ``outputs[v].responses`` follow the same order.
        pairs: the held-out preference pairs, in the order of ``outputs[v].pair_logps``.
        outputs: per variant, in the order the report shows them.
        beta: DPO's beta of the implicit reward.
        num_examples: held-out instruction examples behind the perplexity.
        judge_scores: per variant, a judge's score of each response (``None``: no judge): summarised per
            variant (``metrics[v]["judge"]``), compared between variants (``judge_pairs``) and tested beside
            the other findings.
        targeted: the categories the preference pairs target: SFT+DPO vs SFT on just their prompts
            (:func:`targeted_findings`) joins the family.
        extra: more findings, without Holm's keys, tested in the same family (the public benchmarks':
            :func:`evaluation.benchmark_stats.benchmark_findings`).
    """
    pair_categories = [pair["category"] for pair in pairs]
    margins = {name: metrics.logp_margins(*o.pair_logps) for name, o in outputs.items() if o.pair_logps is not None}
    implicit = {
        name: metrics.implicit_reward_margins(*outputs[name].pair_logps, *outputs[REFERENCE_VARIANT].pair_logps, beta)
        for name in margins
        if REFERENCE_VARIANT in margins and name != REFERENCE_VARIANT
    }
    per_model = {
        name: variant_metrics(
            output,
            prompts,
            pair_categories,
            margins.get(name),
            {"reference": REFERENCE_VARIANT, "beta": beta, "margins": implicit[name]} if name in implicit else None,
            num_examples,
        )
        for name, output in outputs.items()
    }
    judged = None
    if judge_scores is not None:
        lengths = {name: [r["response_tokens"] for r in outputs[name].responses] for name in judge_scores}
        judged = judge_findings(judge_scores, lengths, [row["category"] for row in prompts])
        for name, summary in judged["variants"].items():
            per_model[name]["judge"] = summary
    passed = {name: [r["passed"] for r in o.responses if r["passed"] is not None] for name, o in outputs.items()}
    first = next(iter(outputs.values()))
    checked_categories = [
        row["category"] for row, r in zip(prompts, first.responses, strict=True) if r["passed"] is not None
    ]
    targeted_found = targeted_findings(
        passed, checked_categories, targeted, judge_scores, [row["category"] for row in prompts]
    )
    comparisons = paired_comparisons(
        margins, passed, [*(judged["findings"] if judged else ()), *targeted_found, *extra]
    )
    return Findings(margins, implicit, per_model, comparisons, judged["pairs"] if judged else None)


def variant_metrics(
    output: VariantOutput,
    prompts: list[dict],
    pair_categories: list[str | None],
    margins: list[float] | None,
    implicit: dict[str, Any] | None,
    num_examples: int,
) -> dict[str, Any]:
    """One variant's ``metrics`` entry: every rate and mean, overall and per category, with 95 % intervals.

    Args:
        margins: its log-prob margin per held-out pair (``None``: no pairs were scored).
        implicit: ``{reference, beta, margins}`` of its implicit reward (``None``: it is the reference, or
            the reference was not scored).
    """
    responses = output.responses
    result: dict[str, Any] = {"seconds": round(output.seconds, 1)}
    if margins is not None:
        result["preference"] = metrics.margin_summary(margins, pair_categories)
        result["implicit_reward"] = None
        if implicit is not None:
            result["implicit_reward"] = {
                "reference": implicit["reference"],
                "beta": implicit["beta"],
                **metrics.margin_summary(implicit["margins"], pair_categories),
            }
    if output.nll:
        total_nll, total_tokens = sum(nll for nll, _ in output.nll), sum(tokens for _, tokens in output.nll)
        result["perplexity"] = {
            "value": metrics.perplexity(total_nll, total_tokens),
            "tokens": total_tokens,
            "examples": num_examples,
        }
    result["generation"] = metrics.generation_metrics(prompts, responses)
    result["checked_score"] = metrics.checked_score(prompts, responses)
    kinds = metrics.check_kinds(prompts)
    refusals = {
        name: [r["refusal"] for r, kind in zip(responses, kinds, strict=True) if kind == check]
        for name, check in (("refusal_rate", metrics.HARMFUL_CHECK), ("over_refusal_rate", metrics.BENIGN_CHECK))
    }
    checked = [(p["category"], r["passed"]) for p, r in zip(prompts, responses, strict=True) if r["passed"] is not None]
    passed = [outcome for _, outcome in checked]
    result["ci95"] = variant_intervals(
        margins or [],
        passed,
        refusals,
        implicit_margins=implicit["margins"] if implicit is not None else (),
        nll=output.nll or (),
        responses=responses,
    )
    per_category = {
        "checked_score": category_intervals(passed, [category for category, _ in checked]),
        "preference_accuracy": category_intervals([m > 0 for m in margins or []], pair_categories),
    }
    result["ci95_per_category"] = {name: found for name, found in per_category.items() if found}
    return result


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
        intervals["perplexity"] = (metrics.perplexity(low, 1), metrics.perplexity(high, 1))
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
            low, high = stats.jackknife_interval(texts, lambda kept: metrics.distinct_n(kept, 2))
            intervals["distinct_2"] = (max(0.0, low), min(1.0, high))
    return intervals


def category_intervals(outcomes: list[bool], categories: list[str | None]) -> dict[str, tuple[float, float]]:
    """Wilson 95 % interval of a rate in each category, categories sorted (items without one are left out)."""
    by_category = metrics.grouped(outcomes, categories)
    return {category: stats.wilson_interval(sum(values), len(values)) for category, values in by_category.items()}


def judge_findings(
    scores: dict[str, list[float]],
    lengths: dict[str, list[int]],
    categories: Sequence[str | None] | None = None,
) -> dict:
    """Everything the report says about the judge, for each comparison of :func:`comparisons_of` whose two
    variants were judged.

    Args:
        scores: per variant, the judge's reward of its response to each prompt (the same prompts in the
            same order for every variant).
        lengths: per variant, each response's length in tokens (same order).
        categories: each prompt's category (``None``: none), for the per-category mean rewards.

    Returns:
        ``{"variants": {variant: judge_summary(...)}, "pairs": [{"first", "second", "win_rate":
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
    variants = {name: judge_summary(scores[name], lengths[name], categories) for name in scores}
    pairs: list[dict] = []
    findings: list[dict] = []
    for first, second in comparisons_of(scores):
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
                "mean_length_difference": metrics.mean(differences),
            }
        )
        findings.append(win_rate_finding(first, second, rate))
        findings.append(
            {"metric": "mean_reward", **stats.compare_means(scores[first], scores[second])}
            | {"first": first, "second": second}
        )
    return {"variants": variants, "pairs": pairs, "findings": findings}


def judge_summary(scores: list[float], lengths: list[int], categories: Sequence[str | None] | None) -> dict:
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
        "mean_reward": metrics.mean(scores),
        "ci95": stats.bootstrap_interval(scores),
        "mean_length": metrics.mean(lengths),
        "length_ci95": stats.bootstrap_interval(lengths),
        "per_category": {
            category: {"n": len(values), "mean_reward": metrics.mean(values), "ci95": stats.bootstrap_interval(values)}
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


def paired_comparisons(
    margins: dict[str, list[float]], passed: dict[str, list[bool]], judged: Sequence[dict] = ()
) -> list[dict]:
    """Each comparison of :func:`comparisons_of` on preference accuracy, mean margin and checked score, then the
    judge's findings, with Holm's adjustment once across all of them (the report's family of findings).

    Args:
        margins: per variant, each held-out pair's log-prob margin (the same pairs in the same order).
        passed: per variant, each checked prompt's outcome (the same prompts in the same order).
        judged: the reward-model judge's findings (``judge_findings(...)["findings"]``: win rates and mean
            rewards) and any other findings to test in the same family, without Holm's keys; empty: none.

    Returns:
        The findings in that order, each with ``p_holm`` (adjusted over the whole list) and ``significant``
        (``p_holm < ALPHA``).
    """
    found = []
    for first, second in comparisons_of([*margins, *passed]):
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


def holm_family(found: list[dict]) -> list[dict]:
    """``found`` with ``p_holm`` and ``significant`` set on every finding: Holm's adjustment of all their
    ``p`` together, one family (:func:`evaluation.statistics.holm`); and with its power (:func:`with_power`)."""
    for finding, adjusted in zip(found, stats.holm([f["p"] for f in found]), strict=True):
        finding["p_holm"] = adjusted
        finding["significant"] = adjusted < ALPHA
        with_power(finding)
    return found


def with_power(finding: dict) -> dict:
    """Set ``mde`` on a finding: the smallest true difference its test would find four times in five at
    alpha 0.05 (before Holm), for its ``n`` and the spread its own data showed (:mod:`evaluation.power`).

    * exact McNemar (pass / fail items): :func:`~evaluation.power.mcnemar_mde` at the observed discordance
      (the share of items where exactly one variant passed), also set as ``discordance``;
    * paired sign-flip (means): :func:`~evaluation.power.paired_mean_mde` at the observed ``sd`` of the
      differences, in the metric's own unit;
    * exact sign test (win rates): :func:`~evaluation.power.win_rate_mde` on the untied items, in rate points
      like the finding's ``difference`` (the rate minus one half).

    ``mde`` is ``None`` where no difference is detectable at this n (no discordant or untied item, too few
    items); a finding from another test is left without one.
    """
    test, n = finding.get("test"), finding.get("n")
    mde: float | None = None
    if test == "exact McNemar" and "only_first" in finding:
        finding["discordance"] = (finding["only_first"] + finding["only_second"]) / n
        mde = power.mcnemar_mde(n, finding["discordance"])
    elif test == "paired sign-flip" and "sd" in finding:
        mde = power.paired_mean_mde(n, finding["sd"])
    elif test == "exact sign test" and "wins" in finding:
        untied = finding["wins"] + finding["losses"]
        mde = power.win_rate_mde(untied, tied=finding["ties"]) if untied else math.inf
    else:
        return finding
    finding["mde"] = mde if math.isfinite(mde) else None
    return finding
