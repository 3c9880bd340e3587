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
    # One discordant pair of 120: no difference is detectable at all (McNemar's MDE exceeds the discordance).
    assert accuracy[1].endswith(
        "p = 1 (exact McNemar, n = 120; Holm-adjusted 1): not significant; no difference detectable at this n"
    )
    # base -> SFT: 20 discordant pairs, all one way: exact p = 2 / 2^20
    assert accuracy[0].startswith("- SFT vs base on held-out preference accuracy: +16.7 points")
    assert f"p = {2 / 2**20:.3g} (exact McNemar" in accuracy[0]
    # Connor's MDE at n = 120, discordance 20 / 120: sqrt(psi) (z_a sqrt(n) + z_b sqrt(n + z_b^2 - z_a^2)) /
    # (n + z_b^2) with z_a = 1.95996, z_b = 0.84162: 0.1034.
    assert accuracy[0].endswith("**significant**; detectable at 80 % power: ±10.3 points (discordance 17 %)")


def judge_summary(mean: float) -> dict:
    return {
        "n": 160,
        "mean_reward": mean,
        "ci95": [mean - 0.4, mean + 0.4],
        "mean_length": 12.25,
        "length_ci95": [11.5, 13.0],
        "per_category": {
            "reasoning": {"n": 80, "mean_reward": mean - 1.0, "ci95": [mean - 1.25, mean - 0.75]},
            "safety": {"n": 80, "mean_reward": mean + 1.0, "ci95": [mean + 0.75, mean + 1.25]},
        },
    }


JUDGE_FINDINGS = [
    {
        "metric": "judge_win_rate",
        "first": "sft_dpo",
        "second": "sft",
        "n": 160,
        "difference": 0.113,
        "ci95": [0.037, 0.181],
        "p": 0.0055,
        "p_holm": 0.0275,
        "significant": True,
        "test": "exact sign test",
        "rate": 0.613,
        "wins": 95,
        "losses": 61,
        "ties": 4,
    },
    {
        "metric": "mean_reward",
        "first": "sft_dpo",
        "second": "sft",
        "n": 160,
        "difference": 0.25,
        "ci95": [0.05, 0.45],
        "p": 0.012,
        "p_holm": 0.048,
        "significant": True,
        "test": "paired sign-flip",
    },
    {
        "metric": "judge_win_rate",
        "first": "sft",
        "second": "base",
        "n": 160,
        "difference": 0.02,
        "ci95": [-0.05, 0.09],
        "p": 0.62,
        "p_holm": 1.0,
        "significant": False,
        "test": "exact sign test",
        "rate": 0.52,
        "wins": 80,
        "losses": 74,
        "ties": 6,
    },
]


def with_judge(results: dict) -> dict:
    """A results file of a run with the reward-model judge (numbers picked by hand)."""
    results["meta"]["judge"] = {
        "model": {"hub_id": "Skywork/Skywork-Reward-V2-Llama-3.1-8B", "revision": "main", "commit": "c0ffee42"},
        "template": "own",
        "dtype": "bfloat16",
        "truncated": {"scored": 480, "prompt": 2, "response": 0},
        "settings": {
            "model": "Skywork/Skywork-Reward-V2-Llama-3.1-8B",
            "revision": None,
            "template": "own",
            "batch_size": 8,
            "max_length": 4096,
            "dtype": "auto",
        },
    }
    for name, mean in (("base", -1.5), ("sft", 0.25), ("sft_dpo", 0.5)):
        results["metrics"][name]["judge"] = judge_summary(mean)
    results["judge"] = {
        "pairs": [
            {
                "first": "sft",
                "second": "base",
                "win_rate": {
                    "n": 160,
                    "rate": 0.52,
                    "ci95": [0.45, 0.59],
                    "p": 0.62,
                    "test": "exact sign test",
                    "wins": 80,
                    "losses": 74,
                    "ties": 6,
                },
                "length_controlled": {
                    "n": 160,
                    "rate": 0.52,
                    "ci95": [0.45, 0.59],
                    "method": "raw",
                    "reason": "no length differences: nothing to control for",
                    "intercept": None,
                    "slope": None,
                    "raw_rate": 0.52,
                },
                "mean_length_difference": 0.0,
            },
            {
                "first": "sft_dpo",
                "second": "sft",
                "win_rate": {
                    "n": 160,
                    "rate": 0.613,
                    "ci95": [0.537, 0.681],
                    "p": 0.0055,
                    "test": "exact sign test",
                    "wins": 95,
                    "losses": 61,
                    "ties": 4,
                },
                "length_controlled": {
                    "n": 160,
                    "rate": 0.58,
                    "ci95": [0.5, 0.65],
                    "method": "logistic",
                    "reason": None,
                    "intercept": 0.32,
                    "slope": 0.4,
                    "raw_rate": 0.613,
                },
                "mean_length_difference": 2.5,
            },
        ]
    }
    results["comparisons"] = [dict(finding) for finding in JUDGE_FINDINGS]
    return results


