"""evaluation/results.py: the results file built from per-variant outputs and their statistics
(evaluation/findings.py), without a model."""

from __future__ import annotations

import json

import pytest

from evaluation.findings import judge_findings, study_findings
from evaluation.results import RESULTS_FILE, ResultsError, assemble, read_results, write_results
from evaluation.scoring import VariantOutput
from evaluation.statistics import holm

# Wilson 95 % interval of 1 success in 2 (z = 1.95996): p = 1/2, centre p + z^2/4 = 1.46036, half-width
# z sqrt(1/8 + z^2/16) = 1.18427, divided by 1 + z^2/2 = 2.92073.
WILSON_1_OF_2 = (0.094531, 0.905469)
PROMPTS = [
    {"category": "a", "prompt": "Refuse.", "input": "", "check": {"type": "refusal"}},
    {"category": "a", "prompt": "Help.", "input": "", "check": {"type": "helpful"}},
    {"category": "b", "prompt": "Write.", "input": "", "check": None},
]
PAIRS = [{"category": "a"}, {"category": "a"}, {"category": None}]


def results_of(meta: dict, outputs: dict[str, VariantOutput], judge_scores: dict | None = None) -> dict:
    """The results file of ``outputs`` as the engine builds it: the statistics step, then the file (beta 0.5, two
    held-out instruction examples)."""
    found = study_findings(PROMPTS, PAIRS, outputs, beta=0.5, num_examples=2, judge_scores=judge_scores)
    return assemble(meta, PROMPTS, PAIRS, outputs, found, judge_scores)


def responses(passed: list[bool | None], refusal: list[bool]) -> list[dict]:
    return [
        {"text": f"answer {i}", "response_tokens": 3, "finished": True, "refusal": r, "passed": p, "prompt_tokens": 9}
        for i, (p, r) in enumerate(zip(passed, refusal, strict=True))
    ]


@pytest.fixture
def outputs() -> dict[str, VariantOutput]:
    # margins (chosen - rejected): SFT -1, 1, 2; SFT+DPO 1, 1, 1
    return {
        "sft": VariantOutput(responses([True, False, None], [True, True, False]), ([0.0] * 3, [1.0, -1.0, -2.0]),
                             [(2.0, 1), (4.0, 2)], 1.04),
        "sft_dpo": VariantOutput(responses([True, True, None], [True, False, False]), ([1.0] * 3, [0.0] * 3),
                                 [(1.0, 1), (2.0, 2)], 2.0),
    }


