"""reporting/seeds.py: means, sample standard deviations and finding directions over training seeds, by hand."""

from __future__ import annotations

import math

import pytest

from reporting.seeds import across_seeds, mean_and_sd, seed_label


def run(seed: int | None, accuracy: dict[str, float], checked: float, differences: dict[str, float]) -> dict:
    """A results file reduced to what across_seeds reads."""
    return {
        "meta": {"variants": ["sft", "sft_dpo"], "training_seeds": {"sft": seed, "dpo": seed}},
        "metrics": {
            name: {"preference": {"accuracy": value}, "checked_score": {"overall": checked} if name == "sft" else None}
            for name, value in accuracy.items()
        },
        "comparisons": [
            {"metric": metric, "first": "sft_dpo", "second": "sft", "difference": difference}
            for metric, difference in differences.items()
        ],
    }


RUNS = [
    run(0, {"sft": 0.75, "sft_dpo": 0.80}, 0.4, {"preference_accuracy": 0.05, "mean_margin": 1.0}),
    run(1, {"sft": 0.75, "sft_dpo": 0.85}, 0.5, {"preference_accuracy": 0.10, "mean_margin": 2.0}),
    run(2, {"sft": 0.75, "sft_dpo": 0.90}, 0.9, {"preference_accuracy": -0.02, "mean_margin": 0.5,
                                                 "checked_score": 0.1}),
]


def test_mean_and_sample_standard_deviation_by_hand():
    # 0.80, 0.85, 0.90: mean 0.85, squared deviations 0.0025 + 0 + 0.0025 over n - 1 = 2 -> sd 0.05
    summary = across_seeds(RUNS)
    accuracy = summary["metrics"]["preference.accuracy"]
    assert accuracy["sft_dpo"]["mean"] == pytest.approx(0.85)
    assert accuracy["sft_dpo"]["sd"] == pytest.approx(0.05)
    assert accuracy["sft_dpo"]["values"] == [0.80, 0.85, 0.90] and accuracy["sft_dpo"]["n"] == 3
    assert accuracy["sft"]["sd"] == 0.0
    # 0.4, 0.5, 0.9: mean 0.6, squared deviations 0.04 + 0.01 + 0.09 = 0.14 over 2 -> sd sqrt(0.07)
    checked = summary["metrics"]["checked_score.overall"]
    assert set(checked) == {"sft"}  # SFT+DPO has no checked score in any run
    assert checked["sft"]["mean"] == pytest.approx(0.6) and checked["sft"]["sd"] == pytest.approx(math.sqrt(0.07))
    assert "perplexity.value" not in summary["metrics"]
    assert summary["seeds"] == ["0", "1", "2"]


def test_a_finding_has_the_same_direction_only_if_every_seed_has_it_with_one_sign():
    findings = {f["metric"]: f for f in across_seeds(RUNS)["findings"]}
    assert list(findings) == ["preference_accuracy", "mean_margin", "checked_score"]
    assert findings["preference_accuracy"]["differences"] == [0.05, 0.10, -0.02]
    assert findings["preference_accuracy"]["same_direction"] is False
    assert findings["mean_margin"] == {"metric": "mean_margin", "first": "sft_dpo", "second": "sft",
                                       "differences": [1.0, 2.0, 0.5], "same_direction": True}
    assert findings["checked_score"]["differences"] == [None, None, 0.1]  # measured on one seed only
    assert findings["checked_score"]["same_direction"] is False
    negative = [run(s, {"sft": 0.5}, 0.5, {"mean_margin": -d}) for s, d in ((0, 1.0), (1, 0.5))]
    assert across_seeds(negative)["findings"][0]["same_direction"] is True


def test_seed_labels_and_small_samples():
    assert seed_label(run(3, {"sft": 0.5}, 0.5, {})) == "3"
    assert seed_label({"meta": {"training_seeds": {"sft": 1, "dpo": 2}}}) == "1/2"
    assert seed_label({"meta": {}}) is None
    assert across_seeds([run(None, {"sft": 0.5}, 0.5, {})] * 2)["seeds"] == ["0", "1"]
    assert across_seeds(RUNS, labels=["a", "b", "c"])["seeds"] == ["a", "b", "c"]
    assert mean_and_sd([2.0]) == (2.0, None)
    with pytest.raises(ValueError):
        across_seeds([])


def test_the_judge_findings_are_followed_across_seeds_like_the_others():
    runs = [run(seed, {"sft": 0.5}, 0.5, {"judge_win_rate": d, "mean_reward": 0.1}) for seed, d in ((0, 0.1), (1, 0.2))]
    findings = {f["metric"]: f for f in across_seeds(runs)["findings"]}
    assert findings["judge_win_rate"]["differences"] == [0.1, 0.2] and findings["judge_win_rate"]["same_direction"]
    assert findings["mean_reward"]["differences"] == [0.1, 0.1]