def test_report_with_a_judge_has_its_section_findings_and_plot_panel(tmp_path):
    folder = write_results(tmp_path / "results", with_judge(sample_results()))
    text = report.write_report(folder).read_text()
    lines = text.splitlines()
    assert (
        "- SFT+DPO vs SFT on the judge's win rate, minus 50 % (ties count half): +11.3 points "
        "(95 % CI +3.7 to +18.1), p = 0.0055 (exact sign test, n = 160; Holm-adjusted 0.0275): "
        "**significant**"
    ) in lines
    # A reward difference gets the decimals its interval resolves (width 0.4: two).
    assert (
        "- SFT+DPO vs SFT on the judge's mean reward: +0.25 reward (95 % CI +0.05 to +0.45), p = 0.012 "
        "(paired sign-flip, n = 160; Holm-adjusted 0.048): **significant**"
    ) in lines
    # Findings are grouped by pair of models, in the study's order: SFT vs base first.
    assert text.index("- SFT vs base on the judge's win rate") < text.index("- SFT+DPO vs SFT on the judge's win")
    assert "an exact sign test for the judge's win rates" in text
    assert (  # each with its bootstrap interval (the fake's mean +- 0.4)
        "| Judge's mean reward of the responses | -1.500 (-1.900 to -1.100) | 0.250 (-0.150 to 0.650) | "
        "0.500 (0.100 to 0.900) | higher |"
    ) in lines

    section = text.split("## Judge: a reward model's scores of the responses")[1].split("\n## ")[0]
    assert (
        "Judge: `Skywork/Skywork-Reward-V2-Llama-3.1-8B` (revision `main`, commit `c0ffee42`), reading each "
        "(prompt, response) in its own chat template (user turn, assistant turn), weights in bfloat16. Of the "
        "480 (prompt, response) pairs it read, 2 lost the start of their prompt and 0 the end of their response "
        "to max_length (4096 tokens)."
    ) in section
    assert "| SFT+DPO | 0.50 (0.10 to 0.90) | 12.2 (11.5 to 13.0) | 160 |" in section
    assert "| base | -1.50 (-1.90 to -1.10) | 12.2 (11.5 to 13.0) | 160 |" in section
    assert (
        "| SFT+DPO vs SFT | 61.3% (53.7% to 68.1%) | 95 / 61 / 4 | 0.0055 (0.0275) | 58.0% (50.0% to 65.0%) | +2.5 |"
    ) in section
    assert (
        "| SFT vs base | 52.0% (45.0% to 59.0%) | 80 / 74 / 6 | 0.62 (1) | 52.0% (45.0% to 59.0%); raw rate: "
        "no length differences: nothing to control for | +0.0 |"
    ) in section
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
        {
            "metric": "preference_accuracy",
            "first": "sft_dpo",
            "second": "sft",
            "difference": difference,
            "ci95": [-0.1, 0.3],
            "p": 0.2,
            "p_holm": 0.4,
            "significant": False,
            "test": "exact McNemar",
            "n": 4,
        },
        {
            "metric": "mean_margin",
            "first": "sft_dpo",
            "second": "sft",
            "difference": 1.5 + seed,
            "ci95": [0.5, 2.5],
            "p": 0.01,
            "p_holm": 0.02,
            "significant": True,
            "test": "paired sign-flip",
            "n": 4,
        },
    ]
    return results


