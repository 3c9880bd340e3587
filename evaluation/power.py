"""Power up front: the smallest effect each of the study's findings can detect, given its number of items.

The minimum detectable effect (MDE) is the true difference that a two-sided test at level ``alpha`` finds
(p < alpha) with probability ``power`` (80 % by convention, Cohen 1988). A finding whose MDE exceeds any
plausible effect of DPO cannot answer its question, whatever its p-value turns out to be; the report prints
the MDE beside each finding so that a null result is read for what it is.

One function per kind of finding (:mod:`evaluation.statistics` holds the tests):

* paired pass/fail, exact McNemar: :func:`mcnemar_mde` (Connor 1987's sample size, solved for the effect);
* paired means, sign-flip test / paired bootstrap: :func:`paired_mean_mde`;
* a win rate against 0.5, exact sign test on the untied items: :func:`win_rate_mde`;
* one rate's precision, the Wilson interval: :func:`rate_half_width`;
* the Holm family's worst case (its smallest p-value is compared with ``alpha / m``): :func:`holm_worst_case_alpha`,
  to pass as ``alpha`` to any of the above.

All are normal approximations to the exact or randomization tests the study runs: close for tens of
discordant (or untied) items, optimistic for a handful (an exact test at 0.05 needs 6 discordant items all one
way before it can reject at all: 2 / 2^6 = 0.031). Pure functions of numbers, no randomness.
"""

from __future__ import annotations

import math

from evaluation.statistics import wilson_interval

ALPHA = 0.05
"""Two-sided level of every test of the study (before Holm)."""
POWER = 0.80
"""The conventional power an effect should be found with."""


def normal_quantile(probability: float) -> float:
    """``z`` with ``P(Z <= z) = probability`` for a standard normal ``Z``.

    Bisection on ``Phi(z) = erfc(-z / sqrt 2) / 2`` over [-40, 40] until the interval stops shrinking (double
    precision: ~1e-15 absolute), from :mod:`math` alone.
    """
    if not 0.0 < probability < 1.0:
        raise ValueError(f"a normal quantile needs a probability strictly between 0 and 1, got {probability}")
    low, high = -40.0, 40.0
    while True:
        middle = (low + high) / 2
        if middle in (low, high):
            return middle
        if 0.5 * math.erfc(-middle / math.sqrt(2.0)) < probability:
            low = middle
        else:
            high = middle


def _z_values(alpha: float, power: float) -> tuple[float, float]:
    """``(z_{1 - alpha/2}, z_{power})``: the two-sided critical value and the power's quantile."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if not 0.5 <= power < 1.0:
        raise ValueError(f"power must be at least 0.5 and below 1, got {power}")
    return normal_quantile(1.0 - alpha / 2), normal_quantile(power)


def mcnemar_mde(n: int, discordance: float, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest difference of two paired pass rates that the two-sided McNemar test detects.

    Connor (1987, Biometrics 43:207-211) gives the items a paired pass/fail comparison needs,
    ``n = (z_{a/2} sqrt(psi) + z_b sqrt(psi - delta^2))^2 / delta^2``, with ``psi`` the discordant share (items
    where exactly one variant passes) and ``delta = p_10 - p_01`` the difference of the two pass rates. Solved
    here for ``delta`` in closed form: ``sqrt(n) delta - z_{a/2} sqrt(psi) = z_b sqrt(psi - delta^2)`` squared is
    the quadratic ``(n + z_b^2) delta^2 - 2 z_{a/2} sqrt(n psi) delta + (z_{a/2}^2 - z_b^2) psi = 0``, whose
    larger root

        ``delta = sqrt(psi) (z_{a/2} sqrt(n) + z_b sqrt(n + z_b^2 - z_{a/2}^2)) / (n + z_b^2)``

    is the solution (the smaller one makes the left side negative) as soon as ``n >= z_{a/2}^2``. For large
    ``n`` it is ``(z_{a/2} + z_b) sqrt(psi / n)``: the MDE grows with the square root of the discordance.

    ``discordance`` is the observed share once both variants have run, or an assumed one before. With
    ``psi = 0`` no item differs and the test has nothing to work on: ``inf``. A tiny ``psi`` makes the formula's
    delta larger than ``psi`` itself, the largest difference that discordance allows (every discordant item
    one way): also ``inf``. That happens when the expected number of discordant items ``n psi`` is below about
    ``(z_{a/2} + z_b sqrt(1 - psi))^2``, ~7.8 for a small psi at the defaults. ``n < z_{a/2}^2`` (~3.8 items): ``inf``.

    Example (the study's 38 prompts, at the defaults): a discordance of 0.30 gives delta = 0.241, 0.35 gives
    0.261, 0.50 gives 0.311: a paired difference needs +24 to +31 points of pass rate before Holm (at 0.20,
    0.197, just under psi: nearly all of the 7.6 expected discordant items one way).

    The exact test is discrete and conservative: enumerated at this delta, its power is 0.76-0.77 rather
    than 0.80 (n from 38 to 500, psi from 0.1 to 0.4).

    Args:
        n: paired items.
        discordance: ``psi``, the share of items where the two variants differ, in [0, 1].

    Returns:
        ``delta`` as a share (0.25 = 25 points), or ``math.inf`` when no difference is detectable.
    """
    if not 0.0 <= discordance <= 1.0:
        raise ValueError(f"the discordance is a share of the items, in [0, 1]; got {discordance}")
    if n < 1:
        raise ValueError(f"a paired comparison needs at least one item, got n = {n}")
    z_alpha, z_power = _z_values(alpha, power)
    if discordance == 0.0 or n < z_alpha**2:
        return math.inf
    delta = (
        math.sqrt(discordance)
        * (z_alpha * math.sqrt(n) + z_power * math.sqrt(n + z_power**2 - z_alpha**2))
        / (n + z_power**2)
    )
    return delta if delta <= discordance else math.inf


