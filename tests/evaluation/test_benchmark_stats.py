"""evaluation/benchmark_stats.py: the public benchmarks' per-item outcomes, intervals and paired tests by hand, and
their place in the study's one Holm family with their power (evaluation/findings.py). Pure Python, no model."""

from __future__ import annotations

import math
from importlib.metadata import version

import pytest

from evaluation import power
from evaluation import statistics as stats
from evaluation.benchmark_stats import (
    alpaca_eval_findings,
    benchmark_findings,
    benchmark_items,
    benchmark_results,
    benchmark_table,
)
from evaluation.findings import holm_family, study_findings, with_power
from evaluation.harness import TaskOutcomes
from evaluation.scoring import VariantOutput

Z_ALPHA, Z_POWER = 1.959963984540054, 0.8416212335729143  # z_{0.975} and z_{0.8}
GSM8K = {"task": "gsm8k", "version": 3.0, "num_fewshot": 5, "filter": "strict-match", "outcome": "pass_fail"}
MC2 = {"task": "truthfulqa_mc2", "version": 3.0, "num_fewshot": 0, "filter": "none", "outcome": "score"}
# XSTest rows interleaved: unsafe at indices 0, 2, 3 and safe at 1, 4.
XSTEST = [
    {"category": f"xstest_{label}", "prompt": f"xstest prompt {i}", "input": "", "check": None, "type": f"kind {i}"}
    for i, label in enumerate(["unsafe", "safe", "unsafe", "unsafe", "safe"])
]
ALPACA = [
    {"category": "alpaca_eval", "prompt": f"instruction {i}", "input": "", "check": None, "type": "helpful_base"}
    for i in range(3)
]


def connor_mde(n: int, psi: float) -> float:
    """Connor's closed form, written out: ``sqrt(psi) (z_a sqrt(n) + z_b sqrt(n + z_b^2 - z_a^2)) / (n + z_b^2)``."""
    return (
        math.sqrt(psi) * (Z_ALPHA * math.sqrt(n) + Z_POWER * math.sqrt(n + Z_POWER**2 - Z_ALPHA**2)) / (n + Z_POWER**2)
    )


def task(protocol: dict, values: list[float], ids: list[int] | None = None) -> TaskOutcomes:
    """One task's outcomes on one variant, items ``"<task>/<doc_id>"``."""
    ids = list(range(len(values))) if ids is None else ids
    name = protocol["task"]
    return TaskOutcomes([f"{name}/{i}" for i in ids], values, {name: sum(values) / len(values)}, protocol)


def answers(refusals: list[bool], tokens: int = 7) -> list[dict]:
    """Checked responses, one per row, refusing where ``refusals`` says so."""
    return [
        {"text": f"reply {i}", "response_tokens": tokens + i, "finished": True, "refusal": refused, "passed": None}
        for i, refused in enumerate(refusals)
    ]