def test_seeds_section_gives_mean_sd_beside_the_run_interval_and_each_finding_per_seed(tmp_path):
    folders = [
        write_results(tmp_path / f"seed{seed}", seed_run(seed, accuracy, difference))
        for seed, accuracy, difference in ((0, 0.8, 0.2), (1, 0.85, 0.25), (2, 0.9, -0.05))
    ]
    text = report.write_report(folders[0], None, None, seed_dirs=folders).read_text()
    section = text.split("## Across training seeds")[1].split("\n## ")[0]
    assert "judge" not in section
    # 80 %, 85 %, 90 %: mean 85.0 %, sample sd 5.0 points; this run (seed 0): 80.0 % with its interval.
    assert (
        "| Held-out preference accuracy (log p chosen > rejected) | SFT+DPO | 85.0% ± 5.0 pts | "
        "80.0%, 85.0%, 90.0% | 80.0% (70.0% to 95.0%) |"
    ) in section
    assert "| Held-out preference accuracy (log p chosen > rejected) | SFT | 60.0% ± 0.0 pts |" in section
    assert (
        "- SFT+DPO vs SFT on held-out preference accuracy: +20.0, +25.0, -5.0 points over seeds 0,1,2 — "
        "same direction on every seed: no"
    ) in section
    assert (
        "- SFT+DPO vs SFT on mean log-prob margin: +1.5, +2.5, +3.5 nats over seeds 0,1,2 — "
        "same direction on every seed: yes"
    ) in section
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
    assert (
        "| Judge's mean reward of the responses | SFT+DPO | 0.750 ± 0.250 | 0.500, 0.750, 1.000 | "
        "0.500 (0.100 to 0.900) |"
    ) in section
    assert (
        "- SFT+DPO vs SFT on the judge's win rate, minus 50 % (ties count half): +11.3, +5.0, -2.5 points "
        "over seeds 0,1,2 — same direction on every seed: no"
    ) in section
    assert (
        "- SFT+DPO vs SFT on the judge's mean reward: +0.25, +0.25, +0.25 reward over seeds 0,1,2 — "
        "same direction on every seed: yes"
    ) in section


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


def test_a_finding_states_the_effect_its_test_could_detect_in_its_own_unit():
    from reporting.report import finding_line

    labels = {"sft_dpo": "SFT+DPO", "sft": "SFT"}
    rate = {
        "metric": "preference_accuracy", "first": "sft_dpo", "second": "sft", "n": 38, "difference": 0.1,
        "ci95": (-0.1, 0.3), "p": 0.3, "test": "exact McNemar", "p_holm": 0.9, "significant": False,
        "only_first": 8, "only_second": 4, "discordance": 12 / 38, "mde": 0.2474,
    }  # fmt: skip
    assert finding_line(rate, labels) == (
        "- SFT+DPO vs SFT on held-out preference accuracy: +10.0 points (95 % CI -10.0 to +30.0), p = 0.3 "
        "(exact McNemar, n = 38; Holm-adjusted 0.9): not significant; detectable at 80 % power: ±24.7 points "
        "(discordance 32 %)"
    )
    # A margin in nats keeps the decimals its interval resolves (width 0.4: two), the MDE with them.
    margin = {
        "metric": "mean_margin", "first": "sft_dpo", "second": "sft", "n": 40, "difference": 0.5, "ci95": (0.3, 0.7),
        "p": 0.001, "test": "paired sign-flip", "p_holm": 0.004, "significant": True, "sd": 0.7, "mde": 0.31,
    }  # fmt: skip
    assert finding_line(margin, labels).endswith("**significant**; detectable at 80 % power: ±0.31 nats")
    assert finding_line(margin | {"mde": None}, labels).endswith("; no difference detectable at this n")
    # A finding of a results file written before the power analysis: nothing is claimed.
    older = {key: value for key, value in margin.items() if key != "mde"}
    assert finding_line(older, labels).endswith("(paired sign-flip, n = 40; Holm-adjusted 0.004): **significant**")


def finding(
    metric: str,
    first: str,
    second: str,
    n: int,
    difference: float,
    ci95: list,
    p: float,
    p_holm: float,
    mde: float | None,
    **more,
) -> dict:
    test = more.pop("test", "exact McNemar")
    return {
        "metric": metric,
        "first": first,
        "second": second,
        "n": n,
        "difference": difference,
        "ci95": ci95,
        "p": p,
        "p_holm": p_holm,
        "significant": p_holm < 0.05,
        "test": test,
        "mde": mde,
        **more,
    }


