"""Minimum detectable effects against hand arithmetic from their formulas, and one simulated power."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from evaluation import power
from evaluation.statistics import mcnemar_exact

Z_ALPHA = NormalDist().inv_cdf(0.975)  # 1.959964
Z_POWER = NormalDist().inv_cdf(0.80)  # 0.841621


def connor_items(delta: float, psi: float, z_alpha: float = Z_ALPHA, z_power: float = Z_POWER) -> float:
    """Connor (1987): items a paired pass/fail comparison needs to find ``delta`` at discordance ``psi``."""
    return (z_alpha * math.sqrt(psi) + z_power * math.sqrt(psi - delta**2)) ** 2 / delta**2


def test_normal_quantile_matches_the_standard_library():
    for probability in (1e-9, 0.025, 0.5, 0.8, 0.975, 0.99 + 0.0099):
        assert power.normal_quantile(probability) == pytest.approx(NormalDist().inv_cdf(probability), abs=1e-12)


@pytest.mark.parametrize(("n", "psi"), [(38, 0.35), (200, 0.3), (1319, 0.15), (14042, 0.05)])
def test_mcnemar_mde_solves_connors_formula(n, psi):
    delta = power.mcnemar_mde(n, psi)
    # closed form: sqrt(psi) (z_a sqrt(n) + z_b sqrt(n + z_b^2 - z_a^2)) / (n + z_b^2)
    by_hand = math.sqrt(psi) * (Z_ALPHA * math.sqrt(n) + Z_POWER * math.sqrt(n + Z_POWER**2 - Z_ALPHA**2))
    by_hand /= n + Z_POWER**2
    assert delta == pytest.approx(by_hand, rel=1e-12)
    assert connor_items(delta, psi) == pytest.approx(n, rel=1e-9)  # the effect that needs exactly n items


def test_mcnemar_mde_at_the_studys_38_prompts():
    # psi 0.35: sqrt(0.35) = 0.591608; z_a sqrt(38) = 1.959964 x 6.164414 = 12.082030;
    # z_b sqrt(38 + 0.708326 - 3.841459) = 0.841621 x 5.904817 = 4.969620; / 38.708326 -> 0.260613
    assert power.mcnemar_mde(38, 0.35) == pytest.approx(0.591608 * (12.082029 + 4.969620) / 38.708326, abs=1e-6)
    assert power.mcnemar_mde(38, 0.35) == pytest.approx(0.2606, abs=1e-4)  # "+25 points" of issue 24


def test_mcnemar_mde_with_no_or_too_little_discordance_is_infinite():
    assert power.mcnemar_mde(500, 0.0) == math.inf  # no item differs: nothing to test
    # 38 x 0.1 = 3.8 expected discordant items: the formula's delta 0.139 exceeds psi = 0.1
    assert power.mcnemar_mde(38, 0.1) == math.inf
    assert power.mcnemar_mde(3, 1.0) == math.inf  # n < z_a^2 = 3.84
    with pytest.raises(ValueError):
        power.mcnemar_mde(38, 1.5)


def test_alpha_and_power_are_arguments():
    z_alpha, z_power = NormalDist().inv_cdf(1 - 0.01 / 2), NormalDist().inv_cdf(0.9)
    delta = power.mcnemar_mde(300, 0.3, alpha=0.01, power=0.9)
    assert connor_items(delta, 0.3, z_alpha, z_power) == pytest.approx(300, rel=1e-9)
    assert delta > power.mcnemar_mde(300, 0.3)
    with pytest.raises(ValueError):
        power.mcnemar_mde(300, 0.3, power=0.3)


def test_paired_mean_mde_by_hand():
    # (1.959964 + 0.841621) x 0.5 / sqrt(100) = 0.140079
    assert power.paired_mean_mde(100, 0.5) == pytest.approx((Z_ALPHA + Z_POWER) * 0.5 / 10, rel=1e-12)
    assert power.paired_mean_mde(100, 0.5) == pytest.approx(0.140079, abs=1e-6)
    assert power.paired_mean_mde(100, 0.0) == 0.0


def test_win_rate_mde_is_the_one_sample_test_of_one_half():
    n = 805
    rate = power.win_rate_mde(n)
    # sqrt(n) d = z_a / 2 + z_b sqrt(1/4 - d^2): the one-sample normal test of p = 1/2 against 1/2 + d
    assert math.sqrt(n) * rate == pytest.approx(Z_ALPHA / 2 + Z_POWER * math.sqrt(0.25 - rate**2), rel=1e-12)
    assert rate == pytest.approx(0.0493, abs=1e-4)  # AlpacaEval's 805: 0.5 vs ~0.55
    # 105 ties counted half: the reported rate moves 805 / 910 as far from 0.5
    assert power.win_rate_mde(n, tied=105) == pytest.approx(rate * 805 / 910, rel=1e-12)


def test_rate_half_width_is_wilsons():
    # p = 0.5, n = 38: z^2/n = 0.101091; z sqrt(0.25/38 + 3.841459/5776) = 1.959964 x 0.085112 = 0.166816;
    # / 1.101091 -> 0.151501
    z2 = Z_ALPHA**2
    by_hand = Z_ALPHA * math.sqrt(0.25 / 38 + z2 / (4 * 38**2)) / (1 + z2 / 38)
    assert power.rate_half_width(38, 0.5) == pytest.approx(by_hand, rel=1e-12)
    assert power.rate_half_width(38, 0.5) == pytest.approx(0.151501, abs=1e-6)


def test_holm_worst_case_is_bonferroni():
    assert power.holm_worst_case_alpha(12) == pytest.approx(0.05 / 12)
    z_alpha = NormalDist().inv_cdf(1 - 0.05 / 12 / 2)
    delta = power.mcnemar_mde(500, 0.3, alpha=power.holm_worst_case_alpha(12))
    assert connor_items(delta, 0.3, z_alpha) == pytest.approx(500, rel=1e-9)


def test_simulated_exact_mcnemar_power_at_the_mde_is_about_80_percent():
    """Paired pass/fail data drawn at the MDE (200 items, psi 0.3: delta 0.108), tested with the study's exact
    McNemar. Enumerating every table gives 0.773 (the exact test is conservative); 4,000 draws have a standard
    error of 0.007."""
    n, psi = 200, 0.3
    delta = power.mcnemar_mde(n, psi)
    rng = np.random.default_rng(24)
    # per item: passes only under the first variant, only under the second, or both / neither
    tables = rng.multinomial(n, [(psi + delta) / 2, (psi - delta) / 2, 1 - psi], size=4000)
    p_values: dict[tuple[int, int], float] = {}
    rejected = 0
    for only_first, only_second, _ in tables:
        key = (int(only_first), int(only_second))
        if key not in p_values:
            p_values[key] = mcnemar_exact(*key)
        rejected += p_values[key] < 0.05
    assert rejected / len(tables) == pytest.approx(0.80, abs=0.05)
