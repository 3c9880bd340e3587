"""The statistics against values computed by hand from their formulas."""

from __future__ import annotations

import math

import pytest

from evaluation import statistics as stats


def test_wilson_interval_of_8_in_10_and_of_none():
    # p = 0.8, z^2/n = 0.38415: centre 0.99207, spread 1.96 * sqrt(0.016 + 0.0096037) = 0.31362, scale 1.38415
    assert stats.wilson_interval(8, 10) == pytest.approx((0.49016, 0.94332), abs=1e-5)
    # no successes: the interval is [0, (z^2/n) / (1 + z^2/n)], not the degenerate [0, 0]
    assert stats.wilson_interval(0, 10) == pytest.approx((0.0, 0.384146 / 1.384146), abs=1e-6)
    with pytest.raises(ValueError):
        stats.wilson_interval(0, 0)


@pytest.mark.parametrize(
    ("only_first", "only_second", "expected"),
    [
        (3, 10, 2 * (1 + 13 + 78 + 286) / 2**13),  # 2 P(X <= 3), X ~ Bin(13, 1/2) = 0.0923
        (10, 3, 2 * (1 + 13 + 78 + 286) / 2**13),  # symmetric
        (0, 6, 2 / 2**6),  # 0.03125
        (5, 5, 1.0),  # 2 P(X <= 5) > 1 is capped
        (0, 0, 1.0),  # no discordant item: no evidence
    ],
)
def test_exact_mcnemar_on_2x2_tables(only_first, only_second, expected):
    assert stats.mcnemar_exact(only_first, only_second) == pytest.approx(expected, rel=1e-12)


def test_holm_on_four_p_values():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> kept non-decreasing: 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([]) == []


def test_bootstrap_interval_on_tiny_samples_with_a_fixed_seed():
    # Resampled means of [0, 1] take 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4: the 2.5th and 97.5th
    # percentiles are the extremes.
    assert stats.bootstrap_interval([0.0, 1.0]) == (0.0, 1.0)
    assert stats.bootstrap_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert stats.bootstrap_interval([0.0, 1.0, 0.5], seed=3) == stats.bootstrap_interval([0.0, 1.0, 0.5], seed=3)
    # 50 of 100: close to the Wilson interval (0.404, 0.596)
    low, high = stats.bootstrap_interval([1.0] * 50 + [0.0] * 50)
    assert low == pytest.approx(0.40, abs=0.02) and high == pytest.approx(0.60, abs=0.02)


def test_ratio_bootstrap_weights_items_by_their_denominators():
    # Every item has nll / tokens = 2, so every resample does: the interval is the point.
    assert stats.bootstrap_ratio_interval([2.0, 6.0], [1, 3]) == (2.0, 2.0)
    # Items (0 nats, 1 token) and (10, 9): resamples {a,a} 0/2 = 0 (p 1/4), {a,b} 10/10 = 1 (p 1/2), {b,b} 20/18
    # (p 1/4). The extremes are the 95 % bounds; the median (level 0) is 1.0, the ratio of sums, where a mean
    # of per-item ratios would give (0 + 10/9) / 2 = 0.556.
    low, high = stats.bootstrap_ratio_interval([0.0, 10.0], [1, 9])
    assert (low, high) == pytest.approx((0.0, 20 / 18))
    assert stats.bootstrap_ratio_interval([0.0, 10.0], [1, 9], level=0.0) == pytest.approx((1.0, 1.0))
    with pytest.raises(ValueError):
        stats.bootstrap_ratio_interval([1.0], [1, 2])