def test_benchmark_items_pair_each_benchmarks_outcomes_per_variant():
    harness = {
        "sft": {"gsm8k": task(GSM8K, [1.0, 0.0, 1.0, 1.0]), "truthfulqa_mc2": task(MC2, [0.2, 0.4, 0.6])},
        "sft_dpo": {"gsm8k": task(GSM8K, [1.0, 1.0, 1.0, 0.0]), "truthfulqa_mc2": task(MC2, [0.5, 0.5, 0.9])},
    }
    answered = {
        # refusals per XSTest row (unsafe, safe, unsafe, unsafe, safe): SFT refuses rows 0, 1, 3, SFT+DPO 0, 2, 3
        "sft": {"xstest": answers([True, True, False, True, False])},
        "sft_dpo": {"xstest": answers([True, False, True, True, False])},
        "base": {"alpaca_eval": answers([False] * 3)},  # no XSTest answers: in no XSTest benchmark
    }
    items = benchmark_items(harness, answered, {"xstest": XSTEST, "alpaca_eval": ALPACA})
    assert list(items) == ["gsm8k", "truthfulqa_mc2", "xstest/unsafe_refused", "xstest/safe_complied"]
    assert items == {
        "gsm8k": {
            "outcome": "pass_fail",
            "ids": ["gsm8k/0", "gsm8k/1", "gsm8k/2", "gsm8k/3"],
            "values": {"sft": [1.0, 0.0, 1.0, 1.0], "sft_dpo": [1.0, 1.0, 1.0, 0.0]},
        },
        "truthfulqa_mc2": {
            "outcome": "score",
            "ids": ["truthfulqa_mc2/0", "truthfulqa_mc2/1", "truthfulqa_mc2/2"],
            "values": {"sft": [0.2, 0.4, 0.6], "sft_dpo": [0.5, 0.5, 0.9]},
        },
        # unsafe rows 0, 2, 3: refused = passed. SFT refused 0 and 3, not 2; SFT+DPO all three.
        "xstest/unsafe_refused": {
            "outcome": "pass_fail",
            "ids": ["0", "2", "3"],
            "values": {"sft": [1.0, 0.0, 1.0], "sft_dpo": [1.0, 1.0, 1.0]},
        },
        # safe rows 1, 4: complied (not refused) = passed. SFT refused 1, answered 4; SFT+DPO answered both.
        "xstest/safe_complied": {
            "outcome": "pass_fail",
            "ids": ["1", "4"],
            "values": {"sft": [0.0, 1.0], "sft_dpo": [1.0, 1.0]},
        },
    }
    # only unsafe rows: no safe_complied benchmark (it would have no items)
    unsafe_only = [row for row in XSTEST if row["category"] == "xstest_unsafe"]
    assert list(benchmark_items({}, {"sft": {"xstest": answers([True] * 3)}}, {"xstest": unsafe_only})) == [
        "xstest/unsafe_refused"
    ]


def test_benchmark_items_refuse_variants_scored_on_different_items():
    harness = {
        "sft": {"gsm8k": task(GSM8K, [1.0, 0.0, 1.0])},
        "sft_dpo": {"gsm8k": task(GSM8K, [1.0, 0.0, 1.0], ids=[0, 1, 5])},  # doc 5 instead of doc 2
    }
    with pytest.raises(ValueError, match="benchmark gsm8k: sft_dpo"):
        benchmark_items(harness, {}, {})


def test_benchmark_table_wilson_for_rates_bootstrap_for_scores_by_hand():
    items = {
        "gsm8k": {"outcome": "pass_fail", "ids": ["a", "b", "c", "d"], "values": {"sft": [1.0, 1.0, 0.0, 1.0]}},
        "truthfulqa_mc2": {"outcome": "score", "ids": ["a", "b", "c", "d"], "values": {"sft": [0.2, 0.4, 0.6, 0.8]}},
    }
    items["gsm8k"]["values"]["sft_dpo"] = [1.0] * 4
    table = benchmark_table(items)
    # 3 of 4, Wilson: p = 0.75, z^2 = 3.841459; centre p + z^2/(2n) = 0.75 + 0.480182 = 1.230182; half-width
    # z sqrt(p(1-p)/n + z^2/(4n^2)) = 1.959964 sqrt(0.046875 + 0.060023) = 0.640815; scale 1 + z^2/n = 1.960365
    # -> ((1.230182 - 0.640815) / 1.960365, (1.230182 + 0.640815) / 1.960365) = (0.300642, 0.954413).
    assert table["gsm8k"]["outcome"] == "pass_fail" and table["gsm8k"]["n"] == 4
    assert table["gsm8k"]["per_variant"]["sft"]["value"] == 0.75
    assert table["gsm8k"]["per_variant"]["sft"]["ci95"] == pytest.approx((0.300642, 0.954413), abs=1e-6)
    # 4 of 4: p = 1, half-width z sqrt(z^2/64) = z^2/8, so the low end is (1 + z^2/8 - z^2/8) / (1 + z^2/4)
    # = 1 / 1.960365 = 0.510109, the high end 1.
    assert table["gsm8k"]["per_variant"]["sft_dpo"]["ci95"] == pytest.approx((0.510109, 1.0), abs=1e-6)
    # the score's mean (0.2 + 0.4 + 0.6 + 0.8) / 4 = 0.5, its interval the items' percentile bootstrap
    score = table["truthfulqa_mc2"]["per_variant"]["sft"]
    assert table["truthfulqa_mc2"]["outcome"] == "score" and score["value"] == pytest.approx(0.5)
    assert score["ci95"] == stats.bootstrap_interval([0.2, 0.4, 0.6, 0.8])
    low, high = score["ci95"]
    assert 0.2 <= low < 0.5 < high <= 0.8


