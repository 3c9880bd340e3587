"""reporting/report.py: tables, findings, plots and the seeds section from results files and event files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reporting import report

VARIANTS = ["base", "sft", "sft_dpo"]
LABELS = {"base": "base", "sft": "SFT", "sft_dpo": "SFT+DPO"}


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


def sample_results() -> dict:
    implicit = {"reference": "sft", "beta": 0.1, "n": 4, "accuracy": 0.75, "mean_margin": 0.3, "per_category": {}}
    return {
        "meta": {
            "created": "2026-01-01T00:00:00+00:00",
            "variants": VARIANTS,
            "labels": LABELS,
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


def write_results(folder: Path, results: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "evaluation_results.json").write_text(json.dumps(results))
    return folder


@pytest.fixture
def results_dir(tmp_path) -> Path:
    return write_results(tmp_path / "results", sample_results())


def test_report_has_the_tables_findings_and_plots(results_dir, tmp_path, write_events):
    write_events(tmp_path / "sft", {"train/loss": [(0, 3.0), (5, 2.0)], "val/loss": [(5, 2.2)]})
    dpo_tags = ("loss", "rewards/accuracies", "rewards/margins")
    write_events(
        tmp_path / "dpo", {f"{split}/{t}": [(0, 0.7), (4, 0.4)] for t in dpo_tags for split in ("train", "val")}
    )
    path = report.write_report(results_dir, tmp_path / "sft", tmp_path / "dpo")
    text = path.read_text()
    assert "| Metric (95 % CI) | base | SFT | SFT+DPO | better |" in text
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
    assert "Across training seeds" not in text
    # No judge ran: no judge section, row, finding or test named.
    assert "## Judge" not in text and "judge" not in text.lower()


def test_report_without_training_logs_still_has_the_tables(results_dir, tmp_path):
    text = report.write_report(results_dir, tmp_path / "no-sft", None).read_text()
    assert "| Metric (95 % CI) |" in text and "no TensorBoard scalars found" in text
    assert not (results_dir / "plots" / "sft_training.png").exists()


def test_findings_state_interval_p_and_verdict_and_mark_noise_as_not_significant():
    """One pair of 120 more right is noise; 40 more of 120 is not (both with Holm over the family)."""
    from evaluation.findings import paired_comparisons

    base = [-1.0] * 60 + [1.0] * 60
    sft = [-1.0] * 40 + [1.0] * 80
    sft_dpo = [-1.0] * 39 + [1.0] * 81  # one pair better than SFT
    results = {
        "meta": {"labels": LABELS},
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


def judge_summary(mean: float) -> dict:
    return {"n": 160, "mean_reward": mean, "ci95": [mean - 0.4, mean + 0.4], "mean_length": 12.25,
            "length_ci95": [11.5, 13.0], "per_category": {
                "reasoning": {"n": 80, "mean_reward": mean - 1.0, "ci95": [mean - 1.25, mean - 0.75]},
                "safety": {"n": 80, "mean_reward": mean + 1.0, "ci95": [mean + 0.75, mean + 1.25]}}}


JUDGE_FINDINGS = [
    {"metric": "judge_win_rate", "first": "sft_dpo", "second": "sft", "n": 160, "difference": 0.113,
     "ci95": [0.037, 0.181], "p": 0.0055, "p_holm": 0.0275, "significant": True, "test": "exact sign test",
     "rate": 0.613, "wins": 95, "losses": 61, "ties": 4},
    {"metric": "mean_reward", "first": "sft_dpo", "second": "sft", "n": 160, "difference": 0.25,
     "ci95": [0.05, 0.45], "p": 0.012, "p_holm": 0.048, "significant": True, "test": "paired sign-flip"},
    {"metric": "judge_win_rate", "first": "sft", "second": "base", "n": 160, "difference": 0.02,
     "ci95": [-0.05, 0.09], "p": 0.62, "p_holm": 1.0, "significant": False, "test": "exact sign test",
     "rate": 0.52, "wins": 80, "losses": 74, "ties": 6},
]


def with_judge(results: dict) -> dict:
    """A results file of a run with the reward-model judge (numbers picked by hand)."""
    results["meta"]["judge"] = {
        "model": {"hub_id": "Skywork/Skywork-Reward-V2-Llama-3.1-8B", "revision": "main", "commit": "c0ffee42"},
        "template": "own", "dtype": "bfloat16", "truncated": {"scored": 480, "prompt": 2, "response": 0},
        "settings": {"model": "Skywork/Skywork-Reward-V2-Llama-3.1-8B", "revision": None, "template": "own",
                     "batch_size": 8, "max_length": 4096, "dtype": "auto"},
    }
    for name, mean in (("base", -1.5), ("sft", 0.25), ("sft_dpo", 0.5)):
        results["metrics"][name]["judge"] = judge_summary(mean)
    results["judge"] = {"pairs": [
        {"first": "sft", "second": "base",
         "win_rate": {"n": 160, "rate": 0.52, "ci95": [0.45, 0.59], "p": 0.62, "test": "exact sign test",
                      "wins": 80, "losses": 74, "ties": 6},
         "length_controlled": {"n": 160, "rate": 0.52, "ci95": [0.45, 0.59], "method": "raw",
                               "reason": "no length differences: nothing to control for", "intercept": None,
                               "slope": None, "raw_rate": 0.52},
         "mean_length_difference": 0.0},
        {"first": "sft_dpo", "second": "sft",
         "win_rate": {"n": 160, "rate": 0.613, "ci95": [0.537, 0.681], "p": 0.0055, "test": "exact sign test",
                      "wins": 95, "losses": 61, "ties": 4},
         "length_controlled": {"n": 160, "rate": 0.58, "ci95": [0.5, 0.65], "method": "logistic", "reason": None,
                               "intercept": 0.32, "slope": 0.4, "raw_rate": 0.613},
         "mean_length_difference": 2.5},
    ]}
    results["comparisons"] = [dict(finding) for finding in JUDGE_FINDINGS]
    return results


def test_report_with_a_judge_has_its_section_findings_and_plot_panel(tmp_path):
    folder = write_results(tmp_path / "results", with_judge(sample_results()))
    text = report.write_report(folder).read_text()
    lines = text.splitlines()
    assert ("- SFT+DPO vs SFT on the judge's win rate, minus 50 % (ties count half): +11.3 points "
            "(95 % CI +3.7 to +18.1), p = 0.0055 (exact sign test, n = 160; Holm-adjusted 0.0275): "
            "**significant**") in lines
    # A reward difference gets the decimals its interval resolves (width 0.4: two).
    assert ("- SFT+DPO vs SFT on the judge's mean reward: +0.25 reward (95 % CI +0.05 to +0.45), p = 0.012 "
            "(paired sign-flip, n = 160; Holm-adjusted 0.048): **significant**") in lines
    # Findings are grouped by pair of models, in the study's order: SFT vs base first.
    assert text.index("- SFT vs base on the judge's win rate") < text.index("- SFT+DPO vs SFT on the judge's win")
    assert "an exact sign test for the judge's win rates" in text
    assert (  # each with its bootstrap interval (the fake's mean +- 0.4)
        "| Judge's mean reward of the responses | -1.500 (-1.900 to -1.100) | 0.250 (-0.150 to 0.650) | "
        "0.500 (0.100 to 0.900) | higher |"
    ) in lines

    section = text.split("## Judge: a reward model's scores of the responses")[1].split("\n## ")[0]
    assert ("Judge: `Skywork/Skywork-Reward-V2-Llama-3.1-8B` (revision `main`, commit `c0ffee42`), reading each "
            "(prompt, response) in its own chat template (user turn, assistant turn), weights in bfloat16. Of the "
            "480 (prompt, response) pairs it read, 2 lost the start of their prompt and 0 the end of their response "
            "to max_length (4096 tokens).") in section
    assert "| SFT+DPO | 0.50 (0.10 to 0.90) | 12.2 (11.5 to 13.0) | 160 |" in section
    assert "| base | -1.50 (-1.90 to -1.10) | 12.2 (11.5 to 13.0) | 160 |" in section
    assert ("| SFT+DPO vs SFT | 61.3% (53.7% to 68.1%) | 95 / 61 / 4 | 0.0055 (0.0275) | 58.0% (50.0% to 65.0%) "
            "| +2.5 |") in section
    assert ("| SFT vs base | 52.0% (45.0% to 59.0%) | 80 / 74 / 6 | 0.62 (1) | 52.0% (45.0% to 59.0%); raw rate: "
            "no length differences: nothing to control for | +0.0 |") in section
    # Each cell with the decimals its interval resolves (width 0.5: two).
    assert "| reasoning | -2.50 (-2.75 to -2.25) | -0.75 (-1.00 to -0.50) | -0.50 (-0.75 to -0.25) |" in section
    assert text.index("## Metrics") < text.index("## Judge") < text.index("## Checked score per category")
    assert "and the judge's reward." in text
    assert (folder / "plots" / "per_category_scores.png").read_bytes()[:4] == b"\x89PNG"


def seed_run(seed: int, sft_dpo_accuracy: float, difference: float) -> dict:
    results = sample_results()
    results["meta"]["training_seeds"] = {"sft": seed, "dpo": seed}
    results["metrics"]["sft_dpo"]["preference"]["accuracy"] = sft_dpo_accuracy
    results["metrics"]["sft_dpo"]["ci95"] = {"preference_accuracy": [0.7, 0.95]}
    results["comparisons"] = [
        {"metric": "preference_accuracy", "first": "sft_dpo", "second": "sft", "difference": difference,
         "ci95": [-0.1, 0.3], "p": 0.2, "p_holm": 0.4, "significant": False, "test": "exact McNemar", "n": 4},
        {"metric": "mean_margin", "first": "sft_dpo", "second": "sft", "difference": 1.5 + seed,
         "ci95": [0.5, 2.5], "p": 0.01, "p_holm": 0.02, "significant": True, "test": "paired sign-flip", "n": 4},
    ]
    return results


def test_seeds_section_gives_mean_sd_beside_the_run_interval_and_each_finding_per_seed(tmp_path):
    folders = [write_results(tmp_path / f"seed{seed}", seed_run(seed, accuracy, difference))
               for seed, accuracy, difference in ((0, 0.8, 0.2), (1, 0.85, 0.25), (2, 0.9, -0.05))]
    text = report.write_report(folders[0], None, None, seed_dirs=folders).read_text()
    section = text.split("## Across training seeds")[1].split("\n## ")[0]
    assert "judge" not in section
    # 80 %, 85 %, 90 %: mean 85.0 %, sample sd 5.0 points; this run (seed 0): 80.0 % with its interval.
    assert ("| Held-out preference accuracy (log p chosen > rejected) | SFT+DPO | 85.0% ± 5.0 pts | "
            "80.0%, 85.0%, 90.0% | 80.0% (70.0% to 95.0%) |") in section
    assert "| Held-out preference accuracy (log p chosen > rejected) | SFT | 60.0% ± 0.0 pts |" in section
    assert ("- SFT+DPO vs SFT on held-out preference accuracy: +20.0, +25.0, -5.0 points over seeds 0,1,2 — "
            "same direction on every seed: no") in section
    assert ("- SFT+DPO vs SFT on mean log-prob margin: +1.5, +2.5, +3.5 nats over seeds 0,1,2 — "
            "same direction on every seed: yes") in section
    assert text.index("## Metrics") < text.index("## Across training seeds") < text.index("## Checked score per")


def test_seeds_section_carries_the_judge_reward_and_win_rate_findings(tmp_path):
    folders = []
    for seed, difference in ((0, 0.113), (1, 0.05), (2, -0.025)):
        results = with_judge(seed_run(seed, 0.8, 0.1))
        results["metrics"]["sft_dpo"]["judge"]["mean_reward"] = 0.5 + 0.25 * seed
        results["comparisons"][0]["difference"] = difference
        folders.append(write_results(tmp_path / f"seed{seed}", results))
    text = report.write_report(folders[0], seed_dirs=folders).read_text()
    section = text.split("## Across training seeds")[1].split("\n## ")[0]
    # 0.5, 0.75, 1.0: mean 0.75, sample sd 0.25; this run (seed 0): 0.5 with its bootstrap interval.
    assert ("| Judge's mean reward of the responses | SFT+DPO | 0.750 ± 0.250 | 0.500, 0.750, 1.000 | "
            "0.500 (0.100 to 0.900) |") in section
    assert ("- SFT+DPO vs SFT on the judge's win rate, minus 50 % (ties count half): +11.3, +5.0, -2.5 points "
            "over seeds 0,1,2 — same direction on every seed: no") in section
    assert ("- SFT+DPO vs SFT on the judge's mean reward: +0.25, +0.25, +0.25 reward over seeds 0,1,2 — "
            "same direction on every seed: yes") in section


def test_a_targeted_finding_names_its_categories():
    from reporting.report import finding_line

    finding = {
        "metric": "checked_score_targeted", "first": "sft_dpo", "second": "sft", "n": 6, "difference": 5 / 6,
        "ci95": (0.5, 1.0), "p": 0.0625, "test": "exact McNemar", "p_holm": 0.25, "significant": False,
        "categories": ["safety", "reasoning"],
    }  # fmt: skip
    line = finding_line(finding, {"sft_dpo": "SFT+DPO", "sft": "SFT"})
    assert line == (
        "- SFT+DPO vs SFT on the checked score of the targeted categories (safety, reasoning): +83.3 points "
        "(95 % CI +50.0 to +100.0), p = 0.0625 (exact McNemar, n = 6; Holm-adjusted 0.25): not significant"
    )


def test_the_headline_table_shows_each_value_with_its_interval():
    from reporting.report import headline_table

    results = {
        "meta": {"variants": ["sft", "sft_dpo"], "labels": {"sft": "SFT", "sft_dpo": "SFT+DPO"}},
        "metrics": {
            "sft": {"perplexity": {"value": 4.5}, "ci95": {"perplexity": [4.25, 4.75]}},
            "sft_dpo": {"perplexity": {"value": 5.0}},  # no interval: the value alone
        },
    }
    table = headline_table(results)
    assert "| Perplexity on held-out instruction responses | 4.500 (4.250 to 4.750) | 5.000 | lower |" in table
