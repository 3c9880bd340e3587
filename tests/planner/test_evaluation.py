"""The evaluation's predicted time: benchmarks timed by hand from the formula, every listed benchmark planned,
missing sections tolerated, and the evaluation beside the training stages on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from planner.cli import main
from planner.devices import gpu
from planner.evaluation import (
    BANDWIDTH_EFFICIENCY,
    HOST_SECONDS_PER_LAYER,
    LORA_HOST_SHARE,
    forward_cost,
    parse_evaluation,
    plan_evaluation,
)
from planner.settings import Lora
from planner.shapes import read_architecture

REPO = Path(__file__).resolve().parents[2]
MISTRAL = read_architecture(REPO / "configs/models/mistral-7b-v0.1.json")
# Mistral-7B by hand: per layer q, o 4096 x 4096, k, v 4096 x 1024, gate, up, down 4096 x 14336
N_BODY = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336)  # 6,979,321,856
HEAD = 32000 * 4096
H100_RATE = 0.4 * 989e12  # MFU 40 % of the dense bf16 peak
H100_BANDWIDTH = BANDWIDTH_EFFICIENCY * 3.35e12
HOST = 32 * HOST_SECONDS_PER_LAYER  # one eager forward of 32 layers


def study_config(**sections) -> dict:
    """configs/evaluate.yaml as committed, without its benchmarks: section, plus ``sections``."""
    config = yaml.safe_load((REPO / "configs/evaluate.yaml").read_text())
    config.pop("benchmarks", None)
    return config | sections


def plan(config: dict, monkeypatch, **kwargs):
    monkeypatch.chdir(REPO)
    return plan_evaluation(parse_evaluation(config, "configs/evaluate.yaml"), gpu("H100"), 0.4, **kwargs)


def row(evaluation_plan, name: str):
    return next(row for row in evaluation_plan.rows if row.workload.name == name)


def test_mmlu_is_its_forward_flops_at_the_mfu(monkeypatch):
    """MMLU 5-shot: 14,042 forwards of 110 + 5 x 100 + 1 = 611 tokens (one per question: the four one-token
    choices share it), 8 rows a forward. Per token: 2 N_body, attention 2 L q s, the head 2 V h at every
    position. A forward of 8 rows is 7.0e13 FLOPs, 0.18 s at 40 % of 989 TFLOP/s: above the host's 29.4 ms and
    the weights' 14.5 GB / 2.35 TB/s = 6.2 ms, so compute-bound (the last forward's 2 rows too: 0.044 s)."""
    config = study_config(benchmarks={"harness": {"batch_size": 8, "tasks": [{"task": "mmlu", "num_fewshot": 5}]}})
    evaluation_plan = plan(config, monkeypatch)
    s = 110 + 5 * 100 + 1
    per_token = 2 * N_BODY + 2 * 32 * 4096 * s + 2 * HEAD
    assert 2 * s * per_token / H100_RATE > max(HOST, (N_BODY + HEAD) * 2 / H100_BANDWIDTH)
    by_hand = 14_042 * s * per_token / H100_RATE
    mmlu = row(evaluation_plan, "harness mmlu (5-shot)")
    assert mmlu.seconds["base"] == pytest.approx(by_hand, rel=1e-9)
    assert by_hand / 60 == pytest.approx(5.2, abs=0.05)  # minutes
    # the stacked adapters add 2 N_lora per token (r 16 on the 7 projections: 41.9M weights each), and 140 % to the
    # host's time: the last forward, of 2 rows (0.044 s), waits for the host's 70.7 ms
    lora = 32 * 16 * (2 * (4096 + 4096) + 2 * (4096 + 1024) + 3 * (4096 + 14336))
    full_batches = 1755 * 8 * s * (per_token + 4 * lora) / H100_RATE
    last = max(2 * s * (per_token + 4 * lora) / H100_RATE, HOST * (1 + 14 * LORA_HOST_SHARE))
    assert mmlu.seconds["sft_dpo"] == pytest.approx(full_batches + last, rel=1e-9)


def test_ifeval_decodes_at_the_hosts_pace(monkeypatch):
    """IFEval: 541 prompts in 68 batches of 8 (the last of 5), each planned to 1,280 tokens: a prefill and 1,279
    decode steps. A decode step reads the 14.5 GB of weights (6.2 ms at 70 % of 3.35 TB/s) and at most 8 x 1,350
    cached tokens of 128 KiB (0.6 ms), and computes 8 x 14.2 GFLOP (0.3 ms): each is below the host's 32 x 0.92
    ms, as is the prefill (8 x 70 tokens, 20 ms). Adapters add 10 % a projection: 7 per adapter."""
    config = study_config(benchmarks={"harness": {"tasks": [{"task": "ifeval"}]}})
    ifeval = row(plan(config, monkeypatch), "harness ifeval")
    decode_bytes = (N_BODY + HEAD) * 2 + 8 * (70 + 1280) * 2 * 32 * 1024 * 2
    assert decode_bytes / H100_BANDWIDTH < HOST and 8 * 70 * 2 * N_BODY / H100_RATE < HOST
    by_hand = 68 * 1280 * HOST
    assert ifeval.seconds["base"] == pytest.approx(by_hand, rel=1e-9)
    assert ifeval.seconds["sft"] == pytest.approx(by_hand * (1 + 7 * LORA_HOST_SHARE), rel=1e-9)
    assert ifeval.seconds["sft_dpo"] == pytest.approx(by_hand * (1 + 14 * LORA_HOST_SHARE), rel=1e-9)


def test_a_decode_step_without_host_overhead_is_bound_by_memory():
    """With no host time, 16 rows at 500 cached tokens: the weights and the KV cache over the bandwidth."""
    cost = forward_cost(MISTRAL, gpu("H100"), 0.4, host_seconds_per_layer=0.0)
    kv_bytes = 16 * 500 * 2 * 32 * 1024 * 2  # K and V, 32 layers, 8 heads x 128, 2 bytes
    assert cost.decode_step(16, 500) == pytest.approx(((N_BODY + HEAD) * 2 + kv_bytes) / H100_BANDWIDTH, rel=1e-12)
    four_bit = forward_cost(MISTRAL, gpu("H100"), 0.4, load_in_4bit=True, host_seconds_per_layer=0.0)
    assert four_bit.weight_bytes < cost.weight_bytes / 3  # NF4 projections, bf16 head
    stacked = forward_cost(MISTRAL, gpu("H100"), 0.4, adapters=(Lora(r=16),))
    assert stacked.host_seconds == pytest.approx(HOST * (1 + 7 * LORA_HOST_SHARE))


def test_study_evaluation_plans_every_listed_benchmark(monkeypatch, capsys):
    """configs/evaluate.yaml as it stands: each harness task and prompt set it lists is a row (or, when the
    planner knows no size for it, a note naming it), next to the study's prompts, held-out data and the judge."""
    monkeypatch.chdir(REPO)
    config = yaml.safe_load((REPO / "configs/evaluate.yaml").read_text())
    code = main(["plan", "--config", "configs/evaluate.yaml", "--gpu", "H100", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["stage"] == "evaluation" and result["variants"] == ["base", "sft", "sft_dpo"]
    rows = result["workload_seconds"]
    assert {"prompts study_prompts.jsonl", "held-out pairs", "held-out instructions", "judge"} <= set(rows)
    benchmarks = config.get("benchmarks") or {}
    tasks = [entry["task"] for entry in (benchmarks.get("harness") or {}).get("tasks") or []]
    sets = [entry["name"] for entry in benchmarks.get("prompt_sets") or []]
    listed = [("harness", task, f"harness task {task}:") for task in tasks]
    listed += [("prompt set", name, f"prompt set {name}:") for name in sets]
    for kind, name, note in listed:
        planned = any(row == f"{kind} {name}" or row.startswith(f"{kind} {name} (") for row in rows)
        assert planned or any(text.startswith(note) for text in result["notes"]), name
    assert all(set(seconds) == {"base", "sft", "sft_dpo"} for seconds in rows.values())
    assert result["total_seconds"] == pytest.approx(sum(result["variant_seconds"].values()))


def test_the_issue_24_benchmarks_are_all_known(monkeypatch):
    config = study_config(
        benchmarks={
            "harness": {
                "batch_size": 8,
                "tasks": [
                    {"task": "ifeval", "num_fewshot": 0, "metric": "prompt_level_strict_acc"},
                    {"task": "gsm8k", "num_fewshot": 5, "metric": "exact_match", "filter": "strict-match"},
                    {"task": "truthfulqa_mc2", "num_fewshot": 0, "metric": "acc"},
                    {"task": "mmlu", "num_fewshot": 5, "metric": "acc"},
                    {"task": "humaneval_sandboxed", "num_fewshot": 0, "metric": "pass_at_1"},
                ],
            },
            "prompt_sets": [{"name": "xstest", "files": "Paul/XSTest"}, {"name": "alpaca_eval"}],
        }
    )
    evaluation_plan = plan(config, monkeypatch)
    names = [row.workload.name for row in evaluation_plan.rows]
    assert names[3:] == [
        "harness ifeval",
        "harness gsm8k (5-shot)",
        "harness truthfulqa_mc2",
        "harness mmlu (5-shot)",
        "harness humaneval_sandboxed",
        "prompt set xstest",
        "prompt set alpaca_eval",
        "judge",
    ]
    assert row(evaluation_plan, "judge").workload.items == 38 + 805  # the study's prompts and AlpacaEval's
    assert any("execute_code" in note for note in evaluation_plan.notes)  # HumanEval without execute_code: true
    for variant in ("base", "sft", "sft_dpo"):  # every variant: more adapters, more host time per forward
        assert evaluation_plan.variant_seconds(variant) > 0
    assert evaluation_plan.variant_seconds("base") < evaluation_plan.variant_seconds("sft_dpo")


def test_missing_sections_plan_what_is_there(monkeypatch):
    """Only prompts: no held-out data, no judge, no benchmarks; a task without batch_size or num_fewshot takes
    the harness's 8 and its own default (GSM8K 5-shot); an unknown task is a note, not an error."""
    only_prompts = plan({"prompts": "data/study_prompts.jsonl", "sft_adapter": "outputs/study/sft"}, monkeypatch)
    assert [row.workload.name for row in only_prompts.rows] == ["prompts study_prompts.jsonl"]
    assert only_prompts.rows[0].workload.new_tokens == 128  # EvaluationConfig's generation default
    config = study_config(benchmarks={"harness": {"tasks": [{"task": "gsm8k"}, {"task": "no_such_task"}]}})
    partial = plan(config, monkeypatch)
    gsm8k = row(partial, "harness gsm8k (5-shot)").workload
    assert (gsm8k.batch_size, gsm8k.prompt_tokens, gsm8k.new_tokens) == (8, 65 + 5 * 175, 256)
    assert any("no_such_task" in note for note in partial.notes)


def test_evaluation_beside_training_on_the_command_line(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    configs = ["configs/sft.yaml", "configs/dpo.yaml", "configs/evaluate.yaml"]
    code = main(["plan", *[arg for config in configs for arg in ("--config", config)], "--json"])
    runs = json.loads(capsys.readouterr().out)
    assert code == 0 and [run["stage"] for run in runs["runs"]] == ["sft", "dpo", "evaluation"]
    assert runs["total_seconds"] == pytest.approx(sum(run["total_seconds"] for run in runs["runs"]))
    main(["plan", "--config", "configs/evaluate.yaml", "--gpu", "A100"])
    text = capsys.readouterr().out
    assert "(evaluation) on A100 SXM 80GB" in text and "vLLM" in text
    header = next(line for line in text.splitlines() if line.startswith("  workload"))
    assert header.split()[-4:] == ["base", "sft", "sft_dpo", "total"]
    assert main(["plan", "--config", "configs/tiny/evaluate.yaml", "--cpu"]) == 0
    assert "planned for a GPU" in capsys.readouterr().out
