"""reporting/published.py: each published number's verdict beside the study's score and protocol."""

from __future__ import annotations

import pytest

from reporting.published import PUBLISHED, Published, compare_with_published

SOURCE = "a leaderboard"
GSM8K = Published("base", "gsm8k", 0.3783, "5-shot", SOURCE, 5, "exact_match", "strict-match")


def protocol(shots: dict[str, int | None], metric: str = "exact_match", **more) -> dict:
    """An lm-eval protocol as :func:`evaluation.harness.task_outcomes` records it (the keys the check reads)."""
    return {"metric": metric, "filter": "strict-match", "num_fewshot": shots, "apply_chat_template": False,
            "limit": None} | more  # fmt: skip


def table(value: float, low: float, high: float) -> dict:
    return {
        "gsm8k": {"outcome": "pass_fail", "n": 1319, "per_variant": {"base": {"value": value, "ci95": [low, high]}}}
    }


def verdict(benchmarks: dict, protocols: dict, entry: Published = GSM8K) -> str:
    (row,) = compare_with_published(benchmarks, protocols, (entry,))
    return row["verdict"]


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.354, 0.407, "agrees (inside our 95 % interval)"),  # 37.83 % inside [35.4 %, 40.7 %]
        (0.3783, 0.407, "agrees (inside our 95 % interval)"),  # on the bound: still inside
        (0.380, 0.430, "differs (outside our 95 % interval)"),  # 37.83 % below 38.0 %
        (0.300, 0.378, "differs (outside our 95 % interval)"),  # 37.83 % above 37.8 %
    ],
)
def test_a_comparable_number_agrees_only_inside_our_interval(low, high, expected):
    assert verdict(table(0.38, low, high), {"gsm8k": protocol({"gsm8k": 5})}) == expected


def test_a_row_carries_both_numbers_and_where_the_published_one_is_from():
    (row,) = compare_with_published(table(0.38, 0.354, 0.407), {"gsm8k": protocol({"gsm8k": 5})}, (GSM8K,))
    assert row == {
        "variant": "base", "benchmark": "gsm8k", "published": 0.3783, "kind": "pct", "protocol": "5-shot",
        "source": SOURCE, "ours": 0.38, "ci95": [0.354, 0.407], "verdict": "agrees (inside our 95 % interval)",
    }  # fmt: skip


def test_a_benchmark_or_variant_the_study_did_not_run_is_not_run():
    assert verdict({}, {}) == "not run by the study"
    only_sft = {"gsm8k": {"outcome": "pass_fail", "n": 4, "per_variant": {"sft": {"value": 0.5, "ci95": [0, 1]}}}}
    (row,) = compare_with_published(only_sft, {"gsm8k": protocol({"gsm8k": 5})}, (GSM8K,))
    assert row["verdict"] == "not run by the study" and row["ours"] is None and row["ci95"] is None


@pytest.mark.parametrize(
    ("recorded", "reason"),
    [
        (protocol({"gsm8k": 8}), "the study ran 8-shot, the published number is 5-shot"),
        # a group whose leaves ran with different counts
        (protocol({"a": 5, "b": 0}), "the study ran 0, 5-shot, the published number is 5-shot"),
        # lm-eval did not report the count: unknown is not the published one
        (protocol({"gsm8k": None}), "the study ran ?-shot, the published number is 5-shot"),
        (protocol({"gsm8k": 5}, metric="acc"), "the study scored acc, the published number exact_match"),
        (
            protocol({"gsm8k": 5}, filter="flexible-extract"),
            "the study scored under filter flexible-extract, the published number under strict-match",
        ),
        (
            protocol({"gsm8k": 5}, apply_chat_template=True),
            "the study's prompts were with a chat template, the published number's the other way",
        ),
        (protocol({"gsm8k": 5}, limit=4), "the study ran only 4 items per task (limit)"),
        (None, "the study's protocol of this benchmark is not recorded"),
    ],
)
def test_another_protocol_is_not_comparable_whatever_the_numbers(recorded, reason):
    # 37.83 % lies inside the interval: only the protocol stands between the two numbers.
    protocols = {} if recorded is None else {"gsm8k": recorded}
    assert verdict(table(0.38, 0.354, 0.407), protocols) == f"not comparable: {reason}"


def test_another_measurement_is_not_comparable_even_where_the_study_did_not_run_it():
    zephyr = Published("sft", "mt_bench", 6.64, "MT-Bench", SOURCE, not_comparable="another judge", kind="float")
    assert verdict({}, {}, zephyr) == "not comparable: another judge"


def test_mmlu_is_checked_on_the_subject_mean_under_the_mmlu_tasks_protocol():
    """The leaderboard's MMLU is the unweighted mean of the 57 subjects: it is set beside the study's
    ``mmlu/subject_mean`` row, and the protocol checked is the ``mmlu`` task's."""
    mmlu = next(entry for entry in PUBLISHED if entry.benchmark == "mmlu/subject_mean")
    assert mmlu.task == "mmlu" and mmlu.not_comparable is None
    benchmarks = {
        "mmlu": {"outcome": "pass_fail", "n": 14042, "per_variant": {"base": {"value": 0.60, "ci95": [0.59, 0.61]}}},
        "mmlu/subject_mean": {
            "outcome": "subject_mean", "n": 14042, "per_variant": {"base": {"value": 0.64, "ci95": [0.63, 0.65]}}
        },
    }  # fmt: skip
    five_shot = {"mmlu": protocol({"mmlu_anatomy": 5, "mmlu_virology": 5}, metric="acc", filter="none")}
    # 64.16 % is inside the subject mean's interval (and outside the pooled one, which is not the one checked).
    assert verdict(benchmarks, five_shot, mmlu) == "agrees (inside our 95 % interval)"
    zero_shot = {"mmlu": protocol({"mmlu_anatomy": 0, "mmlu_virology": 0}, metric="acc", filter="none")}
    assert verdict(benchmarks, zero_shot, mmlu) == (
        "not comparable: the study ran 0-shot, the published number is 5-shot"
    )
    assert verdict(benchmarks, {}, mmlu) == "not comparable: the study's protocol of this benchmark is not recorded"


def test_the_published_base_numbers_are_fractions_with_a_protocol_to_check():
    base = [entry for entry in PUBLISHED if entry.variant == "base"]
    expected = {"mmlu/subject_mean", "gsm8k", "truthfulqa_mc2", "arc_challenge", "hellaswag"}
    assert {entry.benchmark for entry in base} == expected
    for entry in base:
        assert entry.kind == "pct" and 0.0 < entry.value < 1.0
        assert entry.metric is not None and entry.num_fewshot is not None and not entry.chat_template
