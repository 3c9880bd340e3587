"""Evaluation metrics: pure functions of numbers, strings and rows, no model.

Rates and means of an empty list raise ``ValueError``: an evaluation over nothing is a bug in the
caller, and a silent 0.0 would read as a result.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from evaluation.checkers import is_refusal

HARMFUL_CHECK = "refusal"
"""Prompts checked for a refusal: the model should refuse them (the refusal rate)."""
BENIGN_CHECK = "helpful"
"""Prompts checked for help: a refusal there is an over-refusal."""


def perplexity(total_nll: float, total_tokens: int) -> float:
    """``exp(total_nll / total_tokens)``: the exponential of the mean negative log-likelihood (nats).

    Args:
        total_nll: the summed negative log-likelihood of the scored tokens, in nats.
        total_tokens: how many tokens were scored.

    Returns:
        The perplexity; ``inf`` when the mean is too large to exponentiate.

    Raises:
        ValueError: no tokens were scored.
    """
    if total_tokens <= 0:
        raise ValueError(
            f"Perplexity needs at least one scored token, got total_tokens={total_tokens}: "
            "check that the evaluation texts are not empty or entirely masked."
        )
    try:
        return math.exp(total_nll / total_tokens)
    except OverflowError:
        return math.inf


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct-n (Li et al. 2016): ``unique n-grams / total n-grams`` over all texts.

    Texts are split on whitespace; n-grams do not cross from one text to the next.

    Returns:
        The ratio in [0, 1]; 0.0 when no text has ``n`` tokens.

    Raises:
        ValueError: ``n`` is below 1.
    """
    if n < 1:
        raise ValueError(f"distinct_n needs n >= 1, got {n}.")
    ngrams = []
    for text in texts:
        tokens = text.split()
        ngrams.extend(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return len(set(ngrams)) / len(ngrams) if ngrams else 0.0


def refusal_rate(texts: Sequence[str]) -> float:
    """``refusals / texts``, a refusal as judged by :func:`evaluation.checkers.is_refusal`."""
    return _mean([float(is_refusal(text)) for text in texts], "refusal_rate")


def mean_length(texts: Sequence[str]) -> float:
    """``sum(words) / texts``: the mean length in whitespace-separated words."""
    return _mean([float(len(text.split())) for text in texts], "mean_length")


def preference_accuracy(margins: Sequence[float]) -> float:
    """``count(margin > 0) / margins``: how often the chosen response scores above the rejected one.

    A margin is ``reward_chosen - reward_rejected`` (for DPO, the difference of the implicit rewards
    ``beta * (log pi(y|x) - log pi_ref(y|x))``); a tie counts as wrong.
    """
    return _mean([float(margin > 0) for margin in margins], "preference_accuracy")


def logp_margins(chosen_logps: Sequence[float], rejected_logps: Sequence[float]) -> list[float]:
    """``log p(y_c | x) - log p(y_r | x)`` per pair: the model's own preference, no reference.

    Raises:
        ValueError: the two lists differ in length.
    """
    _same_length(chosen_logps, rejected_logps)
    return [chosen - rejected for chosen, rejected in zip(chosen_logps, rejected_logps, strict=True)]


def implicit_reward_margins(
    policy_chosen_logps: Sequence[float],
    policy_rejected_logps: Sequence[float],
    reference_chosen_logps: Sequence[float],
    reference_rejected_logps: Sequence[float],
    beta: float,
) -> list[float]:
    """DPO implicit reward margins (Rafailov et al. 2023), per pair.

    ``r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))`` and the margin is ``r(x, y_c) - r(x, y_r)``,
    the quantity DPO's training metric ``rewards/margins`` averages.

    Raises:
        ValueError: the lists differ in length.
    """
    for other in (policy_rejected_logps, reference_chosen_logps, reference_rejected_logps):
        _same_length(policy_chosen_logps, other)
    return [
        beta * ((pc - rc) - (pr - rr))
        for pc, pr, rc, rr in zip(
            policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, strict=True
        )
    ]


def mean(values: Sequence[float], metric: str = "mean") -> float:
    """The arithmetic mean; ``metric`` names the quantity in the error of an empty list."""
    return _mean([float(value) for value in values], metric)


def pass_rate(results: Sequence[bool]) -> float:
    """``passed / checked``: the fraction of responses that passed their check."""
    return _mean([float(result) for result in results], "pass_rate")


def grouped(values: Sequence[Any], categories: Sequence[str | None]) -> dict[str, list[Any]]:
    """Values grouped by category, categories sorted; rows without a category are left out."""
    groups: dict[str, list[Any]] = defaultdict(list)
    for value, category in zip(values, categories, strict=True):
        if category is not None:
            groups[category].append(value)
    return dict(sorted(groups.items()))


def margin_summary(margins: list[float], categories: list[str | None]) -> dict[str, Any]:
    """Accuracy (margin > 0) and mean margin, overall and per category."""

    def summary(values: list[float]) -> dict[str, Any]:
        return {"n": len(values), "accuracy": preference_accuracy(values), "mean_margin": mean(values, "mean_margin")}

    return {
        **summary(margins),
        "per_category": {category: summary(values) for category, values in grouped(margins, categories).items()},
    }


def check_kinds(prompts: list[dict]) -> list[str | None]:
    """Each prompt's check type (``None`` for a prompt without a check)."""
    return [(prompt.get("check") or {}).get("type") for prompt in prompts]


def generation_metrics(prompts: list[dict], responses: list[dict]) -> dict[str, Any]:
    """Refusal, over-refusal, length and distinct-2 of one variant's responses (one per prompt)."""
    texts = [response["text"] for response in responses]
    kinds = check_kinds(prompts)
    harmful = [text for text, kind in zip(texts, kinds, strict=True) if kind == HARMFUL_CHECK]
    benign = [text for text, kind in zip(texts, kinds, strict=True) if kind == BENIGN_CHECK]
    return {
        "refusal_rate": refusal_rate(harmful) if harmful else None,
        "over_refusal_rate": refusal_rate(benign) if benign else None,
        "harmful_prompts": len(harmful),
        "benign_prompts": len(benign),
        "mean_response_tokens": mean([r["response_tokens"] for r in responses], "mean_response_tokens"),
        "mean_response_words": mean_length(texts),
        "distinct_2": distinct_n(texts, 2),
        "finished_rate": mean([float(r["finished"]) for r in responses], "finished_rate"),
    }


def checked_score(prompts: list[dict], responses: list[dict]) -> dict[str, Any] | None:
    """Pass rate of the prompts' checks, overall and per category (``None`` when no prompt has a check)."""
    checked = [(p["category"], r["passed"]) for p, r in zip(prompts, responses, strict=True) if r["passed"] is not None]
    if not checked:
        return None
    by_category = grouped([passed for _, passed in checked], [category for category, _ in checked])
    return {
        "overall": pass_rate([passed for _, passed in checked]),
        "n": len(checked),
        "per_category": {category: pass_rate(values) for category, values in by_category.items()},
    }


def _same_length(first: Sequence[float], second: Sequence[float]) -> None:
    if len(first) != len(second):
        raise ValueError(f"Paired log-prob lists differ in length: {len(first)} vs {len(second)}.")


def _mean(values: list[float], metric: str) -> float:
    if not values:
        raise ValueError(f"{metric} of an empty list is undefined: there was nothing to evaluate.")
    return sum(values) / len(values)
