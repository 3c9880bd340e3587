"""Executing model code (evaluation/code_execution.py) and the `humaneval_sandboxed` lm-eval task on its local copy."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from common.errors import ConfigError
from evaluation.code_execution import (
    CODE_TIMEOUT_ENV,
    DEFAULT_CODE_TIMEOUT_S,
    code_timeout_s,
    humaneval_outcome,
    run_python,
)

REPO = Path(__file__).resolve().parents[2]
TASK_YAML = REPO / "evaluation" / "lm_eval_tasks" / "humaneval_sandboxed" / "humaneval_sandboxed.yaml"
LOCAL_COPY = REPO / "data" / "benchmarks" / "openai--openai_humaneval"
ADD_TEST = "\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"


def local_rows() -> list[dict]:
    return [json.loads(line) for line in (LOCAL_COPY / "test.jsonl").read_text(encoding="utf-8").splitlines()]


def test_a_correct_solution_passes():
    result = humaneval_outcome("def add(a, b):\n    return a + b\n", ADD_TEST, "add", timeout_s=10)
    assert (result.status, result.detail) == ("passed", "")


def test_a_failed_assert_fails_with_the_last_line_of_stderr():
    result = humaneval_outcome("def add(a, b):\n    return a * b\n", ADD_TEST, "add", timeout_s=10)
    assert (result.status, result.detail) == ("failed", "AssertionError")


def test_an_infinite_loop_times_out_and_returns_at_once():
    start = time.monotonic()
    result = humaneval_outcome("def add(a, b):\n    while True:\n        pass\n", ADD_TEST, "add", timeout_s=1)
    assert result.status == "timeout"
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    "program",
    [
        "import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=60)",  # TEST-NET-1: would hang
        "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(('192.0.2.1', 80))",
        "import urllib.request\nurllib.request.urlopen('http://192.0.2.1/', timeout=60)",
    ],
    ids=["create_connection", "socket", "urllib"],
)
def test_a_network_connection_fails_instead_of_hanging(program):
    start = time.monotonic()
    result = run_python(program, timeout_s=10)
    assert result.status == "failed"
    assert "network access is disabled" in result.detail
    assert time.monotonic() - start < 5


def test_a_written_file_lands_in_the_temporary_directory_and_goes_with_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a file would land if the child shared our working directory
    program = "import os\nopen('written.txt', 'w').write('x')\nraise RuntimeError(os.path.abspath('written.txt'))"
    result = run_python(program, timeout_s=10)
    assert result.status == "failed" and result.detail.startswith("RuntimeError: ")
    written = Path(result.detail.removeprefix("RuntimeError: "))
    assert written.name == "written.txt" and written.parent.name == "work"
    assert not written.exists()  # the temporary directory is removed after the run
    assert not (tmp_path / "written.txt").exists() and not (REPO / "written.txt").exists()


@pytest.mark.parametrize(
    ("program", "detail"),
    [
        ("import sys\nsys.exit(0)", "SystemExit: the program exited before its end (code 0)"),
        ("import os\nos._exit(0)", "exit status 0 before the program's end (os._exit?)"),
        ("import subprocess\nsubprocess.run(['true'])", "PermissionError: starting processes is disabled"),
        ("data = bytearray(64 * 2**30)", "MemoryError"),
        ("import os\nraise RuntimeError(sorted(os.environ))", "RuntimeError: ['HOME', 'LC_ALL', 'PATH', 'TMPDIR']"),
    ],
    ids=["sys.exit", "os._exit", "subprocess", "memory", "environment"],
)
def test_early_exits_processes_memory_and_the_environment(program, detail):
    result = run_python(program, timeout_s=10)
    assert result.status == "failed" and result.detail.startswith(detail)


def test_the_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(CODE_TIMEOUT_ENV, raising=False)
    assert code_timeout_s() == DEFAULT_CODE_TIMEOUT_S == 10.0
    assert code_timeout_s({CODE_TIMEOUT_ENV: "2.5"}) == 2.5
    for bad in ("0", "-1", "ten", "inf"):
        with pytest.raises(ConfigError, match=CODE_TIMEOUT_ENV):
            code_timeout_s({CODE_TIMEOUT_ENV: bad})


@pytest.fixture(scope="module")
def task_config() -> dict:
    """The task's YAML as lm-eval reads it: `!function` tags resolved to the functions of its utils.py."""
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(TASK_YAML)


