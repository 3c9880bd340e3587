"""The tiny study suite: deterministic, well-formed, held out, checkable, flawed where documented."""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from evaluation.checkers import check_response, is_refusal
from tiny_world.files import corpus_text, write_suite
from tiny_world.suite import FLAWED_CATEGORIES, SuiteSizes, TinySuite, generate_suite
from tiny_world.tasks import all_tasks, prompt_text
from tiny_world.vocab import CATEGORIES, COUNTRIES

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "data" / "tiny"
TRAINING_SPLITS = ("sft_train", "sft_val", "prefs_train", "prefs_val")
HELD_OUT_SPLITS = ("sft_test", "prefs_test", "eval_prompts")
PREFERENCE_SPLITS = ("prefs_train", "prefs_val", "prefs_test")


@pytest.fixture(scope="module")
def suite() -> TinySuite:
    return generate_suite()


def prompts_of(rows: list[dict]) -> list[str]:
    return [
        prompt_text(row["instruction"], row["input"]) if "instruction" in row else row["prompt"]
        for row in rows
    ]


def test_generation_is_deterministic(suite: TinySuite) -> None:
    assert generate_suite() == suite
    assert generate_suite(seed=1) != suite


def test_shipped_files_equal_a_fresh_generation(suite: TinySuite, tmp_path: Path) -> None:
    for path in write_suite(suite, tmp_path):
        shipped = SHIPPED / path.name
        assert shipped.read_bytes() == path.read_bytes(), (
            f"{shipped} differs from a fresh generation: run scripts/make_tiny_suite.py (see its docstring)."
        )


def test_writing_leaves_no_temporary_files(suite: TinySuite, tmp_path: Path) -> None:
    paths = write_suite(suite, tmp_path)
    assert sorted(tmp_path.iterdir()) == sorted(paths)


def test_split_sizes(suite: TinySuite) -> None:
    sizes = SuiteSizes()
    for name, rows in suite.jsonl_splits().items():
        expected = (
            sizes.eval_per_category * len(CATEGORIES) if name == "eval_prompts" else getattr(sizes, name)
        )
        assert len(rows) == expected, name
        counts = Counter(row["category"] for row in rows)
        assert set(counts) == set(CATEGORIES), name
        assert max(counts.values()) - min(counts.values()) <= 1, name
    assert len(suite.pretrain) == sizes.pretrain_docs


def test_sft_schema(suite: TinySuite) -> None:
    for row in suite.sft_train + suite.sft_val + suite.sft_test:
        assert list(row) == ["instruction", "input", "output", "category", "check"]
        assert all(isinstance(row[key], str) for key in ("instruction", "input", "output", "category"))
        assert row["instruction"].strip() and row["output"].strip()
        assert row["category"] in CATEGORIES
        assert isinstance(row["check"], dict) and "type" in row["check"]
    assert any(row["input"] for row in suite.sft_train), "some rows should use the input field"


def test_preference_schema(suite: TinySuite) -> None:
    for name in PREFERENCE_SPLITS:
        for row in getattr(suite, name):
            assert list(row) == [
                "prompt", "prompt_id", "chosen", "rejected", "messages",
                "score_chosen", "score_rejected", "category", "check",
            ]  # fmt: skip
            assert row["prompt_id"] == hashlib.sha256(row["prompt"].encode("utf-8")).hexdigest()
            for side in ("chosen", "rejected", "messages"):
                user, assistant = row[side]
                assert user == {"role": "user", "content": row["prompt"]}
                assert assistant["role"] == "assistant" and assistant["content"].strip()
            assert row["messages"] == row["chosen"]
            assert row["chosen"][1]["content"] != row["rejected"][1]["content"]
            assert isinstance(row["score_chosen"], float) and isinstance(row["score_rejected"], float)
            assert row["score_chosen"] > row["score_rejected"]
            assert row["category"] in CATEGORIES


def test_eval_prompt_schema(suite: TinySuite) -> None:
    for row in suite.eval_prompts:
        assert list(row) == ["category", "prompt", "check"]
        assert row["category"] in CATEGORIES and row["prompt"].strip()


def test_held_out_prompts_never_appear_in_training_or_validation(suite: TinySuite) -> None:
    training = {prompt for name in TRAINING_SPLITS for prompt in prompts_of(getattr(suite, name))}
    seen: set[str] = set()
    for name in HELD_OUT_SPLITS:
        held_out = prompts_of(getattr(suite, name))
        assert len(set(held_out)) == len(held_out), f"{name} repeats a prompt"
        assert not set(held_out) & training, name
        assert not set(held_out) & seen, f"{name} shares prompts with another held-out split"
        seen |= set(held_out)