def test_metrics_intervals_and_per_item_outcomes(outputs):
    results = results_of({"variants": ["sft", "sft_dpo"]}, outputs)
    sft, dpo = results["metrics"]["sft"], results["metrics"]["sft_dpo"]
    assert sft["seconds"] == 1.0 and sft["implicit_reward"] is None
    assert sft["preference"]["accuracy"] == pytest.approx(2 / 3) and sft["preference"]["mean_margin"] == 2 / 3
    assert sft["perplexity"] == {"value": pytest.approx(7.389056), "tokens": 3, "examples": 2}  # exp(6 / 3)
    # implicit reward 0.5 * ((pc - rc) - (pr - rr)) against SFT: 1.0, 0.0, -0.5
    assert results["pairs"][0] == {"category": "a", "logp_margin": {"sft": -1.0, "sft_dpo": 1.0},
                                   "implicit_reward_margin": {"sft_dpo": 1.0}}
    assert [pair["implicit_reward_margin"]["sft_dpo"] for pair in results["pairs"]] == [1.0, 0.0, -0.5]
    assert dpo["implicit_reward"]["accuracy"] == pytest.approx(1 / 3)
    assert sft["checked_score"] == {"overall": 0.5, "n": 2, "per_category": {"a": 0.5}}
    # Per-category Wilson intervals: SFT passed 1 of the 2 checked prompts of "a", and is right on 1 of the 2
    # pairs of "a" (the pair without a category is in no category).
    assert sft["ci95_per_category"]["checked_score"]["a"] == pytest.approx(WILSON_1_OF_2, abs=1e-6)
    assert sft["ci95_per_category"]["preference_accuracy"] == {"a": pytest.approx(WILSON_1_OF_2, abs=1e-6)}
    assert sft["ci95"]["checked_score"] == pytest.approx(WILSON_1_OF_2, abs=1e-6)
    assert results["prompts"][2]["responses"]["sft"] == {
        "text": "answer 2", "response_tokens": 3, "finished": True, "refusal": False, "passed": None
    }
    assert results["prompts"][0]["prompt_tokens"] == 9
    assert {(f["first"], f["second"]) for f in results["comparisons"]} == {("sft_dpo", "sft")}
    # Per-item NLL of the held-out instruction responses, and intervals of every other rate and mean, by hand.
    assert results["instruction_examples"] == [
        {"sft": {"nll": 2.0, "tokens": 1}, "sft_dpo": {"nll": 1.0, "tokens": 1}},
        {"sft": {"nll": 4.0, "tokens": 2}, "sft_dpo": {"nll": 2.0, "tokens": 2}},
    ]
    # both SFT examples have 2 nats per token, so does every resample: exp(2) at both ends
    assert sft["ci95"]["perplexity"] == pytest.approx((7.389056, 7.389056))
    # implicit reward margins 1.0, 0.0, -0.5: 1 of 3 right; Wilson: 1 / 3 -> (0.061492, 0.792340)
    assert dpo["ci95"]["implicit_reward_accuracy"] == pytest.approx((0.061492, 0.792340), abs=1e-6)
    low, high = dpo["ci95"]["implicit_reward_margin"]
    assert -0.5 <= low <= 1 / 6 <= high <= 1.0
    # every response ends with EOS: Wilson 3 of 3 -> (3 / (3 + z^2), 1) = (0.438503, 1); all 3 tokens long
    assert sft["ci95"]["finished_rate"] == pytest.approx((0.438503, 1.0), abs=1e-6)
    assert sft["ci95"]["mean_response_tokens"] == (3.0, 3.0)
    # "answer 0/1/2": one bigram each, all different: distinct-2 is 1 with any one left out, so the jackknife's
    # standard error is 0 and the interval the point
    assert sft["ci95"]["distinct_2"] == pytest.approx((1.0, 1.0))


JUDGE_SCORES = {"sft": [0.5, 1.0, 2.0], "sft_dpo": [1.5, 1.0, 3.0]}
LENGTHS = {"sft": [3, 4, 5], "sft_dpo": [5, 4, 9]}


@pytest.fixture
def judged_outputs(outputs) -> dict[str, VariantOutput]:
    for name, lengths in LENGTHS.items():
        for response, length in zip(outputs[name].responses, lengths, strict=True):
            response["response_tokens"] = length
    return outputs