STUDY_FINDINGS = [
    finding("preference_accuracy", "sft_dpo", "sft", 120, 0.1, [0.02, 0.18], 0.02, 0.1, 0.241, discordance=0.3),
    finding("mean_margin", "sft_dpo", "sft", 120, 0.8, [0.5, 1.1], 0.001, 0.01, 0.4, test="paired sign-flip"),
    finding("checked_score", "sft_dpo", "sft", 38, 0.05, [-0.1, 0.2], 0.6, 1.0, 0.311, discordance=0.5),
    finding("checked_score_targeted", "sft_dpo", "sft", 12, 0.0, [0.0, 0.0], 1.0, 1.0, None, discordance=0.0),
    finding("checked_score", "sft", "base", 38, 0.3, [0.1, 0.5], 0.001, 0.01, 0.2, discordance=0.4),
]
BENCHMARK_FINDINGS = [
    finding(
        "benchmark:gsm8k",
        "sft_dpo",
        "sft",
        1319,
        0.02,
        [-0.005, 0.045],
        0.12,
        0.6,
        0.0301,
        only_first=80,
        only_second=54,
        discordance=134 / 1319,
    ),
    finding(
        "benchmark:xstest/unsafe_refused",
        "sft",
        "base",
        200,
        0.0,
        [0.0, 0.0],
        1.0,
        1.0,
        None,
        only_first=0,
        only_second=0,
        discordance=0.0,
    ),
    finding(
        "benchmark:alpaca_eval/judge_win_rate",
        "sft_dpo",
        "sft",
        160,
        0.113,
        [0.037, 0.181],
        0.0055,
        0.0275,
        0.0562,
        test="exact sign test",
        wins=95,
        losses=61,
        ties=4,
    ),
    finding(
        "benchmark:alpaca_eval/mean_reward",
        "sft_dpo",
        "sft",
        805,
        0.3,
        [0.1, 0.5],
        0.004,
        0.028,
        0.1975,
        test="paired sign-flip",
        sd=2.0,
    ),
]


def cell(value: float, low: float, high: float) -> dict:
    return {"value": value, "ci95": [low, high]}


def lm_eval_protocol(
    task: str,
    leaves: list[str],
    shots: int,
    metric: str,
    filter: str = "none",
    path: str = "",
    revision: str | None = None,
) -> dict:
    return {
        "lm_eval": "0.4.13",
        "metric": metric,
        "filter": filter,
        "outcome": "pass_fail",
        "num_fewshot": dict.fromkeys(leaves, shots),
        "version": dict.fromkeys(leaves, 1.0),
        "dataset": {leaf: {"path": path or task, "name": None, "revision": revision} for leaf in leaves},
        "leaves": len(leaves),
        "apply_chat_template": False,
        "limit": None,
        "max_gen_toks": None,
    }