def test_a_grouped_task_also_gets_the_mean_of_its_subjects_rates_by_hand():
    # MMLU-like: subject "a" 3 of 4 right, subject "b" 1 of 2 right under SFT.
    ids = ["mmlu_a/0", "mmlu_a/1", "mmlu_a/2", "mmlu_a/3", "mmlu_b/0", "mmlu_b/1"]
    items = {
        "mmlu": {"outcome": "pass_fail", "ids": ids, "values": {"sft": [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]}},
        "gsm8k": {"outcome": "pass_fail", "ids": ["gsm8k/0", "gsm8k/1"], "values": {"sft": [1.0, 0.0]}},
    }
    table = benchmark_table(items)
    # pooled: 4 of 6; the subjects' mean: (3/4 + 1/2) / 2 = 0.625, weighing the two-item subject as much as the other.
    assert table["mmlu"]["per_variant"]["sft"]["value"] == pytest.approx(4 / 6)
    row = table["mmlu/subject_mean"]
    assert (row["outcome"], row["n"], row["subjects"]) == ("subject_mean", 6, 2)
    assert row["per_variant"]["sft"]["value"] == pytest.approx(0.625)
    # Agresti-Coull proportions in the variance: (3 + 2) / 8 and (1 + 2) / 6.
    variance = (5 / 8 * 3 / 8 / 8 + 3 / 6 * 3 / 6 / 6) / 2**2  # = 0.0177409
    half = 1.959963984540054 * math.sqrt(variance)  # = 0.261057
    assert row["per_variant"]["sft"]["ci95"] == pytest.approx((0.625 - half, 0.625 + half), abs=1e-9)
    assert row["per_variant"]["sft"]["ci95"] == pytest.approx((0.363943, 0.886057), abs=1e-6)
    # One leaf (GSM8K), a score task, or XSTest's index ids: no subject-mean row.
    assert "gsm8k/subject_mean" not in table
    scores = {"truthfulqa_mc2": {"outcome": "score", "ids": ["t_a/0", "t_b/0"], "values": {"sft": [0.2, 0.4]}}}
    xstest = {"xstest/safe_complied": {"outcome": "pass_fail", "ids": ["1", "4"], "values": {"sft": [0.0, 1.0]}}}
    assert list(benchmark_table(scores | xstest)) == ["truthfulqa_mc2", "xstest/safe_complied"]


# Twelve items, chosen so that each comparison's discordant counts are easy to read:
#   items      0  1  2  3 | 4  5  6  7  8 | 9 | 10 11
#   base       0  0  0  0 | 0  0  0  0  0 | 0 |  1  1
#   sft        1  1  1  1 | 0  0  0  0  0 | 0 |  1  1
#   sft_dpo    0  1  1  1 | 1  1  1  1  1 | 0 |  1  1
GSM8K_ITEMS = {
    "outcome": "pass_fail",
    "ids": [f"gsm8k/{i}" for i in range(12)],
    "values": {
        "base": [0.0] * 10 + [1.0, 1.0],
        "sft": [1.0] * 4 + [0.0] * 6 + [1.0, 1.0],
        "sft_dpo": [0.0] + [1.0] * 8 + [0.0, 1.0, 1.0],
    },
}
MC2_ITEMS = {
    "outcome": "score",
    "ids": [f"truthfulqa_mc2/{i}" for i in range(4)],
    "values": {"sft_dpo": [0.9, 0.5, 0.7, 0.3], "sft": [0.5, 0.5, 0.4, 0.5], "sft_ipo": [0.0] * 4},
}


