"""Intervals and paired tests for the study's comparisons: is a difference between two models real or noise?

Every function is pure and deterministic (bootstraps take a seed). The evaluation compares models on the
*same* items (prompts, preference pairs), so the tests are paired: they look at the items where the two
models differ, which is far more sensitive than comparing two rates as if they came from separate samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
    """``first - second`` on paired values: the mean difference, its paired bootstrap interval and the
    sign-flip randomization p-value."""
    if len(first) != len(second) or not first:
        raise ValueError("paired values need the same, non-zero number of items")
    differences = [a - b for a, b in zip(first, second, strict=True)]
    return {
        "n": len(first),
        "difference": sum(differences) / len(differences),
        "ci95": bootstrap_interval(differences),
        "p": sign_flip_p(differences),
        "test": "paired sign-flip",
    }
