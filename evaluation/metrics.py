"""Evaluation metrics: pure functions of numbers and strings, no model.

Rates and means of an empty list raise ``ValueError``: an evaluation over nothing is a bug in the
caller, and a silent 0.0 would read as a result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from evaluation.checkers import is_refusal


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


def _same_length(first: Sequence[float], second: Sequence[float]) -> None:
    if len(first) != len(second):
        raise ValueError(f"Paired log-prob lists differ in length: {len(first)} vs {len(second)}.")


def _mean(values: list[float], metric: str) -> float:
    if not values:
        raise ValueError(f"{metric} of an empty list is undefined: there was nothing to evaluate.")
    return sum(values) / len(values)