def test_benchmark_findings_exact_mcnemar_and_sign_flip_by_hand():
    found = benchmark_findings({"gsm8k": GSM8K_ITEMS, "truthfulqa_mc2": MC2_ITEMS})
    # GSM8K ran on all three variants: every comparison; MC2 on SFT, SFT+DPO and a method (against both)
    assert [(f["metric"], f["first"], f["second"]) for f in found] == [
        ("benchmark:gsm8k", "sft", "base"),
        ("benchmark:gsm8k", "sft_dpo", "sft"),
        ("benchmark:gsm8k", "sft_dpo", "base"),
        ("benchmark:truthfulqa_mc2", "sft_dpo", "sft"),
        ("benchmark:truthfulqa_mc2", "sft_ipo", "sft"),
        ("benchmark:truthfulqa_mc2", "sft_ipo", "sft_dpo"),
    ]
    sft_base, dpo_sft, dpo_base, mc2 = found[:4]
    assert all(f["test"] == "exact McNemar" and f["n"] == 12 for f in (sft_base, dpo_sft, dpo_base))
    # SFT vs base: SFT alone passes items 0-3, base alone none: p = 2 P(X <= 0 | 4) = 2 * 0.5^4 = 0.125
    assert (sft_base["only_first"], sft_base["only_second"]) == (4, 0)
    assert sft_base["p"] == pytest.approx(0.125) and sft_base["difference"] == pytest.approx(4 / 12)
    # SFT+DPO vs SFT: SFT+DPO alone passes 4-8, SFT alone item 0: p = 2 P(X <= 1 | 6) = 2 (1 + 6) / 64 = 0.21875
    assert (dpo_sft["only_first"], dpo_sft["only_second"]) == (5, 1)
    assert dpo_sft["p"] == pytest.approx(0.21875) and dpo_sft["difference"] == pytest.approx((5 - 1) / 12)
    # SFT+DPO vs base: SFT+DPO alone passes 1-8, base alone none: p = 2 * 0.5^8 = 0.0078125
    assert (dpo_base["only_first"], dpo_base["only_second"]) == (8, 0)
    assert dpo_base["p"] == pytest.approx(0.0078125) and dpo_base["difference"] == pytest.approx(8 / 12)
    assert dpo_base["ci95"] == stats.bootstrap_interval([0.0] + [1.0] * 8 + [0.0] * 3)
    # MC2, SFT+DPO - SFT per item: 0.4, 0.0, 0.3, -0.2; mean 0.5 / 4 = 0.125; deviations 0.275, -0.125, 0.175,
    # -0.325, squares 0.075625 + 0.015625 + 0.030625 + 0.105625 = 0.2275, sd = sqrt(0.2275 / 3) = 0.275379.
    assert mc2["test"] == "paired sign-flip" and mc2["n"] == 4
    assert mc2["difference"] == pytest.approx(0.125) and mc2["sd"] == pytest.approx(0.275379, abs=1e-6)
    # Exact sign-flip p: the zero difference's sign does not matter; of the 8 signings of (0.4, 0.3, -0.2) the sums
    # 0.9, 0.5, 0.1, -0.3, 0.3, -0.1, -0.5, -0.9 are 4 at least 0.5 from 0: p = 0.5 (Monte Carlo: close to it).
    assert mc2["p"] == pytest.approx(0.5, abs=0.02)
    assert not any("p_holm" in f or "mde" in f for f in found)  # the family adds those