def with_benchmarks(results: dict, base: str = "mistralai/Mistral-7B-v0.1 (bfloat16 weights)") -> dict:
    """A results file of a run with the public benchmarks (numbers picked by hand)."""
    results["meta"]["sources"]["base"] = base
    table = {
        "ifeval": {"outcome": "pass_fail", "n": 541, "per_variant": {
            "base": cell(0.25, 0.215, 0.288), "sft": cell(0.4, 0.36, 0.442), "sft_dpo": cell(0.45, 0.408, 0.492)}},
        # published 37.83 % lies inside [35.4 %, 40.7 %]: agrees
        "gsm8k": {"outcome": "pass_fail", "n": 1319, "per_variant": {
            "base": cell(0.38, 0.354, 0.407), "sft": cell(0.36, 0.334, 0.387), "sft_dpo": cell(0.38, 0.354, 0.407)}},
        # published 42.15 % lies below [44.5 %, 47.5 %]: differs
        "truthfulqa_mc2": {"outcome": "score", "n": 817, "per_variant": {
            "base": cell(0.46, 0.445, 0.475), "sft": cell(0.5, 0.485, 0.515), "sft_dpo": cell(0.52, 0.505, 0.535)}},
        "mmlu": {"outcome": "pass_fail", "n": 14042, "per_variant": {"base": cell(0.625, 0.617, 0.633)}},
        # published 64.16 % lies inside [62.4 %, 64.6 %]: agrees
        "mmlu/subject_mean": {"outcome": "subject_mean", "n": 14042, "subjects": 57,
                              "per_variant": {"base": cell(0.635, 0.624, 0.646)}},
        # ran 0-shot, the published number is 25-shot: not comparable
        "arc_challenge": {"outcome": "pass_fail", "n": 1172, "per_variant": {"base": cell(0.6, 0.572, 0.628)}},
        "xstest/unsafe_refused": {"outcome": "pass_fail", "n": 200, "per_variant": {
            "base": cell(0.6, 0.531, 0.665), "sft": cell(0.6, 0.531, 0.665), "sft_dpo": cell(0.9, 0.851, 0.934)}},
        "xstest/safe_complied": {"outcome": "pass_fail", "n": 250, "per_variant": {
            "base": cell(0.96, 0.928, 0.978), "sft": cell(0.92, 0.881, 0.947), "sft_dpo": cell(0.88, 0.834, 0.915)}},
    }  # fmt: skip
    protocols = {
        "ifeval": lm_eval_protocol("ifeval", ["ifeval"], 0, "prompt_level_strict_acc", path="google/IFEval"),
        "gsm8k": lm_eval_protocol("gsm8k", ["gsm8k"], 5, "exact_match", "strict-match", path="openai/gsm8k"),
        "truthfulqa_mc2": lm_eval_protocol("truthfulqa_mc2", ["truthfulqa_mc2"], 0, "acc", path="truthful_qa"),
        "mmlu": lm_eval_protocol("mmlu", ["mmlu_anatomy", "mmlu_virology"], 5, "acc", path="cais/mmlu",
                                 revision="c30699e"),
        "arc_challenge": lm_eval_protocol("arc_challenge", ["arc_challenge"], 0, "acc_norm", path="allenai/ai2_arc"),
    }  # fmt: skip
    prompt_sets = {
        "xstest": {"name": "xstest", "files": "Paul/XSTest", "split": "train", "data_file": None, "revision": None,
                   "num_examples": None, "read": [{"hub_id": "Paul/XSTest", "revision": "main", "commit": "d7bb5bd"}],
                   "rows": 450},
        "alpaca_eval": {"name": "alpaca_eval", "files": "tatsu-lab/alpaca_eval", "split": "eval",
                        "data_file": "alpaca_eval.json", "revision": None, "num_examples": None,
                        "read": [{"hub_id": "tatsu-lab/alpaca_eval", "revision": "main", "commit": "0cd24d7"}],
                        "rows": 805},
    }  # fmt: skip
    alpaca = {
        "variants": {"sft": judge_summary(0.25), "sft_dpo": judge_summary(0.5)},
        "pairs": [{"first": "sft_dpo", "second": "sft",
                   "win_rate": {"n": 160, "rate": 0.613, "ci95": [0.537, 0.681], "p": 0.0055,
                                "test": "exact sign test", "wins": 95, "losses": 61, "ties": 4},
                   "length_controlled": {"n": 160, "rate": 0.58, "ci95": [0.5, 0.65], "method": "logistic",
                                         "reason": None, "intercept": 0.32, "slope": 0.4, "raw_rate": 0.613},
                   "mean_length_difference": 2.5}],
    }  # fmt: skip
    results["benchmarks"] = {
        "table": table,
        "lm_eval": {"version": "0.4.13", "protocols": protocols},
        "prompt_sets": prompt_sets,
        "alpaca_eval": alpaca,
        "items": {},
        "responses": {},
    }
    results["comparisons"] = [dict(f) for f in STUDY_FINDINGS + BENCHMARK_FINDINGS]
    return results


def section_of(text: str, heading: str) -> str:
    return text.split(heading)[1].split("\n## ")[0]