def test_jackknife_interval_of_a_mean_is_the_textbook_one_and_of_distinct_2_by_hand():
    from evaluation.metrics import distinct_n

    # mean of 0, 1, 3, 7 = 2.75; s^2 = (7.5625 + 3.0625 + 0.0625 + 18.0625) / 3 = 9.58333; se = s / 2 = 1.547848
    low, high = stats.jackknife_interval([0.0, 1.0, 3.0, 7.0], lambda xs: sum(xs) / len(xs))
    assert (low, high) == pytest.approx((2.75 - 1.959964 * 1.547848, 2.75 + 1.959964 * 1.547848), abs=1e-5)
    # "a b", "a b", "c d": distinct-2 2/3; leaving out either "a b" gives 1, leaving out "c d" gives 1/2:
    # mean 5/6, sum of squares 2 (1/6)^2 + (1/3)^2 = 1/6, se = sqrt(2/3 * 1/6) = 1/3
    low, high = stats.jackknife_interval(["a b", "a b", "c d"], lambda kept: distinct_n(kept, 2))
    assert (low, high) == pytest.approx((2 / 3 - 1.959964 / 3, 2 / 3 + 1.959964 / 3), abs=1e-6)
    with pytest.raises(ValueError):
        stats.jackknife_interval([1.0], lambda xs: xs[0])


def test_sign_flip_test_matches_the_exact_value_and_sees_no_effect_in_balanced_data():
    # Ten positive differences: only the all-plus and all-minus flips are as extreme: exact p = 2 / 2^10.
    assert stats.sign_flip_p([1.0] * 10) == pytest.approx(2 / 1024, abs=0.0015)
    assert stats.sign_flip_p([1.0, -1.0] * 10) == pytest.approx(1.0, abs=1e-3)
    assert stats.sign_flip_p([0.0, 0.0]) == 1.0


def test_paired_comparisons_count_the_discordant_items():
    first = [True, True, False, False, True]
    second = [False, True, False, True, False]
    result = stats.compare_binary(first, second)
    assert (result["only_first"], result["only_second"]) == (2, 1)
    assert result["difference"] == pytest.approx(0.2)
    assert result["p"] == pytest.approx(1.0)  # 2 P(X <= 1) = 2 (1 + 3) / 8, X ~ Bin(3, 1/2)
    low, high = result["ci95"]
    assert low <= result["difference"] <= high
    means = stats.compare_means([1.0, 2.0, 3.0], [0.5, 2.5, 1.0])
    assert means["difference"] == pytest.approx((0.5 - 0.5 + 2.0) / 3)
    assert math.isclose(means["p"], stats.sign_flip_p([0.5, -0.5, 2.0]))
    # differences 0.5, -0.5, 2.0 around 2/3: squared deviations 1/36 + 49/36 + 64/36 = 114/36, over n - 1 = 2
    assert means["sd"] == pytest.approx(math.sqrt(57 / 36))
    with pytest.raises(ValueError):
        stats.compare_binary([True], [True, False])


def test_stratified_mean_interval_by_hand():
    # strata 3 of 4 and 1 of 2: mean (0.75 + 0.5) / 2 = 0.625; variance with p~ = 5/8 and 3/6 over n + 4 = 8 and 6:
    # (0.029296875 + 0.041666667) / 4 = 0.017740885, half-width 1.959964 * 0.133195 = 0.261057.
    mean, (low, high) = stats.stratified_mean_interval([(3, 4), (1, 2)])
    assert mean == pytest.approx(0.625)
    assert (low, high) == pytest.approx((0.363943, 0.886057), abs=1e-6)
    # Two subjects all right: the mean is 1 but the interval is not a point (p~ = 4/6 in the variance):
    # variance 2 * (2/3 * 1/3 / 6) / 4 = 0.0185185, half-width 0.266717, clipped at 1.
    mean, (low, high) = stats.stratified_mean_interval([(2, 2), (2, 2)])
    assert mean == 1.0 and high == 1.0 and low == pytest.approx(1 - 0.266717, abs=1e-6)
    with pytest.raises(ValueError, match="at least one stratum"):
        stats.stratified_mean_interval([])
    with pytest.raises(ValueError, match="at least one item"):
        stats.stratified_mean_interval([(0, 0)])