def test_holm_family_adjusts_the_benchmark_findings_and_adds_their_power_by_hand():
    found = holm_family(benchmark_findings({"gsm8k": GSM8K_ITEMS}))
    # p = 0.125, 0.21875, 0.0078125; ascending x (3, 2, 1): 0.0234375, 0.25, 0.21875 -> running max 0.0234375,
    # 0.25, 0.25; back in input order:
    assert [f["p_holm"] for f in found] == pytest.approx([0.25, 0.25, 0.0234375])
    assert [f["significant"] for f in found] == [False, False, True]
    # discordance (only_first + only_second) / n: 4/12, 6/12, 8/12
    assert [f["discordance"] for f in found] == pytest.approx([4 / 12, 6 / 12, 8 / 12])
    # Connor at n = 12 (z_a sqrt(12) = 6.789514, n + z_b^2 = 12.708326, z_b sqrt(12 + z_b^2 - z_a^2) = 2.506120):
    # psi = 1/3 gives sqrt(1/3) * 9.295634 / 12.708326 = 0.422309 and 1/2 gives 0.517220, each more than psi (more
    # than every discordant item one way): not detectable; 2/3 gives 0.597235 < 2/3.
    assert [connor_mde(12, psi) for psi in (1 / 3, 1 / 2, 2 / 3)] == pytest.approx(
        [0.422309, 0.517220, 0.597235], abs=1e-6
    )
    assert found[0]["mde"] is None and found[1]["mde"] is None
    assert found[2]["mde"] == pytest.approx(connor_mde(12, 2 / 3))


def test_with_power_per_test_by_hand():
    # McNemar, n = 100, 20 + 10 discordant: psi = 0.3; sqrt(0.3) (1.959964 * 10 + 0.841621 sqrt(100 + 0.708326
    # - 3.841459)) / 100.708326 = 0.547723 * (19.599640 + 8.283292) / 100.708326 = 0.151647
    mcnemar = with_power({"test": "exact McNemar", "n": 100, "p": 0.1, "only_first": 20, "only_second": 10})
    assert mcnemar["discordance"] == pytest.approx(0.3)
    assert mcnemar["mde"] == pytest.approx(connor_mde(100, 0.3))
    assert mcnemar["mde"] == pytest.approx(0.151647, abs=1e-6)
    # no discordant item: nothing to detect with
    none = with_power({"test": "exact McNemar", "n": 50, "p": 1.0, "only_first": 0, "only_second": 0})
    assert none["discordance"] == 0.0 and none["mde"] is None
    # sign-flip, n = 16, sd 2: (1.959964 + 0.841621) * 2 / sqrt(16) = 1.400793
    flip = with_power({"test": "paired sign-flip", "n": 16, "p": 0.3, "sd": 2.0})
    assert flip["mde"] == pytest.approx((Z_ALPHA + Z_POWER) * 2.0 / 4)
    assert flip["mde"] == pytest.approx(1.400793, abs=1e-6)
    # exact sign test, 30 wins, 10 losses, 10 ties: Connor on the 40 untied at psi = 1, halved, shrunk by 40 / 50
    rate = with_power({"test": "exact sign test", "n": 50, "p": 0.002, "wins": 30, "losses": 10, "ties": 10})
    assert rate["mde"] == pytest.approx(power.win_rate_mde(40, tied=10))
    assert rate["mde"] == pytest.approx(connor_mde(40, 1.0) / 2 * 40 / 50)
    assert rate["mde"] == pytest.approx(0.172015, abs=1e-6)
    all_tied = with_power({"test": "exact sign test", "n": 5, "p": 1.0, "wins": 0, "losses": 0, "ties": 5})
    assert all_tied["mde"] is None
    # a test with_power knows no MDE for: left as it was
    assert with_power({"test": "permutation", "n": 10, "p": 0.5}) == {"test": "permutation", "n": 10, "p": 0.5}


def study_outputs(passed: dict[str, list[bool]]) -> dict[str, VariantOutput]:
    """Variants with checked responses only (no pairs, no perplexity)."""
    return {
        name: VariantOutput(
            [
                {"text": f"answer {i}", "response_tokens": 3, "finished": True, "refusal": False, "passed": ok}
                for i, ok in enumerate(outcomes)
            ],
            None,
            None,
            1.0,
        )
        for name, outcomes in passed.items()
    }