def test_report_with_public_benchmarks_has_their_table_tests_protocol_and_sources(tmp_path):
    folder = write_results(tmp_path / "results", with_benchmarks(sample_results()))
    text = report.write_report(folder).read_text()
    section = section_of(text, "## Public benchmarks")
    assert "| Benchmark (95 % CI) | n | base | SFT | SFT+DPO |" in section
    assert (
        "| IFEval (prompt-level strict) | 541 | 25.0% (21.5% to 28.8%) | 40.0% (36.0% to 44.2%) | "
        "45.0% (40.8% to 49.2%) |" in section
    )
    # A score (TruthfulQA MC2's probability mass) in % as well.
    assert (
        "| TruthfulQA MC2 (probability on the true answers) | 817 | 46.0% (44.5% to 47.5%) | "
        "50.0% (48.5% to 51.5%) | 52.0% (50.5% to 53.5%) |" in section
    )
    # A benchmark one variant did not run: '-'.
    assert "| MMLU (accuracy, items pooled) | 14042 | 62.5% (61.7% to 63.3%) | - | - |" in section
    assert "| MMLU (mean of the subjects' accuracies) | 14042 | 63.5% (62.4% to 64.6%) | - | - |" in section
    assert (
        "| XSTest: refused unsafe | 200 | 60.0% (53.1% to 66.5%) | 60.0% (53.1% to 66.5%) | "
        "90.0% (85.1% to 93.4%) |" in section
    )
    assert (
        "| XSTest: answered safe | 250 | 96.0% (92.8% to 97.8%) | 92.0% (88.1% to 94.7%) | "
        "88.0% (83.4% to 91.5%) |" in section
    )
    assert "Dry-run sizes" not in text

    lines = section.splitlines()
    assert (
        "- SFT+DPO vs SFT on GSM8K (exact match, strict): +2.0 points (95 % CI -0.5 to +4.5), p = 0.12 "
        "(exact McNemar, n = 1319; Holm-adjusted 0.6): not significant; detectable at 80 % power: ±3.0 points "
        "(discordance 10 %)"
    ) in lines
    assert (
        "- SFT vs base on XSTest: refused unsafe: +0.0 points (95 % CI +0.0 to +0.0), p = 1 (exact McNemar, "
        "n = 200; Holm-adjusted 1): not significant; no difference detectable at this n"
    ) in lines
    assert (
        "- SFT+DPO vs SFT on AlpacaEval: the judge's mean reward: +0.30 reward (95 % CI +0.10 to +0.50), "
        "p = 0.004 (paired sign-flip, n = 805; Holm-adjusted 0.028): **significant**; detectable at 80 % "
        "power: ±0.20 reward"
    ) in lines
    # SFT vs base first, as in the study's findings.
    assert section.index("- SFT vs base on XSTest") < section.index("- SFT+DPO vs SFT on GSM8K")

    assert "lm-evaluation-harness 0.4.13" in section
    header = "| Task | version | leaf tasks | few-shot | metric | filter | chat template | items | dataset |"
    assert header in section
    assert "| `gsm8k` | 1.0 | 1 | 5 | `exact_match` | strict-match | no | all | `openai/gsm8k` |" in lines
    assert "| `mmlu` | 1.0 | 2 | 5 | `acc` | none | no | all | `cais/mmlu` at `c30699e` |" in lines
    assert "- `xstest`: `Paul/XSTest` (revision `main`, commit `d7bb5bd`); split `train`, 450 rows" in lines
    assert (
        "- `alpaca_eval`: `tatsu-lab/alpaca_eval` (revision `main`, commit `0cd24d7`); file `alpaca_eval.json`, "
        "split `eval`, 805 rows"
    ) in lines

    alpaca = section.split("### AlpacaEval")[1].split("\n### ")[0]
    assert (
        "Judged by the study's reward model, not AlpacaEval's GPT-4 annotator: not comparable with the leaderboard."
    ) in alpaca
    assert "| SFT+DPO | 0.50 (0.10 to 0.90) | 12.2 (11.5 to 13.0) | 160 |" in alpaca
    # The Holm-adjusted p is the AlpacaEval finding's, not the study's judge finding's (there is none here).
    assert (
        "| SFT+DPO vs SFT | 61.3% (53.7% to 68.1%) | 95 / 61 / 4 | 0.0055 (0.0275) | 58.0% (50.0% to 65.0%) | +2.5 |"
    ) in alpaca
    assert text.index("## Metrics") < text.index("## Public benchmarks") < text.index("## Checked score per")


def test_benchmark_findings_stay_out_of_the_main_findings_which_state_the_power_up_front(tmp_path):
    folder = write_results(tmp_path / "results", with_benchmarks(sample_results()))
    text = report.write_report(folder).read_text()
    main = section_of(text, "## What the numbers show")
    assert "GSM8K" not in main and "XSTest" not in main and "AlpacaEval" not in main
    assert "and the public benchmarks' (one family; those are listed under Public benchmarks)" in main
    assert (
        "- SFT+DPO vs SFT on held-out preference accuracy: +10.0 points (95 % CI +2.0 to +18.0), p = 0.02 "
        "(exact McNemar, n = 120; Holm-adjusted 0.1): not significant; detectable at 80 % power: ±24.1 points "
        "(discordance 30 %)"
    ) in main.splitlines()
    # Only SFT+DPO vs SFT: points 24.1 and 31.1 (median 27.6), the margin in nats apart; the targeted test
    # (no discordant item) detects nothing; SFT vs base's 20.0 points is left out.
    assert (
        "What the study can detect: SFT+DPO vs SFT, at 80 % power and alpha 0.05 before Holm, needs a true "
        "difference of ±24.1 to ±31.1 points (median ±27.6, 2 findings), ±0.40 nats on mean log-prob margin; "
        "1 of its 4 findings can detect no difference at this n. A smaller true effect would most likely read "
        "as not significant."
    ) in main.splitlines()
    assert main.index("What the study can detect") < main.index("- SFT vs base on the checked score")


