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


def pass_rate(results: Sequence[bool]) -> float:
    """``passed / checked``: the fraction of responses that passed their check."""
    return _mean([float(result) for result in results], "pass_rate")


def _mean(values: list[float], metric: str) -> float:
    if not values:
        raise ValueError(f"{metric} of an empty list is undefined: there was nothing to evaluate.")
    return sum(values) / len(values)
