"""The benchmark's arithmetic (model FLOPs, ratios, amortisation) by hand, and one tiny end-to-end run (slow)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from benchmarks.vs_trl.cases import CASES, IMPL_ENV, LEVER_CASES
from benchmarks.vs_trl.flops import step_flops
from benchmarks.vs_trl.run import DEFAULT_DECODER_PARAMETERS, learning_rate
from benchmarks.vs_trl.same_order import agreement, agreement_text
from benchmarks.vs_trl.table import precision_check, print_repeat_table, print_table, repeat_summary, summarise
from benchmarks.vs_trl.workload import (
    DPO_RESPONSE_MEAN,
    SFT_PROMPT_MEAN,
    SFT_RESPONSE_MEAN,
    length_sampler,
    log_uniform_length,
)

REPO = Path(__file__).resolve().parents[2]
SETUP = {"decoder_parameters": 100, "vocab_size": 10, "hidden": 4, "query_width": 4, "layers": 2, "lora_parameters": 7}
# One step: two rows of 2 and 3 tokens (5 real tokens), 2 of them response tokens.
RESULT = {"step_tokens": [5], "step_loss_tokens": [2], "step_row_lengths": [[2, 3]]}
# Causal attention, training: 6 n^2 d per layer and row -> 6 * (4 + 9) * 4 * 2 layers.
ATTENTION = 6 * (2**2 + 3**2) * 4 * 2


def test_full_fine_tuning_flops_are_6n_per_token_plus_head_on_responses_plus_attention():
    expected = 6 * 100 * 5 + 6 * (10 * 4) * 2 + ATTENTION
    assert step_flops(RESULT, SETUP, "sft", False, 0) == expected


def test_lora_flops_skip_the_frozen_weight_gradients():
    expected = 4 * 100 * 5 + 4 * (10 * 4) * 2 + 6 * 7 * 5 + ATTENTION
    assert step_flops(RESULT, SETUP, "sft", True, 0) == expected


def fake_result(impl: str, seconds: list[float], tokens: list[int], **extra) -> dict:
    return {
        "impl": impl,
        "step_seconds": seconds,
        "step_tokens": tokens,
        "step_loss_tokens": [1] * len(tokens),
        "step_row_lengths": [[t] for t in tokens],
        "losses": [1.0] * len(tokens),
        "peak_rss_bytes": 2**30,
        "baseline_rss_bytes": 2**29,
        "held_out_loss": 0.5,
        **extra,
    }


def test_summary_excludes_warm_up_steps_and_amortises_the_reference_pass():
    args = Namespace(warmup_steps=1)
    results = [
        fake_result("trl", [9.0, 1.0, 1.0], [100, 100, 100]),
        # 3 steps, 2 timed; a 3 s reference pass over the pairs of all 3 steps: 2 s falls on the timed ones.
        fake_result("ours", [9.0, 0.5, 0.5], [100, 100, 100], reference_pass_s=3.0),
    ]
    trl, ours = summarise(results, "dpo_full", dict(SETUP, decoder_parameters=1), args, peak=1.0)
    assert trl["tokens_per_s"] == pytest.approx(100.0)  # 200 tokens in 2 s, the 9 s warm-up step left out
    assert ours["tokens_per_s"] == pytest.approx(200.0)
    assert ours["tokens_per_s_ratio"] == pytest.approx(2.0)
    assert ours["amortised_tokens_per_s"] == pytest.approx(200 / (1.0 + 2.0))
    assert ours["peak_rss_ratio"] == pytest.approx(1.0)
    assert ours["rss_increase_mib"] == pytest.approx(512.0)  # 1 GiB peak over 512 MiB after imports
    assert "| 1024 (1.00) | 512 (1.00) |" in print_table([trl, ours])


def test_ours_is_compared_with_trl_at_the_same_checkpointing_setting():
    args = Namespace(warmup_steps=0)
    results = [
        fake_result("trl", [1.0, 1.0], [100, 100]),
        fake_result("ours", [0.5, 0.5], [100, 100], peak_rss_bytes=2**29 + 2**28),
        fake_result("trl_gc", [2.0, 2.0], [100, 100]),
        fake_result("ours_gc", [0.5, 0.5], [100, 100], reference_pass_s=1.0, peak_rss_bytes=2**29),
    ]
    trl, ours, trl_gc, ours_gc = summarise(results, "dpo_full", dict(SETUP, decoder_parameters=1), args, peak=1.0)
    assert "matched_trl" not in trl and "matched_trl" not in trl_gc
    assert (ours["matched_trl"], ours["speed_vs_matched_trl"]) == ("trl", pytest.approx(2.0))
    assert ours["peak_rss_vs_matched_trl"] == pytest.approx(0.75)
    assert (ours_gc["matched_trl"], ours_gc["speed_vs_matched_trl"]) == ("trl_gc", pytest.approx(4.0))
    # 200 tokens in 1 s of steps + the 1 s reference pass (all pairs trained): 100 tokens/s, 2x trl_gc's 50
    assert ours_gc["amortised_speed_vs_matched_trl"] == pytest.approx(2.0)
    assert ours_gc["peak_rss_vs_matched_trl"] == pytest.approx(0.5)
    assert "| 4.00x (2.00x), 0.50x vs trl_gc |" in print_table([trl, ours, trl_gc, ours_gc])


def test_the_same_batches_give_a_paired_speed_ratio_with_an_interval():
    args = Namespace(warmup_steps=1)
    tokens = [100] * 6
    first = fake_result("ours_gc_every_layer", [9.0, 2.0, 2.0, 2.0, 2.0, 2.0], tokens)
    # step 5 (index 4) ran beside a busy neighbour: left out when the table reads quiet steps
    second = fake_result(
        "ours_gc", [9.0, 1.0, 1.0, 1.0, 8.0, 4.0], tokens, step_others_cores=[0.0, 0.0, 0.0, 0.0, 1.5, 0.0]
    )
    other_batches = fake_result("ours_compiled", [9.0, 1.0, 1.0, 1.0, 1.0, 1.0], [100, 100, 100, 100, 100, 90])
    _, row, unpaired = summarise(
        [first, second, other_batches], "sft_checkpointing_levers", dict(SETUP, decoder_parameters=1), args, peak=1.0
    )
    # quiet steps 2, 3, 4, 6: 8 s against 7 s
    assert row["paired_steps"] == 4 and row["paired_speed_ratio"] == pytest.approx(8 / 7)
    low, high = row["paired_speed_ci95"]
    # a ratio of sums over resampled steps lies between the smallest and largest per-step ratio (0.5, 2)
    assert 0.5 <= low <= 8 / 7 <= high <= 2.0 and low < high
    assert 0 < row["paired_speed_p"] <= 1
    assert "paired_speed_ci95" not in unpaired  # other batches: no paired comparison
    assert f"| 1.14 [{low:.2f}, {high:.2f}] p {row['paired_speed_p']:.3f} |" in print_table([row])


def test_learning_rate_is_a_tenth_for_full_fine_tuning_and_smaller_for_a_larger_model():
    args = Namespace(sft_lr=1e-3, dpo_lr=1e-4)
    default, larger = {"decoder_parameters": DEFAULT_DECODER_PARAMETERS}, {"decoder_parameters": 4 * 24.1e6}
    assert learning_rate(args, default, "sft", lora=True) == pytest.approx(1e-3)
    assert learning_rate(args, default, "dpo", lora=False) == pytest.approx(1e-5)
    assert learning_rate(args, larger, "dpo", lora=False) == pytest.approx(0.5e-5)  # 1 / sqrt(4)
    assert learning_rate(args, {"decoder_parameters": 1e6}, "sft", lora=True) == pytest.approx(1e-3)  # never larger


def test_precision_check_reports_the_largest_loss_difference():
    rows = [
        {"case": "precision", "impl": "ours_fp32", "losses": [2.0, 1.5], "tokens_per_s": 100.0},
        {"case": "precision", "impl": "ours", "losses": [2.001, 1.497], "tokens_per_s": 300.0},
    ]
    check = precision_check(rows)
    assert check["max_abs_diff"] == pytest.approx(0.003)
    assert check["bf16_speedup"] == pytest.approx(3.0)


def test_same_training_check_takes_the_largest_step_or_held_out_difference():
    rows = [
        {"case": "sft_same_order", "impl": "trl_same_order", "losses": [8.5, 7.25], "held_out_loss": 6.0},
        {"case": "sft_same_order", "impl": "ours_same_order", "losses": [8.5, 7.25003], "held_out_loss": 6.00001},
        {"case": "sft_full", "impl": "ours", "losses": [1.0], "held_out_loss": 1.0},
    ]
    check = agreement(rows, "32-true")
    assert list(check) == ["sft_same_order"]
    case = check["sft_same_order"]
    assert case["max_abs_train_loss_diff"] == pytest.approx(3e-5)
    assert case["held_out_loss_diff"] == pytest.approx(1e-5)
    assert case["within"] is True  # 3e-5 <= 1e-4
    rows[1]["held_out_loss"] = 6.001
    assert agreement(rows, "32-true")["sft_same_order"]["within"] is False
    assert "NOT within" in agreement_text(agreement(rows, "32-true"))
    assert agreement(rows, "16-mixed")["sft_same_order"]["within"] is None  # no tolerance stated for fp16
    assert agreement(rows[2:], "32-true") is None


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is Linux's; elsewhere ru_maxrss is used")
def test_a_workers_peak_rss_is_its_own_not_its_parents(tmp_path):
    """ru_maxrss survives fork and exec: a child of a 600 MiB parent would read 600 MiB. The worker must not."""
    code = "from benchmarks.vs_trl.worker import own_peak_rss; print(own_peak_rss())"
    ballast = b"\1" * (600 * 2**20)  # written, so resident in this (the parent) process
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    del ballast
    assert int(result.stdout) < 300 * 2**20  # the child imports little: far below the parent's 600 MiB


def test_generated_lengths_spread_between_the_bounds():
    import random

    rng = random.Random(0)
    lengths = [log_uniform_length(rng, 16, 400) for _ in range(2000)]
    assert 16 <= min(lengths) < 20 and 380 < max(lengths) <= 400
    # Log-uniform: the median sits near the geometric mean, not the middle.
    assert abs(sorted(lengths)[1000] - math.sqrt(16 * 400)) < 15


def test_the_realistic_workload_has_the_datasets_means_and_fits_the_room_it_is_given():
    import random

    args = Namespace(max_length=1024, min_text_tokens=16, max_text_tokens=400)
    sample = length_sampler("realistic", random.Random(0), args)
    n = 20_000
    # Alpaca-GPT4's prompts (28 tokens without the template) and answers (162): far from the cap, the mean holds.
    prompts = [sample("sft", "prompt", 464) for _ in range(n)]
    assert sum(prompts) / n == pytest.approx(SFT_PROMPT_MEAN, rel=0.03)
    answers = [sample("sft", "response", 10_000) for _ in range(n)]
    assert sum(answers) / n == pytest.approx(SFT_RESPONSE_MEAN, rel=0.03)
    # Skewed: a log-normal's median exp(mu) = mean * exp(-sigma^2 / 2) = 162 * 0.726 = 118 sits below its mean.
    assert sorted(answers)[n // 2] == pytest.approx(SFT_RESPONSE_MEAN * math.exp(-0.8**2 / 2), rel=0.05)
    # UltraFeedback's answers (330) within the room a prompt leaves: never longer, so no row is cut.
    capped = [sample("dpo", "response", 300) for _ in range(n)]
    assert max(capped) == 300 and sum(capped) / n < DPO_RESPONSE_MEAN
    short = length_sampler("short_uniform", random.Random(0), args)
    assert {short("sft", "prompt", 10) for _ in range(200)} <= set(range(6, 11))
    with pytest.raises(ValueError, match="--workload: one of realistic, log_uniform, short_uniform"):
        length_sampler("uniform", random.Random(0), args)


def test_a_live_references_share_and_the_spread_over_repeats_by_hand():
    args = Namespace(warmup_steps=1)
    trl = fake_result("trl", [9.0, 2.0, 2.0], [100, 100, 100])
    # timed steps 1 and 2: 1.5 s each, of which the reference 0.3 s and 0.5 s -> 0.8 / (3.0 - 0.8) = 0.3636
    ours = fake_result("ours_separate", [9.0, 1.5, 1.5], [100, 100, 100], step_reference_seconds=[5.0, 0.3, 0.5])
    first = summarise([trl, ours], "dpo_full", dict(SETUP, decoder_parameters=1), args, peak=1.0)
    assert first[1]["reference_share"] == pytest.approx(0.8 / 2.2)
    assert "reference_share" not in first[0]
    assert "reference forward 0.36x the rest of the step" in print_table(first)
    # two more repeats at 1.0 s and 3.0 s a step: speeds 2.0, 4/3 and 2/3 of TRL's -> median 4/3, range 2/3 to 2
    repeats = [dict(row, repeat=0) for row in first]
    for repeat, step in ((1, 1.0), (2, 3.0)):
        again = fake_result("ours_separate", [9.0, step, step], [100, 100, 100], step_reference_seconds=[0, 0.2, 0.2])
        rows = summarise([trl, again], "dpo_full", dict(SETUP, decoder_parameters=1), args, peak=1.0)
        repeats += [dict(row, repeat=repeat) for row in rows]
    summary = repeat_summary(repeats)
    assert [(entry["case"], entry["impl"], entry["repeats"]) for entry in summary] == [
        ("dpo_full", "trl", 3),
        ("dpo_full", "ours_separate", 3),
    ]
    speed = summary[1]["speed_vs_matched_trl"]
    assert (speed["median"], speed["min"], speed["max"]) == pytest.approx((2.0 / 1.5, 2.0 / 3.0, 2.0))
    # reference shares 0.3636, 0.4 / 1.6 = 0.25 and 0.4 / 5.6 = 0.0714: median 0.25
    assert summary[1]["reference_share"]["median"] == pytest.approx(0.25)
    assert "speed_vs_matched_trl" not in summary[0]
    assert "| dpo_full | ours_separate | 3 | 67 (33-100) | 1.33x (0.67-2.00) |" in print_repeat_table(summary)


@pytest.mark.slow
def test_tiny_end_to_end_run_writes_every_row(tmp_path):
    pytest.importorskip("trl")
    out = tmp_path / "result.json"
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "bench_vs_trl.py"),
        *("--hidden", "64", "--layers", "1", "--heads", "4", "--kv-heads", "2", "--vocab-size", "512"),
        *("--batch-size", "2", "--dpo-batch-size", "2", "--warmup-steps", "1", "--steps", "1"),
        *("--precision-steps", "1", "--eval-rows", "2", "--max-text-tokens", "40", "--max-length", "256"),
        *("--quiet-budget", "0", "--cases", "sft_lora", "dpo_full", "dpo_full_gc", "sft_same_order", "dpo_same_order"),
        *("--workload", "log_uniform", "--repeats", "1"),
        *("--out", str(out)),
    ]
    subprocess.run(command, check=True, cwd=REPO, timeout=900)
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert {(r["case"], r["impl"]) for r in rows} == {
        ("sft_lora", "trl"),
        ("sft_lora", "trl_packing"),
        ("sft_lora", "ours"),
        ("dpo_full", "trl"),
        ("dpo_full", "ours"),
        ("dpo_full", "ours_separate"),
        ("dpo_full_gc", "trl_gc"),
        ("dpo_full_gc", "ours_gc"),
        ("sft_same_order", "trl_same_order"),
        ("sft_same_order", "ours_same_order"),
        ("dpo_same_order", "trl_same_order"),
        ("dpo_same_order", "ours_same_order"),
    }
    # The same batches in the same order: the same training, within the precision's tolerance.
    for case in ("sft_same_order", "dpo_same_order"):
        assert result["same_training_check"][case]["within"] is True, result["same_training_check"][case]
    for row in rows:
        assert row["tokens_per_s"] > 0 and row["peak_rss_mib"] > 0 and math.isfinite(row["held_out_loss"])
    assert "amortised_tokens_per_s" in next(r for r in rows if r["impl"] == "ours" and r["case"] == "dpo_full")
    assert next(r for r in rows if r["impl"] == "ours_gc")["matched_trl"] == "trl_gc"


def test_every_implementation_started_with_its_own_environment_is_one_a_case_runs():
    """``IMPL_ENV`` is applied by implementation name: a renamed lever would silently run with the plain one's."""
    run = {impl for impls in (*CASES.values(), *LEVER_CASES.values()) for impl in impls}
    assert IMPL_ENV and set(IMPL_ENV) <= run
    assert all(isinstance(value, str) for env in IMPL_ENV.values() for value in env.values())