def paired_mean_mde(n: int, sd_difference: float, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest mean of paired differences that a two-sided test of "mean 0" detects.

    ``MDE = (z_{a/2} + z_b) sd / sqrt(n)``, with ``sd`` the standard deviation of the per-item differences
    (the normal approximation of the sign-flip test and of the paired bootstrap interval excluding 0). It
    ignores the t distribution's wider tails: a little optimistic below ~30 items. ``sd = 0`` gives 0.

    Args:
        n: paired items.
        sd_difference: standard deviation of the per-item differences, in the metric's own unit (a
            log-prob margin, a reward), observed or assumed.
    """
    if n < 1:
        raise ValueError(f"a paired comparison needs at least one item, got n = {n}")
    if sd_difference < 0:
        raise ValueError(f"a standard deviation is not negative, got {sd_difference}")
    z_alpha, z_power = _z_values(alpha, power)
    return (z_alpha + z_power) * sd_difference / math.sqrt(n)


def win_rate_mde(untied: int, *, tied: int = 0, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest distance of a win rate from 0.5 that the two-sided exact sign test detects.

    The sign test on the untied items is McNemar's test with every item discordant (``psi = 1``, a win is
    ``p_10``, a loss ``p_01``), and the win rate among them is ``0.5 + delta / 2``; so the MDE is
    ``mcnemar_mde(untied, 1) / 2``, i.e. the solution of ``sqrt(n) d = z_{a/2} / 2 + z_b sqrt(1/4 - d^2)``
    (the one-sample test of a proportion against 1/2). The study's win rate counts ties as half a win, which
    shrinks its distance from 0.5 by ``untied / (untied + tied)``; with ``tied`` given, the MDE is in those
    units. ``inf`` below ~4 untied items.

    Args:
        untied: items the judge did not score as a tie.
        tied: tied items, counted in the reported rate as half a win each.

    Returns:
        rate points as a share: 0.1 means 0.5 vs 0.6.
    """
    if untied < 1 or tied < 0:
        raise ValueError(f"a win rate needs at least one untied item and no negative ties, got {untied}, {tied}")
    return mcnemar_mde(untied, 1.0, alpha=alpha, power=power) / 2 * untied / (untied + tied)


def rate_half_width(n: int, rate: float, *, alpha: float = ALPHA) -> float:
    """Half the width of the Wilson interval (:func:`evaluation.statistics.wilson_interval`) of a rate.

    ``z sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n)`` with ``z = z_{1 - alpha/2}``: how precisely one
    variant's score is known from ``n`` items at a rate ``p`` (the interval is centred on a point pulled
    towards 1/2, so this is half its width, not the distance from ``p`` to either end).
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"a rate is in [0, 1], got {rate}")
    if n < 1:
        raise ValueError(f"a rate needs at least one item, got n = {n}")
    z_alpha, _ = _z_values(alpha, POWER)
    low, high = wilson_interval(rate * n, n, z=z_alpha)
    return (high - low) / 2


def holm_worst_case_alpha(family_size: int, alpha: float = ALPHA) -> float:
    """``alpha / m``: the level the smallest p-value of a Holm family of ``m`` tests is compared with.

    Holm (1979) rejects the i-th smallest p-value (0-based) at ``alpha / (m - i)``; a finding planned at
    ``alpha / m`` (Bonferroni's level) is detectable whatever its rank. Pass the result as ``alpha`` to the
    functions above.
    """
    if family_size < 1:
        raise ValueError(f"a family has at least one test, got {family_size}")
    return alpha / family_size