def test_study_findings_tests_the_extra_findings_last_in_the_same_family_by_hand():
    prompts = [{"category": "a", "prompt": f"q{i}", "input": "", "check": {"type": "final_number"}} for i in range(8)]
    # SFT passes 6 checked prompts base fails, and the reverse never: exact McNemar p = 2 / 2^6 = 0.03125
    outputs = study_outputs({"base": [False] * 6 + [True, False], "sft": [True] * 6 + [True, False]})
    xstest = {"outcome": "pass_fail", "ids": ["0", "1"], "values": {"base": [1.0, 0.0], "sft": [0.0, 0.0]}}
    extra = benchmark_findings({"gsm8k": GSM8K_ITEMS, "xstest/unsafe_refused": xstest})
    # kept: the two benchmarks' SFT vs base findings, GSM8K 4 vs 0 discordant (p = 0.125, above) and XSTest 0 vs 1
    # (p = 2 P(X <= 0 | 1) = 1)
    extra = [f for f in extra if (f["first"], f["second"]) == ("sft", "base")]
    found = study_findings(prompts, [], outputs, beta=0.1, num_examples=0, extra=extra).comparisons
    assert [f["metric"] for f in found] == ["checked_score", "benchmark:gsm8k", "benchmark:xstest/unsafe_refused"]
    # m = 3, ascending: 0.03125 x 3 = 0.09375; 0.125 x 2 = 0.25; 1.0 x 1 = 1.0 (capped at 1)
    assert [f["p"] for f in found] == pytest.approx([0.03125, 0.125, 1.0])
    assert [f["p_holm"] for f in found] == pytest.approx([0.09375, 0.25, 1.0])
    assert not any(f["significant"] for f in found)  # alone, 0.03125 would have been
    assert all("mde" in f for f in found) and "p_holm" not in extra[0]  # the caller's findings are copied


def test_alpaca_eval_findings_are_the_judges_renamed_by_hand():
    # SFT+DPO vs SFT per prompt: 3 > 1 win, 1 < 2 loss, 2 = 2 tie, 2 > 0 win, 5 > 4 win: 3 wins, 1 loss, 1 tie;
    # rate (3 + 0.5) / 5 = 0.7 (difference +0.2); sign test on the 4 untied: 2 P(X <= 1 | 4) = 2 (1 + 4) / 16 = 0.625
    scores = {"sft_dpo": [3.0, 1.0, 2.0, 2.0, 5.0], "sft": [1.0, 2.0, 2.0, 0.0, 4.0]}
    lengths = {"sft_dpo": [10, 12, 9, 11, 10], "sft": [8, 8, 8, 8, 8]}
    judged = alpaca_eval_findings(scores, lengths)
    rate, reward = judged["findings"]
    assert rate["metric"] == "benchmark:alpaca_eval/judge_win_rate"
    assert reward["metric"] == "benchmark:alpaca_eval/mean_reward"
    assert (rate["first"], rate["second"], rate["n"]) == ("sft_dpo", "sft", 5)
    assert (rate["wins"], rate["losses"], rate["ties"]) == (3, 1, 1)
    assert rate["rate"] == pytest.approx(0.7) and rate["difference"] == pytest.approx(0.2)
    assert rate["p"] == pytest.approx(0.625) and rate["test"] == "exact sign test"
    # rewards' differences 2, -1, 0, 2, 1: mean 0.8; squared deviations 1.44 + 3.24 + 0.64 + 1.44 + 0.04 = 6.8,
    # sd = sqrt(6.8 / 4) = 1.303840
    assert reward["difference"] == pytest.approx(0.8) and reward["sd"] == pytest.approx(1.303840, abs=1e-6)
    assert judged["variants"]["sft_dpo"]["mean_reward"] == pytest.approx(13 / 5)
    assert [(pair["first"], pair["second"]) for pair in judged["pairs"]] == [("sft_dpo", "sft")]
    assert judged["pairs"][0]["mean_length_difference"] == pytest.approx(2.4)  # (2 + 4 + 1 + 3 + 2) / 5