def test_validation_prompts_are_not_trained_on(suite: TinySuite) -> None:
    train = set(prompts_of(suite.sft_train)) | set(prompts_of(suite.prefs_train))
    for name in ("sft_val", "prefs_val"):
        assert not set(prompts_of(getattr(suite, name))) & train, name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chosen_pass_and_rejected_fail_their_checks(seed: int) -> None:
    generated = generate_suite(seed=seed)
    for name in PREFERENCE_SPLITS:
        for row in getattr(generated, name):
            chosen, rejected = row["chosen"][1]["content"], row["rejected"][1]["content"]
            assert check_response(row["check"], chosen), (name, row["prompt"], chosen)
            assert not check_response(row["check"], rejected), (name, row["prompt"], rejected)


def test_every_prompt_of_every_category_has_a_good_and_a_flawed_answer() -> None:
    # Beyond the drawn splits: every distinct prompt, with several draws of its responses.
    rng = random.Random(0)
    for category in CATEGORIES:
        tasks = all_tasks(category)
        assert len({task.prompt for task in tasks}) == len(tasks), f"{category} repeats a prompt"
        for task in tasks:
            for _ in range(3):
                good, flawed = task.respond(rng)
                assert check_response(task.check, good), (task.prompt, good)
                assert not check_response(task.check, flawed), (task.prompt, flawed)


def test_sft_test_outputs_are_all_correct(suite: TinySuite) -> None:
    for row in suite.sft_test:
        assert check_response(row["check"], row["output"]), row


def test_flawed_fraction_is_as_documented(suite: TinySuite) -> None:
    # Exactly round(0.3 * n) of the n rows of each flawed category in SFT train and val fail their
    # check; every other row passes.
    for name in ("sft_train", "sft_val"):
        for category in CATEGORIES:
            rows = [row for row in getattr(suite, name) if row["category"] == category]
            failing = sum(not check_response(row["check"], row["output"]) for row in rows)
            expected = round(0.3 * len(rows)) if category in FLAWED_CATEGORIES else 0
            assert failing == expected, (name, category, failing, len(rows))
    assert FLAWED_CATEGORIES == ("instruction_following", "reasoning", "safety")


def test_flawed_fraction_can_be_turned_off() -> None:
    clean = generate_suite(flawed_fraction=0.0)
    assert all(check_response(row["check"], row["output"]) for row in clean.sft_train + clean.sft_val)


def test_eval_checks_are_known_types(suite: TinySuite) -> None:
    for row in suite.eval_prompts:
        check_response(row["check"], "")  # raises on an unknown type or a missing field


def test_pretrain_corpus_states_facts_but_holds_no_instructions(suite: TinySuite) -> None:
    text = corpus_text(suite.pretrain)
    assert len(text.splitlines()) == len(suite.pretrain)
    for country, capital, _ in COUNTRIES:
        assert f"{capital} is the capital of {country}." in text
    assert "7 plus 5 is 12." in text
    assert re.search(r"def add\(a, b\): return a \+ b", text)
    assert "?" not in text and "###" not in text
    assert not any(is_refusal(document) for document in suite.pretrain)
    held_out = [row for name in ("sft_test", "eval_prompts") for row in getattr(suite, name)]
    for row in held_out + suite.prefs_test:
        instruction = row.get("instruction", row.get("prompt")).split("\n\n")[0]
        assert instruction not in text, instruction


def test_too_many_held_out_prompts_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="Category 'safety' has 144 distinct prompts"):
        generate_suite(sizes=SuiteSizes(eval_per_category=140))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"flawed_fraction": 1.5}, "flawed_fraction must be in"),
        ({"flawed_categories": ("poetry",)}, "Unknown flawed categories"),
        ({"sizes": SuiteSizes(sft_train=-1)}, "must not be negative: sft_train"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_suite(**kwargs)


def test_corpus_documents_must_be_one_line() -> None:
    with pytest.raises(ValueError, match="document 2 contains a line break"):
        corpus_text(["fine", "two\nlines"])


def test_cli_writes_every_file_with_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import make_tiny_suite

    out = tmp_path / "tiny"
    make_tiny_suite.main(["--out", str(out), "--sft-train", "12", "--prefs-train", "12", "--pretrain-docs", "5"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8
    assert lines[0].startswith(f"{out / 'sft_train.jsonl'}: 12 rows")
    assert len((out / "pretrain.txt").read_text(encoding="utf-8").splitlines()) == 5
