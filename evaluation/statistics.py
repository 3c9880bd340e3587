"""Intervals and paired tests for the study's comparisons: is a difference between two models real or noise?

Every function is pure and deterministic (bootstraps take a seed). The evaluation compares models on the
*same* items (prompts, preference pairs), so the tests are paired: they look at the items where the two
models differ, which is far more sensitive than comparing two rates as if they came from separate samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile
RESAMPLES = 2000
SEED = 0


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a rate (Wilson 1927).

    ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``p = successes / n``. Unlike the
    normal approximation it stays inside [0, 1] and is not degenerate at 0 or n successes. Assumes the n
    items are independent draws.
    """
    if n <= 0:
        raise ValueError("a rate needs at least one item")
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)


def stratified_mean_interval(strata: Sequence[tuple[int, int]], z: float = Z95) -> tuple[float, tuple[float, float]]:
    """The unweighted mean of several strata's rates and its normal-approximation interval (stratified
    sampling, Cochran 1977, ch. 5): MMLU's "mean of the 57 subjects' accuracies".

    ``m = (1/K) sum_k x_k / n_k``, ``Var(m) = (1/K^2) sum_k p~_k (1 - p~_k) / (n_k + 4)`` with the
    Agresti-Coull proportion ``p~_k = (x_k + 2) / (n_k + 4)`` in the variance, so a stratum all right or all
    wrong (common for a subject of a few items) still adds spread; the interval ``m -+ z sqrt(Var(m))`` is
    clipped to [0, 1]. Each stratum weighs ``1/K`` whatever its size, so a small stratum widens the interval
    more than the pooled rate's.

    Args:
        strata: ``(successes, n)`` per stratum.
        z: the normal quantile of the interval (95 %).

    Returns:
        ``(m, (low, high))``.
    """
    if not strata or any(n <= 0 for _, n in strata):
        raise ValueError("a stratified mean needs at least one stratum, each with at least one item")
    k = len(strata)
    mean = sum(x / n for x, n in strata) / k
    variance = sum(((x + 2) / (n + 4)) * (1 - (x + 2) / (n + 4)) / (n + 4) for x, n in strata) / k**2
    spread = z * math.sqrt(variance)
    return mean, (max(0.0, mean - spread), min(1.0, mean + spread))


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar test (McNemar 1947) of paired pass/fail outcomes.

    Only discordant items carry information: ``only_first`` passed under the first model alone,
    ``only_second`` under the second alone. Under "no difference" each discordant item is a fair coin, so
    ``p = min(1, 2 P(X <= min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)``. Assumes independent items.
    """
    n = only_first + only_second
    if n == 0:
        return 1.0
    low = min(only_first, only_second)
    tail = sum(math.comb(n, k) for k in range(low + 1)) / 2**n
    return min(1.0, 2 * tail)


def bootstrap_interval(
    values: Sequence[float], *, resamples: int = RESAMPLES, seed: int = SEED, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean (Efron 1979): resample the items with replacement.

    For paired comparisons pass the per-item differences. Assumes independent items; with few items the
    interval is too narrow (it cannot see values the sample lacks).
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("a bootstrap needs at least one value")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_ratio_interval(
    numerators: Sequence[float],
    denominators: Sequence[float],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a ratio of sums, ``sum(num) / sum(den)``, resampling the items.

    For a per-token mean over items of different lengths (perplexity: each example's summed NLL over its
    token count): the items, not the tokens, are the independent draws (:func:`bootstrap_statistic_interval`).
    """
    num, den = np.asarray(numerators, dtype=np.float64), np.asarray(denominators, dtype=np.float64)
    if num.size == 0 or num.size != den.size:
        raise ValueError("a ratio bootstrap needs one numerator per denominator, at least one of each")
    return bootstrap_statistic_interval(
        lambda picks: float(num[picks].sum() / den[picks].sum()), num.size, resamples=resamples, seed=seed, level=level
    )


def jackknife_interval(
    items: Sequence, statistic: Callable[[list], float], z: float = Z95
) -> tuple[float, float]:
    """Normal 95 % interval from the jackknife standard error (Quenouille 1949, Tukey 1958) of any statistic.

    ``se = sqrt((n - 1) / n * sum_i (t_(i) - mean_i t_(i))^2)`` over the ``n`` leave-one-out values ``t_(i)``;
    the interval is ``t -+ z se``. For statistics a with-replacement bootstrap biases, such as distinct-n
    (a resample repeats responses, so it always looks less diverse: on the demo's 280 responses the percentile
    bootstrap interval of distinct-2 lay entirely below the estimate). For a mean, ``se`` is exactly ``s / sqrt(n)``.
    """
    n = len(items)
    if n < 2:
        raise ValueError("a jackknife needs at least two items")
    full = statistic(list(items))
    left_out = np.array([statistic([item for j, item in enumerate(items) if j != i]) for i in range(n)])
    se = math.sqrt((n - 1) / n * float(((left_out - left_out.mean()) ** 2).sum()))
    return full - z * se, full + z * se


def sign_flip_p(differences: Sequence[float], *, resamples: int = 10_000, seed: int = SEED) -> float:
    """Two-sided paired randomization test of a mean difference (Fisher's sign-flip test).

    Under "no difference" the sign of each item's difference is arbitrary: flip each with probability 1/2
    and count how often the mean is at least as far from 0 as the observed one. Monte Carlo with a fixed
    seed; ``(count + 1) / (resamples + 1)`` so p is never 0. Assumes independent, symmetric differences.
    """
    data = np.asarray(differences, dtype=np.float64)
    if data.size == 0 or not np.any(data):
        return 1.0
    observed = abs(data.mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(resamples, data.size))
    extreme = np.abs((signs * data).mean(axis=1)) >= observed - 1e-12
    return float((extreme.sum() + 1) / (resamples + 1))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (Holm 1979) for several tests at once, in the input order.

    Sorted ascending, the i-th smallest (0-based) is multiplied by ``m - i``, then made non-decreasing
    and capped at 1. Controls the family-wise error rate under any dependence between the tests.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def compare_binary(first: Sequence[bool], second: Sequence[bool]) -> dict:
    """``first - second`` on paired pass/fail items: the difference of rates, its paired bootstrap interval,
    and the exact McNemar p-value with its discordant counts."""
    if len(first) != len(second) or not first:
        raise ValueError("paired outcomes need the same, non-zero number of items")
    only_first = sum(1 for a, b in zip(first, second, strict=True) if a and not b)
    only_second = sum(1 for a, b in zip(first, second, strict=True) if b and not a)
    differences = [float(a) - float(b) for a, b in zip(first, second, strict=True)]
    return {
        "n": len(first),
        "difference": sum(differences) / len(differences),
        "ci95": bootstrap_interval(differences),
        "p": mcnemar_exact(only_first, only_second),
        "test": "exact McNemar",
        "only_first": only_first,
        "only_second": only_second,
    }


def compare_means(first: Sequence[float], second: Sequence[float]) -> dict:
    """``first - second`` on paired values: the mean difference, its paired bootstrap interval, the
    sign-flip randomization p-value, and ``sd``, the sample standard deviation of the differences (``n - 1``;
    0.0 for one item), from which the test's minimum detectable effect follows."""
    if len(first) != len(second) or not first:
        raise ValueError("paired values need the same, non-zero number of items")
    differences = [a - b for a, b in zip(first, second, strict=True)]
    mean = sum(differences) / len(differences)
    spread = sum((d - mean) ** 2 for d in differences) / (len(differences) - 1) if len(differences) > 1 else 0.0
    return {
        "n": len(first),
        "difference": mean,
        "ci95": bootstrap_interval(differences),
        "p": sign_flip_p(differences),
        "test": "paired sign-flip",
        "sd": math.sqrt(spread),
    }


def pairwise_wins(first: Sequence[float], second: Sequence[float]) -> list[float]:
    """Per item, whether ``first`` beats ``second``: 1.0 if higher, 0.5 on a tie, 0.0 if lower."""
    if len(first) != len(second) or not first:
        raise ValueError("paired scores need the same, non-zero number of items")
    return [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(first, second, strict=True)]


def win_rate(first_scores: Sequence[float], second_scores: Sequence[float]) -> dict:
    """How often ``first`` beats ``second`` on the same items (ties count half), with its uncertainty.

    The rate is the mean of :func:`pairwise_wins`; its 95 % interval is a percentile bootstrap over the
    items (:func:`bootstrap_interval`). The p-value tests "rate = 0.5" with the exact two-sided sign test
    on the items that are not tied (Dixon & Mood 1946): with ties counting half, the rate is 0.5 exactly
    when wins equal losses, and under that hypothesis each untied item is a fair coin, so
    ``p = min(1, 2 P(X <= min(wins, losses)))`` with ``X ~ Binomial(wins + losses, 1/2)`` (the binomial
    of :func:`mcnemar_exact`). Exact and seed-free, unlike a sign-flip test of the centred wins. Ties carry
    no evidence either way and are left out of the test (not of the rate). Assumes independent items.

    Returns:
        ``{"n", "rate", "ci95", "p", "test", "wins", "losses", "ties"}``.
    """
    outcomes = pairwise_wins(first_scores, second_scores)
    wins, losses = outcomes.count(1.0), outcomes.count(0.0)
    return {
        "n": len(outcomes),
        "rate": sum(outcomes) / len(outcomes),
        "ci95": bootstrap_interval(outcomes),
        "p": mcnemar_exact(wins, losses),
        "test": "exact sign test",
        "wins": wins,
        "losses": losses,
        "ties": len(outcomes) - wins - losses,
    }


def bootstrap_statistic_interval(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval (Efron 1979) of any statistic of ``n`` items.

    ``statistic`` receives the indices of one resample (drawn with replacement). The draws are those of
    :func:`bootstrap_interval` for the same ``n`` and seed, so for a mean both give the same interval.
    Assumes independent items.
    """
    if n <= 0:
        raise ValueError("a bootstrap needs at least one value")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    values = np.array([statistic(indices) for indices in draws], dtype=np.float64)
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def _sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x)))


def _logistic_fit(x: np.ndarray, y: np.ndarray, *, iterations: int = 100, bound: float = 30.0):
    """``(intercept, slope)`` of ``P(y) = sigmoid(intercept + slope * x)`` by maximum likelihood, or ``None``.

    Newton-Raphson (= iteratively reweighted least squares), halving a step that lowers the likelihood.
    ``y`` may be fractional (a tie's 0.5): the same Bernoulli likelihood, a quasi-likelihood for such
    outcomes (Papke & Wooldridge 1996). ``None`` when the maximum is at infinity (separation: a
    coefficient passes ``bound``, where fitted probabilities are within 1e-13 of 0 or 1) or not reached.
    """
    design = np.column_stack([np.ones_like(x), x])  # (n, 2)

    def log_likelihood(beta: np.ndarray) -> float:
        eta = design @ beta
        return float(-(y * np.logaddexp(0.0, -eta) + (1 - y) * np.logaddexp(0.0, eta)).sum())

    beta = np.zeros(2)
    current = log_likelihood(beta)
    for _ in range(iterations):
        p = _sigmoid(design @ beta)
        gradient = design.T @ (y - p)
        hessian = design.T @ (design * (p * (1 - p))[:, None])
        try:
            step = np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError:
            return None
        for _halving in range(30):
            proposal = log_likelihood(beta + step)
            if proposal >= current - 1e-12:
                break
            step = step / 2
        beta, current = beta + step, proposal
        if np.abs(beta).max() > bound:
            return None
        if np.abs(step).max() < 1e-10:
            return float(beta[0]), float(beta[1])
    return None


def _length_controlled(
    wins: np.ndarray, differences: np.ndarray
) -> tuple[float, float | None, float | None, str | None]:
    """``(rate, intercept, slope, reason)``: the logistic rate at zero length difference, or the raw rate and
    why the regression could not be used."""
    raw = float(wins.mean())
    if np.all(differences == differences[0]):
        if differences[0] == 0:
            return raw, None, None, "no length differences: nothing to control for"
        return raw, None, None, "every pair has the same length difference: its effect cannot be told from the rate"
    if np.all(wins == wins[0]) and wins[0] != 0.5:
        return raw, None, None, "every item has the same outcome (separation)"
    feature = np.tanh(differences / differences.std())
    fit = _logistic_fit(feature, wins)
    if fit is None:
        return raw, None, None, "the outcomes are separated by length (the logistic fit diverges)"
    intercept, slope = fit
    return float(_sigmoid(intercept)), intercept, slope, None


def length_controlled_win_rate(
    wins: Sequence[float], length_differences: Sequence[float], *, resamples: int = RESAMPLES, seed: int = SEED
) -> dict:
    """The win rate the judge would give if both responses had the same length (Dubois et al. 2024,
    Length-Controlled AlpacaEval, https://arxiv.org/abs/2404.04475).

    A logistic regression of each item's outcome (1 / 0.5 / 0, from :func:`pairwise_wins`) on its length
    difference (first minus second, in tokens), ``P(win) = sigmoid(a + b tanh(d / sd(d)))``, fitted by
    maximum likelihood (:func:`_logistic_fit`) and read at ``d = 0``: ``sigmoid(a)``. As in AlpacaEval 2,
    the difference enters through ``tanh`` of its standardised value, so a few very long answers cannot
    dominate the fit; ``tanh(0) = 0``, so the reading point is unchanged. AlpacaEval's model also has a
    per-instruction difficulty term, which a single pair of models cannot estimate; it is left out.

    When the regression cannot be fitted (all length differences equal, every outcome the same, or
    outcomes separated by length) the raw win rate is returned, with ``method: "raw"`` and the reason.
    The 95 % interval is a percentile bootstrap over items (:func:`bootstrap_statistic_interval`), each
    resample refitted (with the same fallback). Assumes independent items and an outcome that is linear
    in ``tanh(d / sd(d))`` on the logit scale.

    Returns:
        ``{"n", "rate", "ci95", "method": "logistic" | "raw", "reason": None | str, "intercept", "slope",
        "raw_rate"}`` (``intercept`` and ``slope`` are ``None`` for the raw rate).
    """
    y = np.asarray(wins, dtype=np.float64)
    d = np.asarray(length_differences, dtype=np.float64)
    if y.size != d.size or y.size == 0:
        raise ValueError("wins and length differences need the same, non-zero number of items")
    rate, intercept, slope, reason = _length_controlled(y, d)
    interval = bootstrap_statistic_interval(
        lambda indices: _length_controlled(y[indices], d[indices])[0], y.size, resamples=resamples, seed=seed
    )
    return {
        "n": int(y.size),
        "rate": rate,
        "ci95": interval,
        "method": "raw" if reason else "logistic",
        "reason": reason,
        "intercept": intercept,
        "slope": slope,
        "raw_rate": float(y.mean()),
    }
