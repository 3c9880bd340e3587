"""The judge's statistics (win rate, sign test, length-controlled win rate, findings) against values by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation import findings
from evaluation import statistics as stats
from evaluation.findings import judge_findings


def test_win_rate_counts_ties_half_on_five_items():
    first = [3.0, 1.0, 2.0, 5.0, 0.0]
    second = [1.0, 1.0, 4.0, 2.0, 0.0]
    # per item: 3 > 1 win, 1 = 1 tie, 2 < 4 loss, 5 > 2 win, 0 = 0 tie -> [1, 0.5, 0, 1, 0.5]
    assert stats.pairwise_wins(first, second) == [1.0, 0.5, 0.0, 1.0, 0.5]
    result = stats.win_rate(first, second)
    assert result["rate"] == pytest.approx(3.0 / 5.0)  # (1 + 0.5 + 0 + 1 + 0.5) / 5
    assert (result["wins"], result["losses"], result["ties"], result["n"]) == (2, 1, 2, 5)
    # sign test on the 3 untied items: 2 P(X <= 1), X ~ Bin(3, 1/2) = 2 (1 + 3) / 8 = 1.0
    assert result["p"] == pytest.approx(1.0)
    assert result["test"] == "exact sign test"
    assert result["ci95"] == stats.bootstrap_interval([1.0, 0.5, 0.0, 1.0, 0.5])
    with pytest.raises(ValueError):
        stats.win_rate([1.0], [1.0, 2.0])


def test_sign_test_p_value_by_hand():
    # 7 wins, 2 losses, 1 tie: the tie is left out; 2 P(X <= 2), X ~ Bin(9, 1/2) = 2 (1 + 9 + 36) / 512
    first = [2.0] * 7 + [0.0] * 2 + [1.0]
    second = [1.0] * 7 + [1.0] * 2 + [1.0]
    result = stats.win_rate(first, second)
    assert (result["wins"], result["losses"], result["ties"]) == (7, 2, 1)
    assert result["p"] == pytest.approx(92 / 512)  # 0.1797
    assert result["rate"] == pytest.approx(7.5 / 10)
    # 10 wins of 10: 2 / 2^10
    assert stats.win_rate([1.0] * 10, [0.0] * 10)["p"] == pytest.approx(2 / 1024)


def test_bootstrap_of_a_statistic_draws_as_the_bootstrap_of_a_mean():
    data = np.array([0.3, 1.7, 2.2, -0.4, 5.0, 0.9])
    assert stats.bootstrap_statistic_interval(lambda i: data[i].mean(), data.size) == stats.bootstrap_interval(data)


def test_length_controlled_rate_equals_the_raw_rate_when_wins_do_not_depend_on_length():
    # Differences in +-pairs with equal outcomes: with x = tanh(d / sd(d)) odd in d, sum(x) = 0 and
    # sum(x * y) = x(-2) + x(2) + x(-3) + x(3) = 0, so slope 0, p = mean(y) solves both score equations:
    # the (unique) maximum likelihood is sigmoid(a) = mean(y) = 4 / 6.
    differences = [-2, 2, -1, 1, -3, 3]
    wins = [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    result = stats.length_controlled_win_rate(wins, differences)
    assert result["method"] == "logistic" and result["reason"] is None
    assert result["rate"] == pytest.approx(2 / 3, abs=1e-9)
    assert result["raw_rate"] == pytest.approx(2 / 3)
    assert result["slope"] == pytest.approx(0.0, abs=1e-9)
    assert result["intercept"] == pytest.approx(math.log(2), abs=1e-9)  # logit(2/3) = ln 2
    low, high = result["ci95"]
    assert low <= result["rate"] <= high


def test_length_controlled_rate_with_one_binary_covariate_is_the_zero_group_proportion():
    # Two length differences, 0 and 10: the model is saturated, so the fit reproduces each group's mean:
    # sigmoid(a) = mean over d = 0 = (1 + 0 + 0.5 + 1) / 4 = 0.625, sigmoid(a + b tanh(10 / 5)) = 0.75
    # (sd of [0]*4 + [10]*4 is 5). The raw rate (0.6875) is pulled up by the longer, more winning group.
    differences = [0, 0, 0, 0, 10, 10, 10, 10]
    wins = [1.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0, 1.0]
    result = stats.length_controlled_win_rate(wins, differences)
    assert result["method"] == "logistic"
    assert result["rate"] == pytest.approx(0.625, abs=1e-9)
    assert result["raw_rate"] == pytest.approx(0.6875)
    assert result["intercept"] == pytest.approx(math.log(5 / 3), abs=1e-9)  # logit(0.625)
    # logit(0.75) - logit(0.625) = ln 3 - ln(5/3) = ln(9/5), over tanh(2)
    assert result["slope"] == pytest.approx(math.log(9 / 5) / math.tanh(2.0), abs=1e-9)


def test_length_controlled_rate_falls_back_to_the_raw_rate_and_says_why():
    # Complete separation: every longer first response wins, every shorter one loses -> slope -> infinity.
    separated = stats.length_controlled_win_rate([0.0, 0.0, 1.0, 1.0], [-2, -1, 1, 2])
    assert separated["method"] == "raw" and "separated" in separated["reason"]
    assert separated["rate"] == pytest.approx(0.5) and separated["intercept"] is None
    # No length differences at all: nothing to control for.
    same = stats.length_controlled_win_rate([1.0, 0.0, 1.0], [0, 0, 0])
    assert same["method"] == "raw" and "nothing to control" in same["reason"]
    assert same["rate"] == pytest.approx(2 / 3)
    # One shared non-zero difference: the length effect and the rate cannot be told apart.
    constant = stats.length_controlled_win_rate([1.0, 0.0, 1.0], [5, 5, 5])
    assert constant["method"] == "raw" and "same length difference" in constant["reason"]
    # Every item won.
    all_won = stats.length_controlled_win_rate([1.0, 1.0, 1.0], [1, 2, 3])
    assert all_won["method"] == "raw" and all_won["rate"] == 1.0 and all_won["ci95"] == (1.0, 1.0)


def test_judge_findings_have_the_shape_of_the_paired_comparisons():
    scores = {
        "base": [0.0, 1.0, 2.0, 3.0],
        "sft": [1.0, 1.0, 3.0, 2.0],
        "sft_dpo": [2.0, 3.0, 3.0, 4.0],
    }
    lengths = {"base": [10, 12, 8, 9], "sft": [11, 12, 9, 9], "sft_dpo": [15, 14, 9, 13]}
    categories = ["coding", "safety", "coding", None]
    found = judge_findings(scores, lengths, categories)

    sft = found["variants"]["sft"]
    assert sft["mean_reward"] == pytest.approx(7 / 4)  # (1 + 1 + 3 + 2) / 4
    assert sft["mean_length"] == pytest.approx(41 / 4)
    assert sft["per_category"]["coding"]["mean_reward"] == pytest.approx(2.0)  # (1 + 3) / 2
    assert set(sft["per_category"]) == {"coding", "safety"}  # the uncategorised prompt is left out

    assert [(p["first"], p["second"]) for p in found["pairs"]] == list(findings.COMPARISONS)
    sft_vs_base = found["pairs"][0]
    # sft vs base: 1 > 0 win, 1 = 1 tie, 3 > 2 win, 2 < 3 loss -> (1 + 0.5 + 1 + 0) / 4
    assert sft_vs_base["win_rate"]["rate"] == pytest.approx(0.625)
    assert sft_vs_base["mean_length_difference"] == pytest.approx((1 + 0 + 1 + 0) / 4)

    rate_finding, reward_finding = found["findings"][0], found["findings"][1]
    assert rate_finding["metric"] == "judge_win_rate"
    assert rate_finding["difference"] == pytest.approx(0.125)  # 0.625 - 0.5
    low, high = sft_vs_base["win_rate"]["ci95"]
    assert rate_finding["ci95"] == pytest.approx((low - 0.5, high - 0.5))
    assert reward_finding["metric"] == "mean_reward"
    assert reward_finding["difference"] == pytest.approx((1 + 0 + 1 - 1) / 4)  # mean of sft - base

    # The keys of paired_comparisons' entries, less what the family adds (Holm's, the power) and McNemar's own.
    reference = findings.paired_comparisons({"sft": [1.0, -1.0], "base": [-1.0, 1.0]}, {})[0]
    shared = set(reference) - {"p_holm", "significant", "mde", "discordance", "only_first", "only_second"}
    for finding in found["findings"]:
        assert shared <= set(finding)
        assert "p_holm" not in finding and "mde" not in finding
    adjusted = stats.holm([f["p"] for f in found["findings"]])
    assert len(adjusted) == 6  # 3 pairs x (win rate, mean reward)

    with pytest.raises(ValueError):
        judge_findings({"sft": [1.0]}, {"sft": [1, 2]})