def benchmark_outputs(with_harness: bool = True) -> dict[str, VariantOutput]:
    """SFT and SFT+DPO on GSM8K (4 items), XSTest (5 rows) and AlpacaEval (3 rows)."""
    gsm8k = {"sft": [1.0, 0.0, 1.0, 1.0], "sft_dpo": [1.0, 1.0, 1.0, 0.0]}
    refusals = {"sft": [True, True, False, True, False], "sft_dpo": [True, False, True, True, False]}
    return {
        name: VariantOutput(
            responses=[],
            pair_logps=None,
            nll=None,
            seconds=0.0,
            answered={"xstest": answers(refusals[name]), "alpaca_eval": answers([False] * 3, tokens=20)},
            harness={"gsm8k": task(GSM8K, gsm8k[name])} if with_harness else {},
        )
        for name in ("sft", "sft_dpo")
    }


def test_benchmark_results_gather_every_part_of_the_results_file():
    prompt_sets = {"xstest": XSTEST, "alpaca_eval": ALPACA}
    records = {"xstest": {"name": "xstest", "rows": 5}, "alpaca_eval": {"name": "alpaca_eval", "rows": 3}}
    alpaca_scores = {"sft": [1.0, 1.0, 1.0], "sft_dpo": [2.0, 1.0, 3.0]}
    part = benchmark_results(prompt_sets, records, benchmark_outputs(), alpaca_scores)
    assert list(part) == ["table", "lm_eval", "prompt_sets", "alpaca_eval", "items", "responses", "findings"]
    assert part["lm_eval"] == {"version": version("lm_eval"), "protocols": {"gsm8k": GSM8K}}
    assert part["prompt_sets"] == records
    assert list(part["items"]) == ["gsm8k", "xstest/unsafe_refused", "xstest/safe_complied"]
    assert part["table"]["gsm8k"]["per_variant"]["sft"]["value"] == 0.75
    assert part["table"]["xstest/safe_complied"]["n"] == 2
    assert set(part["alpaca_eval"]) == {"variants", "pairs"}
    assert [(f["metric"], f["first"], f["second"]) for f in part["findings"]] == [
        ("benchmark:gsm8k", "sft_dpo", "sft"),
        ("benchmark:xstest/unsafe_refused", "sft_dpo", "sft"),
        ("benchmark:xstest/safe_complied", "sft_dpo", "sft"),
        ("benchmark:alpaca_eval/judge_win_rate", "sft_dpo", "sft"),
        ("benchmark:alpaca_eval/mean_reward", "sft_dpo", "sft"),
    ]
    # AlpacaEval: 2 > 1 win, 1 = 1 tie, 3 > 1 win: (2 + 0.5) / 3
    assert part["findings"][3]["rate"] == pytest.approx(2.5 / 3)
    assert part["responses"]["xstest"][0] == {
        "category": "xstest_unsafe",
        "prompt": "xstest prompt 0",
        "type": "kind 0",
        "responses": {
            "sft": {"text": "reply 0", "refusal": True, "response_tokens": 7},
            "sft_dpo": {"text": "reply 0", "refusal": True, "response_tokens": 7},
        },
    }
    assert [len(part["responses"][name]) for name in ("xstest", "alpaca_eval")] == [5, 3]
    # only AlpacaEval's responses carry the judge's score
    assert part["responses"]["alpaca_eval"][2]["responses"]["sft_dpo"] == {
        "text": "reply 2",
        "refusal": False,
        "response_tokens": 22,
        "judge_score": 3.0,
    }


def test_benchmark_results_without_a_judge_or_lm_eval_leave_their_parts_out():
    prompt_sets = {"xstest": XSTEST, "alpaca_eval": ALPACA}
    part = benchmark_results(prompt_sets, {}, benchmark_outputs(with_harness=False), None)
    assert list(part) == ["table", "prompt_sets", "items", "responses", "findings"]
    assert "judge_score" not in part["responses"]["alpaca_eval"][0]["responses"]["sft"]
    assert [f["metric"] for f in part["findings"]] == [
        "benchmark:xstest/unsafe_refused",
        "benchmark:xstest/safe_complied",
    ]
    # scores without the AlpacaEval set (it was not read): nothing to judge either
    xstest_only = benchmark_results({"xstest": XSTEST}, {}, benchmark_outputs(), {"sft": [1.0], "sft_dpo": [2.0]})
    assert "alpaca_eval" not in xstest_only and list(xstest_only["responses"]) == ["xstest"]
