"""evaluation/findings.py: per-category intervals, the Holm family and the targeted findings by hand (the rest of the
statistics step is tested through the results file, tests/evaluation/test_results.py)."""

from __future__ import annotations

import pytest

from evaluation.findings import category_intervals


def test_category_intervals_are_wilson_per_category_by_hand():
    # 2 of 4 in "a": p = 1/2, z = 1.95996: centre 1/2 + z^2/8 = 0.98018, half-width z sqrt(1/16 + z^2/64) = 0.68605,
    # divided by 1 + z^2/4 = 1.96036 -> (0.15004, 0.84996). 1 of 1 in "b": (1 / (1 + z^2), 1) = (0.20655, 1).
    intervals = category_intervals([True, False, True, False, True, False], ["a", "a", "a", "a", "b", None])
    assert list(intervals) == ["a", "b"]  # sorted; the item without a category is in none
    assert intervals["a"] == pytest.approx((0.150039, 0.849961), abs=1e-6)
    assert intervals["b"] == pytest.approx((0.206549, 1.0), abs=1e-6)
    assert category_intervals([], []) == {}


def test_holm_runs_once_over_the_paired_and_the_judge_findings_by_hand():
    """Four p-values of both kinds, one family: the judge's findings change the paired one's adjustment."""
    from evaluation.findings import paired_comparisons

    # SFT passes 6 checked prompts base fails, and the reverse never: exact McNemar p = 2 / 2^6 = 0.03125.
    passed = {"base": [False] * 6 + [True, False], "sft": [True] * 6 + [True, False]}
    judged = [  # judge findings as judge_findings gives them (no Holm keys), p chosen by hand
        {"metric": "judge_win_rate", "first": "sft", "second": "base", "n": 8, "difference": 0.3,
         "ci95": (0.1, 0.45), "p": 0.01, "test": "exact sign test"},
        {"metric": "mean_reward", "first": "sft", "second": "base", "n": 8, "difference": 1.0,
         "ci95": (0.2, 1.8), "p": 0.04, "test": "paired sign-flip"},
        {"metric": "judge_win_rate", "first": "sft_dpo", "second": "sft", "n": 8, "difference": 0.05,
         "ci95": (-0.2, 0.3), "p": 0.5, "test": "exact sign test"},
    ]
    found = paired_comparisons({}, passed, judged)
    assert [(f["metric"], f["first"], f["second"]) for f in found] == [
        ("checked_score", "sft", "base"), ("judge_win_rate", "sft", "base"), ("mean_reward", "sft", "base"),
        ("judge_win_rate", "sft_dpo", "sft"),
    ]
    assert found[0]["p"] == pytest.approx(0.03125)
    # Holm over m = 4, ascending: 0.01 x 4 = 0.04; 0.03125 x 3 = 0.09375; 0.04 x 2 = 0.08 -> 0.09375 (kept
    # non-decreasing); 0.5 x 1 = 0.5.
    assert [f["p_holm"] for f in found] == pytest.approx([0.09375, 0.04, 0.09375, 0.5])
    assert [f["significant"] for f in found] == [False, True, False, False]
    # Alone, the checked score's p would have stood unadjusted (0.03125 < 0.05): the family is one.
    assert paired_comparisons({}, passed)[0]["p_holm"] == pytest.approx(0.03125)
    assert "p_holm" not in judged[0]  # the caller's findings are copied, not changed


def test_targeted_findings_test_sft_dpo_vs_sft_on_the_targeted_prompts_only_by_hand():
    from evaluation.findings import targeted_findings

    # checked prompts in a, a, a, a, a, b, b, c; targeted: a and c. In a + c, SFT+DPO passes 5 that SFT fails
    # and the reverse never: exact McNemar p = 2 / 2^5 = 0.0625; difference (5 - 0) / 6 items = +0.8333.
    # The b prompts go the other way and must not count.
    passed = {
        "sft_dpo": [True, True, True, True, False, False, False, True],
        "sft": [False, False, False, False, False, True, True, False],
        "base": [False] * 8,
    }
    categories = ["a", "a", "a", "a", "a", "b", "b", "c"]
    # every prompt judged; in a + c SFT+DPO wins 4, loses 1, ties 1: rate (4 + 0.5) / 6 = 0.75; exact sign test
    # on the 5 untied: 2 * P(X <= 1 | n=5) = 2 * 6 / 32 = 0.375.
    scores = {"sft_dpo": [2, 2, 2, 2, 0, 0, 0, 5], "sft": [1, 1, 1, 1, 1, 9, 9, 5], "base": [0] * 8}
    found = targeted_findings(passed, categories, ["a", "c"], scores, categories)
    assert [f["metric"] for f in found] == ["checked_score_targeted", "judge_win_rate_targeted"]
    checked, judged = found
    assert (checked["first"], checked["second"], checked["n"]) == ("sft_dpo", "sft", 6)
    assert checked["difference"] == pytest.approx(5 / 6)
    assert checked["p"] == pytest.approx(0.0625)
    assert (checked["only_first"], checked["only_second"]) == (5, 0)
    assert checked["categories"] == ["a", "c"]
    assert judged["n"] == 6 and judged["rate"] == pytest.approx(0.75) and judged["difference"] == pytest.approx(0.25)
    assert (judged["wins"], judged["losses"], judged["ties"]) == (4, 1, 1)
    assert judged["p"] == pytest.approx(0.375)
    # nothing targeted, or no prompt in the targeted categories: no finding
    assert targeted_findings(passed, categories, [], scores, categories) == []
    assert targeted_findings(passed, categories, ["z"], scores, categories) == []
