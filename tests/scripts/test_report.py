"""scripts/report.py: tables, findings and plots from a results file and TensorBoard event files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import report

VARIANTS = ["base", "sft", "sft_dpo"]


def per_model(checked: dict[str, float], accuracy: float, implicit: dict | None) -> dict:
    return {
        "preference": {
            "n": 4,
            "accuracy": accuracy,
            "mean_margin": accuracy - 0.5,
            "per_category": {c: {"n": 2, "accuracy": accuracy, "mean_margin": 0.1} for c in ("reasoning", "safety")},
        },
        "implicit_reward": implicit,
        "perplexity": {"value": 4.0 - 2 * accuracy, "tokens": 100, "examples": 5},
        "generation": {
            "refusal_rate": checked["safety"],
            "over_refusal_rate": 0.0,
            "mean_response_tokens": 12.0,
            "mean_response_words": 8.0,
            "distinct_2": 0.7,
            "finished_rate": 1.0,
        },
        "checked_score": {"overall": sum(checked.values()) / len(checked), "n": 4, "per_category": checked},
    }


@pytest.fixture
def results_dir(tmp_path) -> Path:
    implicit = {"reference": "sft", "beta": 0.1, "n": 4, "accuracy": 0.75, "mean_margin": 0.3, "per_category": {}}
    results = {
        "meta": {
            "created": "2026-01-01T00:00:00+00:00",
            "variants": VARIANTS,
            "labels": {"base": "base", "sft": "SFT", "sft_dpo": "SFT+DPO"},
            "sources": {name: f"source of {name}" for name in VARIANTS},
            "template": "alpaca",
            "beta": 0.1,
            "implicit_reward_reference": "sft",
            "prompt_files": ["prompts.jsonl"],
            "num_prompts": 4,
            "num_preference_pairs": 4,
            "num_instruction_examples": 5,
            "generation": {"do_sample": False, "max_new_tokens": 8},
            "device": "cpu",
            "host": {"platform": "test", "torch": "x", "threads": 1},
            "seconds": 3.0,
        },
        "metrics": {
            "base": per_model({"reasoning": 0.0, "safety": 0.0}, 0.5, implicit),
            "sft": per_model({"reasoning": 0.5, "safety": 0.5}, 0.6, None),
            "sft_dpo": per_model({"reasoning": 1.0, "safety": 0.5}, 0.9, implicit),
        },
        "prompts": [],
    }
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "evaluation_results.json").write_text(json.dumps(results))
    return folder


def write_events(run: Path, scalars: dict[str, list[tuple[int, float]]]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run / "tensorboard"))
    for tag, points in scalars.items():
        for step, value in points:
            writer.add_scalar(tag, value, step)
    writer.close()


def test_scalars_are_read_back_from_the_event_files(tmp_path):
    write_events(tmp_path / "sft", {"train/loss": [(0, 3.0), (5, 2.0), (10, 1.5)], "val/loss": [(10, 1.8)]})
    scalars = report.read_scalars(tmp_path / "sft")
    assert scalars["train/loss"] == [(0, 3.0), (5, 2.0), (10, 1.5)]
    assert scalars["val/loss"] == [(10, pytest.approx(1.8))]
    assert report.read_scalars(tmp_path / "missing") == {}


def test_report_has_the_tables_findings_and_plots(results_dir, tmp_path):
    write_events(tmp_path / "sft", {"train/loss": [(0, 3.0), (5, 2.0)], "val/loss": [(5, 2.2)]})
    dpo_tags = ("loss", "rewards/accuracies", "rewards/margins")
    write_events(
        tmp_path / "dpo", {f"{split}/{t}": [(0, 0.7), (4, 0.4)] for t in dpo_tags for split in ("train", "val")}
    )
    path = report.write_report(results_dir, tmp_path / "sft", tmp_path / "dpo")
    text = path.read_text()
    assert "| Metric | base | SFT | SFT+DPO | better |" in text
    assert "| Held-out preference accuracy (log p chosen > rejected) | 50.0% | 60.0% | 90.0% | higher |" in text
    # The SFT column has no implicit reward: SFT is the reference.
    assert "| Implicit-reward accuracy vs SFT reference | 75.0% | - | 75.0% | higher |" in text
    assert "| reasoning | 0.0% | 50.0% | 100.0% |" in text
    # A results file without per-item tests gets the raw differences, never a "beats" verdict.
    assert "- SFT vs base on the checked score: 50.0% vs 0.0%" in text
    assert "- SFT+DPO vs SFT on held-out preference accuracy: 90.0% vs 60.0%" in text
    assert "- SFT+DPO vs SFT on the checked score of safety (untested): 50.0% vs 50.0%" in text
    assert "beats" not in text
    assert "`train/loss` 3.000 -> 2.000" in text
    for name in ("per_category_scores", "sft_training", "dpo_training"):
        png = results_dir / "plots" / f"{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
        assert f"(plots/{name}.png)" in text


def test_report_without_training_logs_still_has_the_tables(results_dir, tmp_path):
    text = report.write_report(results_dir, tmp_path / "no-sft", None).read_text()
    assert "| Metric |" in text and "no TensorBoard scalars found" in text
    assert not (results_dir / "plots" / "sft_training.png").exists()


def test_missing_results_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit, match="run scripts/evaluate.py first"):
        report.main(["--results-dir", str(tmp_path)])


def test_findings_state_interval_p_and_verdict_and_mark_noise_as_not_significant():
    """One pair of 120 more right is noise; 40 more of 120 is not (both with Holm over the family)."""
    from evaluation.comparisons import paired_comparisons

    base = [-1.0] * 60 + [1.0] * 60
    sft = [-1.0] * 40 + [1.0] * 80
    sft_dpo = [-1.0] * 39 + [1.0] * 81  # one pair better than SFT
    results = {
        "meta": {"labels": {"base": "base", "sft": "SFT", "sft_dpo": "SFT+DPO"}},
        "metrics": {},
        "comparisons": paired_comparisons({"base": base, "sft": sft, "sft_dpo": sft_dpo}, {}),
    }
    lines = report.findings(results, ())
    accuracy = [line for line in lines if "preference accuracy" in line]
    assert accuracy[1].startswith("- SFT+DPO vs SFT on held-out preference accuracy: +0.8 points (95 % CI ")
    assert "p = 1 (exact McNemar, n = 120; Holm-adjusted 1): not significant" in accuracy[1]
    # base -> SFT: 20 discordant pairs, all one way: exact p = 2 / 2^20
    assert accuracy[0].startswith("- SFT vs base on held-out preference accuracy: +16.7 points")
    assert f"p = {2 / 2**20:.3g} (exact McNemar" in accuracy[0] and accuracy[0].endswith("**significant**")