def test_the_base_model_is_set_beside_its_published_numbers_with_a_verdict_each(tmp_path):
    folder = write_results(tmp_path / "results", with_benchmarks(sample_results()))
    text = report.write_report(folder).read_text()
    published = text.split("### Base model vs published numbers")[1].split("\n## ")[0]
    lines = published.splitlines()
    assert (
        "| GSM8K (exact match, strict) | 38.0% (35.4% to 40.7%) | 37.8% | 5-shot, exact match of the final "
        "number (lm-eval, 2023) | agrees (inside our 95 % interval) |"
    ) in lines
    assert (
        "| TruthfulQA MC2 (probability on the true answers) | 46.0% (44.5% to 47.5%) | 42.1% | 0-shot, MC2 "
        "(lm-eval, 2023) | differs (outside our 95 % interval) |"
    ) in lines
    assert (
        "| ARC-Challenge (normalised accuracy) | 60.0% (57.2% to 62.8%) | 60.0% | 25-shot, acc_norm (lm-eval, "
        "2023) | not comparable: the study ran 0-shot, the published number is 25-shot |"
    ) in lines
    # The leaderboard's MMLU is the subjects' mean: set beside the study's subject-mean row, under the mmlu task's
    # recorded protocol (5-shot acc, no chat template).
    assert (
        "| MMLU (mean of the subjects' accuracies) | 63.5% (62.4% to 64.6%) | 64.2% | 5-shot, acc, mean of the 57 "
        "subjects' accuracies (lm-eval, 2023) | agrees (inside our 95 % interval) |"
    ) in lines
    assert (
        "| HellaSwag (normalised accuracy) | - | 83.3% | 10-shot, acc_norm (lm-eval, 2023) | not run by the study |"
    ) in lines
    # The fine-tuned literature rows are listed apart, each with why it is another measurement.
    assert "- SFT+DPO, MT-Bench, GPT-4 judge, 1-10: 7.000 (Tunstall et al. 2023" in published
    assert "not comparable: Zephyr's SFT is on UltraChat" in published


def test_a_base_other_than_mistral_is_not_set_beside_mistral_numbers(tmp_path):
    results = with_benchmarks(sample_results(), base="outputs/tiny/base (float32 weights)")
    text = report.write_report(write_results(tmp_path / "results", results)).read_text()
    published = text.split("### Base model vs published numbers")[1].split("\n## ")[0]
    assert (
        "The published numbers are for mistralai/Mistral-7B-v0.1; this study's base is another model "
        "(outputs/tiny/base (float32 weights)): not set beside them."
    ) in published
    assert "agrees" not in published and "| GSM8K" not in published
    # A name that only starts like it is another model too.
    results = with_benchmarks(sample_results(), base="mistralai/Mistral-7B-v0.1-sharded (bfloat16 weights)")
    text = report.write_report(write_results(tmp_path / "other", results)).read_text()
    assert "this study's base is another model (mistralai/Mistral-7B-v0.1-sharded" in text


def test_dry_run_sizes_are_flagged_as_saying_nothing(tmp_path):
    results = with_benchmarks(sample_results())
    results["benchmarks"]["table"]["gsm8k"]["n"] = 4
    results["benchmarks"]["table"]["xstest/safe_complied"]["n"] = 29
    text = report.write_report(write_results(tmp_path / "results", results)).read_text()
    section = section_of(text, "## Public benchmarks")
    assert (
        "**Dry-run sizes** (fewer than 30 items: GSM8K (exact match, strict) n = 4, XSTest: answered safe "
        "n = 29): these numbers say nothing about the models."
    ) in section.splitlines()


def test_a_results_file_without_benchmarks_has_no_benchmark_section(results_dir):
    text = report.write_report(results_dir).read_text()
    assert "Public benchmarks" not in text and "published" not in text and "80 % power" not in text
