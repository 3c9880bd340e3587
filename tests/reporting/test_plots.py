"""reporting/plots.py: the per-category bars carry the results file's 95 % intervals."""

from __future__ import annotations

import pytest

from reporting.plots import CATEGORY_PANELS, category_series, plot_categories


def results(with_intervals: bool) -> dict:
    metrics = {
        "sft": {"checked_score": {"per_category": {"coding": 0.5, "safety": 1.0}}},
        "sft_dpo": {"checked_score": {"per_category": {"coding": 0.25}}},
    }
    if with_intervals:
        metrics["sft"]["ci95_per_category"] = {"checked_score": {"coding": [0.2, 0.8], "safety": [0.6, 1.0]}}
        metrics["sft_dpo"]["ci95_per_category"] = {"checked_score": {"coding": [0.05, 0.7]}}
    return {"meta": {"variants": ["sft", "sft_dpo"], "labels": {"sft": "SFT", "sft_dpo": "SFT+DPO"}},
            "metrics": metrics}


def test_bars_reach_from_the_rate_to_its_interval_ends():
    categories, (sft, dpo) = category_series(results(True), CATEGORY_PANELS[0])
    assert categories == ["coding", "safety"]
    assert sft.values == [0.5, 1.0]
    assert sft.below == pytest.approx([0.3, 0.4]) and sft.above == pytest.approx([0.3, 0.0])
    # A category the variant lacks is drawn as 0 without an interval.
    assert dpo.values == [0.25, 0.0]
    assert dpo.below == pytest.approx([0.2, 0.0]) and dpo.above == pytest.approx([0.45, 0.0])


def test_a_results_file_without_intervals_is_drawn_without_error_bars(tmp_path):
    _, series = category_series(results(False), CATEGORY_PANELS[0])
    assert all(bars.below is None and bars.above is None for bars in series)
    assert plot_categories(results(False), tmp_path / "old.png")
    assert plot_categories(results(True), tmp_path / "new.png")
    assert (tmp_path / "new.png").read_bytes()[:4] == b"\x89PNG"
    assert not plot_categories({"meta": {"variants": []}, "metrics": {}}, tmp_path / "none.png")


def test_the_judge_panel_draws_mean_rewards_with_the_intervals_beside_them(tmp_path):
    judged = results(True)
    judged["metrics"]["sft"]["judge"] = {"per_category": {
        "coding": {"n": 2, "mean_reward": -0.5, "ci95": [-1.25, 0.0]},
        "safety": {"n": 1, "mean_reward": 1.5, "ci95": [1.5, 1.5]},
    }}
    judged["metrics"]["sft_dpo"]["judge"] = {"per_category": {"coding": {"n": 2, "mean_reward": 0.25, "ci95": None}}}
    panel = next(panel for panel in CATEGORY_PANELS if panel.path == ("judge", "per_category"))
    assert not panel.rate  # rewards are not rates: no [0, 1] axis
    categories, (sft, dpo) = category_series(judged, panel)
    assert categories == ["coding", "safety"]
    assert sft.values == [-0.5, 1.5]
    assert sft.below == pytest.approx([0.75, 0.0]) and sft.above == pytest.approx([0.5, 0.0])
    assert dpo.values == [0.25, 0.0] and dpo.below is None  # no interval recorded: drawn without one
    assert plot_categories(judged, tmp_path / "judge.png")
    assert (tmp_path / "judge.png").read_bytes()[:4] == b"\x89PNG"
    # Without a judge, no judge panel: its categories are not there.
    assert category_series(results(True), panel)[0] == []
