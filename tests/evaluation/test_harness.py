"""lm-evaluation-harness on a model in memory, offline: the project's local copies of IFEval, GSM8K, TruthfulQA
and MMLU (data/benchmarks/, the Hub layout) read through lm-eval's own tasks, and lm-eval's own scoring
checked on hand-written responses."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import EvaluationError
from evaluation.benchmark_stats import benchmark_table
from evaluation.harness import (
    HarnessSettings,
    HarnessTask,
    check_tasks,
    ensure_sentence_tokenizer,
    leaf_tasks,
    prepared_tasks,
    run_harness,
    task_manager,
)

REPO = Path(__file__).resolve().parents[2]
COPIES = {
    "google/IFEval": str(REPO / "data/benchmarks/google--IFEval"),
    "openai/gsm8k": str(REPO / "data/benchmarks/openai--gsm8k"),
    "truthfulqa/truthful_qa": str(REPO / "data/benchmarks/truthfulqa--truthful_qa"),
    "cais/mmlu": str(REPO / "data/benchmarks/cais--mmlu"),
}


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def test_ifeval_scoring_by_lm_eval_strict_pass_and_fail() -> None:
    """lm-eval's own IFEval checks: an all-lowercase answer passes ``english_lowercase`` strictly, one capital
    letter fails it; three sentences fail "less than 3 sentences", two pass (the sentence count needs Punkt)."""
    ensure_sentence_tokenizer()
    from lm_eval.tasks.ifeval.utils import process_results

    lowercase = {"key": 1, "prompt": "p", "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]}
    assert process_results(lowercase, ["the rain falls softly on the roof."])["prompt_level_strict_acc"] is True
    assert process_results(lowercase, ["The rain falls softly on the roof."])["prompt_level_strict_acc"] is False
    sentences = {
        "key": 2,
        "prompt": "p",
        "instruction_id_list": ["length_constraints:number_sentences"],
        "kwargs": [{"relation": "less than", "num_sentences": 3}],
    }
    assert process_results(sentences, ["Light scatters. Blue scatters most."])["prompt_level_strict_acc"] is True
    three = "Dr. Rayleigh explained it. Light scatters. Blue scatters most."
    assert process_results(sentences, [three])["prompt_level_strict_acc"] is False  # "Dr." does not end a sentence


def test_gsm8k_answer_extraction_by_lm_eval_filters() -> None:
    """The strict-match filter of lm-eval's gsm8k task takes the number after ``####``; exact match then ignores
    commas, so "#### 1,200" matches the target "... #### 1200" and a missing ``####`` is ``[invalid]``."""
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    strict = RegexFilter(regex_pattern=r"#### (\-?[0-9\.\,]+)")
    extracted = list(strict.apply([["so 1500 - 300 = 1200.\n#### 1,200"], ["it is 1200"]], [{}, {}]))
    assert extracted == [["1,200"], ["[invalid]"]]
    ignore = [",", "\\$", "(?s).*#### ", "\\.$"]
    score = exact_match_hf_evaluate(
        predictions=["1,200", "[invalid]"],
        references=["1500 - 300 = 1200.\n#### 1200"] * 2,
        regexes_to_ignore=ignore,
        ignore_case=True,
    )
    assert score["exact_match"] == pytest.approx(0.5)


def test_group_expands_to_leaves_and_local_copy_keeps_its_configs(capsys) -> None:
    """``mmlu`` is 57 leaf tasks; the local copy holds two subjects, so two run and 55 are counted out."""
    manager = task_manager()
    assert len(leaf_tasks(manager.task_index, "mmlu")) == 57
    settings = HarnessSettings(tasks=[{"task": "mmlu", "metric": "acc"}], local_copies=COPIES)
    with prepared_tasks(settings) as (_, leaves, specs):
        assert leaves["mmlu"] == ["mmlu_college_biology", "mmlu_high_school_mathematics"]
        assert all(Path(specs[leaf]).is_file() for leaf in leaves["mmlu"])
    assert "holds 2 of 57 leaf tasks; 55 left out" in capsys.readouterr().out


def test_unknown_task_and_unconfirmed_code_execution_are_refused(tiny_model, tiny_tokenizer) -> None:
    with pytest.raises(EvaluationError, match="no task, group or tag 'gsm8kk'"):
        run_harness(
            tiny_model, tiny_tokenizer, HarnessSettings(tasks=[{"task": "gsm8kk", "metric": "x"}]), max_length=256
        )
    with pytest.raises(EvaluationError, match="listed twice"):
        HarnessSettings(tasks=[{"task": "gsm8k", "metric": "x"}, {"task": "gsm8k", "metric": "y"}])