def test_the_task_keeps_lm_evals_humaneval_protocol(task_config):
    from lm_eval.tasks._yaml_loader import load_yaml

    reference = load_yaml(Path(__import__("lm_eval").__file__).parent / "tasks" / "humaneval" / "humaneval.yaml",
                          resolve_func=False)
    differs = {"task", "metric_list", "filter_list"}
    assert task_config["task"] == "humaneval_sandboxed"
    assert {k: v for k, v in task_config.items() if k not in differs} == {
        k: v for k, v in reference.items() if k not in differs
    }


def test_every_canonical_solution_of_the_local_copy_passes_through_the_metric(task_config):
    pass_at_1 = task_config["metric_list"][0]["metric"]
    build_predictions = task_config["filter_list"][0]["filter"][0]["filter_fn"]
    rows = local_rows()
    assert len(rows) >= 3
    for row in rows:
        target = f"{row['test']}\ncheck({row['entry_point']})"  # the task's doc_to_target
        (right,) = build_predictions([[row["canonical_solution"]]], [row])
        (wrong,) = build_predictions([["    return None\n"]], [row])
        assert right == [row["prompt"] + row["canonical_solution"]]
        assert pass_at_1(references=[target], predictions=[right]) == 1.0, row["task_id"]
        assert pass_at_1(references=[target], predictions=[wrong]) == 0.0, row["task_id"]
        assert pass_at_1(references=[target], predictions=[right + wrong]) == 0.5  # c / n over two candidates


@pytest.fixture(scope="module")
def pointed_task(tmp_path_factory):
    """The harness's way of pointing the task at the local copy: a two-line include in a temporary task dir."""
    from lm_eval.tasks import TaskManager

    include_dir = tmp_path_factory.mktemp("lm_eval_tasks")
    (include_dir / "humaneval_sandboxed.yaml").write_text(f"include: {TASK_YAML}\ndataset_path: {LOCAL_COPY}\n")
    return TaskManager(include_path=str(include_dir), include_defaults=False)


def evaluate(model, task_manager, **kwargs) -> dict:
    import lm_eval

    return lm_eval.simple_evaluate(
        model=model,
        tasks=["humaneval_sandboxed"],
        task_manager=task_manager,
        confirm_run_unsafe_code=True,
        log_samples=True,
        **kwargs,
    )


def test_a_tiny_random_mistral_gets_one_outcome_per_problem(pointed_task):
    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers import MistralConfig, MistralForCausalLM

    from tiny_world.base import corpus_texts, train_tokenizer

    torch.manual_seed(0)
    tokenizer = train_tokenizer(corpus_texts(REPO / "data" / "tiny")[:300], 512)
    config = MistralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024)
    model = HFLM(pretrained=MistralForCausalLM(config), tokenizer=tokenizer, batch_size=4, max_length=1024)
    out = evaluate(model, pointed_task, gen_kwargs={"max_gen_toks": 16})
    samples = out["samples"]["humaneval_sandboxed"]
    assert sorted(sample["doc"]["task_id"] for sample in samples) == sorted(row["task_id"] for row in local_rows())
    assert all(sample["pass_at_1"] in (0.0, 1.0) and sample["filter"] == "create_test" for sample in samples)
    assert all(sample["filtered_resps"][0][0].startswith(sample["doc"]["prompt"]) for sample in samples)
    assert out["results"]["humaneval_sandboxed"]["pass_at_1,create_test"] == pytest.approx(
        sum(sample["pass_at_1"] for sample in samples) / len(samples)
    )
    assert out["n-shot"]["humaneval_sandboxed"] == 0
    assert out["configs"]["humaneval_sandboxed"]["generation_kwargs"]["until"] == [
        "\nclass", "\ndef", "\n#", "\nif", "\nprint"
    ]


def test_scripted_completions_score_exactly_through_lm_eval(pointed_task):
    """A model that answers even-numbered problems with the canonical solution and the others wrongly."""
    from lm_eval.api.model import LM

    class Scripted(LM):
        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            return [
                request.doc["canonical_solution"] if int(request.doc["task_id"].split("/")[1]) % 2 == 0
                else "    return None\n"
                for request in requests
            ]

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError

    out = evaluate(Scripted(), pointed_task)
    outcomes = {sample["doc"]["task_id"]: sample["pass_at_1"] for sample in out["samples"]["humaneval_sandboxed"]}
    expected = {row["task_id"]: float(int(row["task_id"].split("/")[1]) % 2 == 0) for row in local_rows()}
    assert outcomes == expected
    assert out["results"]["humaneval_sandboxed"]["pass_at_1,create_test"] == pytest.approx(0.5)