def test_judge_scores_summaries_win_rates_and_findings_by_hand(judged_outputs):
    results = results_of({}, judged_outputs, JUDGE_SCORES)
    assert [row["responses"]["sft_dpo"]["judge_score"] for row in results["prompts"]] == [1.5, 1.0, 3.0]
    assert [row["responses"]["sft_dpo"]["response_tokens"] for row in results["prompts"]] == [5, 4, 9]

    sft, dpo = results["metrics"]["sft"]["judge"], results["metrics"]["sft_dpo"]["judge"]
    assert sft["n"] == 3
    assert (sft["mean_reward"], dpo["mean_reward"]) == pytest.approx((3.5 / 3, 5.5 / 3))
    assert (sft["mean_length"], dpo["mean_length"]) == (4.0, 6.0)
    # categories a, a, b: SFT (0.5 + 1.0) / 2 and 2.0; SFT+DPO (1.5 + 1.0) / 2 and 3.0
    assert {c: v["mean_reward"] for c, v in sft["per_category"].items()} == {"a": 0.75, "b": 2.0}
    assert {c: v["mean_reward"] for c, v in dpo["per_category"].items()} == {"a": 1.25, "b": 3.0}
    low, high = dpo["ci95"]
    assert low <= dpo["mean_reward"] <= high

    (pair,) = results["judge"]["pairs"]
    assert (pair["first"], pair["second"]) == ("sft_dpo", "sft")
    # 1.5 > 0.5 win, 1.0 = 1.0 tie, 3.0 > 2.0 win: (1 + 0.5 + 1) / 3; sign test on the 2 untied: 2 (1/4) = 0.5
    rate = pair["win_rate"]
    assert rate["rate"] == pytest.approx(5 / 6) and (rate["wins"], rate["losses"], rate["ties"]) == (2, 0, 1)
    assert rate["p"] == pytest.approx(0.5)
    assert pair["mean_length_difference"] == pytest.approx(2.0)  # (2 + 0 + 4) / 3
    assert set(pair["length_controlled"]) >= {"rate", "ci95", "method", "reason"}

    findings = results["comparisons"]
    assert [f["metric"] for f in findings] == [
        "preference_accuracy", "mean_margin", "checked_score", "judge_win_rate", "mean_reward"
    ]
    win, reward = findings[3], findings[4]
    assert win["difference"] == pytest.approx(5 / 6 - 0.5) and win["p"] == pytest.approx(0.5)
    assert reward["difference"] == pytest.approx(2 / 3)  # mean of 1.0, 0.0, 1.0
    # One Holm family over all five findings.
    assert [f["p_holm"] for f in findings] == pytest.approx(holm([f["p"] for f in findings]))
    assert all(f["significant"] == (f["p_holm"] < 0.05) for f in findings)


def test_every_judge_number_is_recomputed_from_the_per_prompt_data_of_the_file(judged_outputs, tmp_path):
    meta = {"variants": ["sft", "sft_dpo"], "labels": {"sft": "SFT", "sft_dpo": "SFT+DPO"}, "created": "now",
            "template": "alpaca", "generation": {"do_sample": False, "max_new_tokens": 8}}
    write_results(results_of(meta, judged_outputs, JUDGE_SCORES), tmp_path)
    written = read_results(tmp_path)
    rows = written["prompts"]
    scores = {name: [row["responses"][name]["judge_score"] for row in rows] for name in ("sft", "sft_dpo")}
    lengths = {name: [row["responses"][name]["response_tokens"] for row in rows] for name in scores}
    again = json.loads(json.dumps(judge_findings(scores, lengths, [row["category"] for row in rows])))
    assert {name: written["metrics"][name]["judge"] for name in scores} == again["variants"]
    assert written["judge"] == {"pairs": again["pairs"]}
    tested = [f for f in written["comparisons"] if f["metric"] in ("judge_win_rate", "mean_reward")]
    # (less what the family adds: Holm's adjustment and each test's power)
    added = ("p_holm", "significant", "mde")
    assert [{k: v for k, v in f.items() if k not in added} for f in tested] == again["findings"]


def test_no_judge_no_judge_keys(outputs):
    results = results_of({}, outputs)
    assert "judge" not in results and all("judge" not in m for m in results["metrics"].values())
    assert {f["metric"] for f in results["comparisons"]} == {"preference_accuracy", "mean_margin", "checked_score"}


def test_written_results_read_back_and_a_missing_file_says_what_to_run(outputs, tmp_path):
    meta = {"variants": ["sft", "sft_dpo"], "labels": {"sft": "SFT", "sft_dpo": "SFT+DPO"}, "created": "now",
            "template": "alpaca", "generation": {"do_sample": False, "max_new_tokens": 8}}
    results = results_of(meta, outputs)
    path = write_results(results, tmp_path / "out")
    assert path.name == RESULTS_FILE and read_results(tmp_path / "out") == json.loads(json.dumps(results))
    assert "[3/3] b" in (tmp_path / "out" / "side_by_side_comparison.txt").read_text()
    with pytest.raises(ResultsError, match="run scripts/evaluate.py first"):
        read_results(tmp_path / "missing")
    (tmp_path / "out" / RESULTS_FILE).write_text("{")
    with pytest.raises(ResultsError, match="not valid JSON"):
        read_results(tmp_path / "out")