def test_a_filter_the_task_does_not_define_is_refused_before_any_model_runs() -> None:
    """gsm8k's YAML defines the filters strict-match and flexible-extract; HumanEval's sandboxed task create_test."""
    with pytest.raises(EvaluationError, match=r"tasks\[gsm8k\]\.filter: 'none'.*'strict-match', 'flexible-extract'"):
        check_tasks(HarnessSettings(tasks=[{"task": "gsm8k", "metric": "exact_match"}], local_copies=COPIES))
    with pytest.raises(EvaluationError, match="set filter: create_test"):
        check_tasks(HarnessSettings(tasks=[{"task": "humaneval_sandboxed", "metric": "pass_at_1"}], execute_code=True))
    check_tasks(HarnessSettings(tasks=[{"task": "gsm8k", "metric": "exact_match", "filter": "strict-match"}]))


def test_per_item_outcomes_of_every_task_on_a_model_in_memory(tiny_model, tiny_tokenizer) -> None:
    """One per-item outcome per document of the local copy, in doc order, pass / fail where the metric is,
    a score in [0, 1] for MC2; their mean is lm-eval's own aggregate; the protocol is recorded."""
    settings = HarnessSettings(
        tasks=[
            HarnessTask("ifeval", "prompt_level_strict_acc", num_fewshot=0),
            HarnessTask("gsm8k", "exact_match", num_fewshot=2, filter="strict-match"),
            HarnessTask("truthfulqa_mc2", "acc", num_fewshot=0),
            HarnessTask("mmlu", "acc", num_fewshot=2),
        ],
        batch_size=4,
        max_gen_toks=8,
        local_copies=COPIES,
    )
    found = run_harness(tiny_model, tiny_tokenizer, settings, max_length=512)
    assert list(found) == ["ifeval", "gsm8k", "truthfulqa_mc2", "mmlu"]
    assert found["ifeval"].items == [f"ifeval/{i}" for i in range(4)]
    assert len(found["gsm8k"].outcomes) == 4 and set(found["gsm8k"].outcomes) <= {0.0, 1.0}
    assert len(found["truthfulqa_mc2"].outcomes) == 3
    assert all(0.0 <= value <= 1.0 for value in found["truthfulqa_mc2"].outcomes)
    assert found["truthfulqa_mc2"].protocol["outcome"] == "score"
    assert len(found["mmlu"].items) == 6 and found["mmlu"].items[0] == "mmlu_college_biology/0"
    for name, outcome in found.items():
        for leaf, aggregate in outcome.harness.items():
            values = [v for item, v in zip(outcome.items, outcome.outcomes, strict=True) if item.startswith(leaf + "/")]
            assert sum(values) / len(values) == pytest.approx(aggregate), (name, leaf)
    # The leaderboard's MMLU (the subjects' mean) is the mean of lm-eval's own per-subject accuracies.
    mmlu = found["mmlu"]
    table = benchmark_table({"mmlu": {"outcome": "pass_fail", "ids": mmlu.items, "values": {"base": mmlu.outcomes}}})
    subjects = table["mmlu/subject_mean"]
    assert subjects["subjects"] == len(mmlu.harness) == 2
    assert subjects["per_variant"]["base"]["value"] == pytest.approx(sum(mmlu.harness.values()) / 2)
    protocol = found["gsm8k"].protocol
    assert protocol["num_fewshot"] == {"gsm8k": 2} and protocol["version"] == {"gsm8k": 3.0}
    assert protocol["dataset"]["gsm8k"]["path"] == COPIES["openai/gsm8k"]
    assert (
        found["ifeval"].protocol["sentence_tokenizer"].endswith("punkt_tab")
        or "project" in (found["ifeval"].protocol["sentence_tokenizer"])
    )


def test_every_task_of_the_study_config_runs_with_its_own_shot_counts(tiny_model, tiny_tokenizer) -> None:
    """configs/evaluate.yaml's lm-eval tasks as the study runs them (its metrics, filters and few-shot counts: GSM8K
    and MMLU 5-shot, ARC 25-shot), on the tiny model and the dry run's local copies, one item per task: every task
    resolves, runs and yields its outcome under the configured metric (the dry run cuts the shots for CI time)."""
    import yaml

    study = yaml.safe_load((REPO / "configs/evaluate.yaml").read_text())["benchmarks"]["harness"]
    dryrun = yaml.safe_load((REPO / "configs/dryrun/evaluate.yaml").read_text())["benchmarks"]["harness"]
    copies = {hub_id: str(REPO / folder) for hub_id, folder in dryrun["local_copies"].items()}
    settings = HarnessSettings(
        **{**study, "local_copies": copies, "limit": 1, "max_gen_toks": 4, "batch_size": 4, "code_timeout_s": 5}
    )
    found = run_harness(tiny_model, tiny_tokenizer, settings, max_length=512)
    assert list(found) == [task["task"] for task in study["tasks"]]
    for task in study["tasks"]:
        protocol = found[task["task"]].protocol
        assert set(protocol["num_fewshot"].values()) == {task["num_fewshot"]}, task
        assert (protocol["metric"], protocol["filter"]) == (task["metric"], task.get("filter", "none"))
        assert len(found[task["task"]].outcomes) == protocol["leaves"]  # one item per leaf (MMLU: 2 subjects)
