"""evaluation/prompts.py: prompt rows are checked like training rows; a bad row names its file, row and field."""

from __future__ import annotations

import json

import pytest

from datamodules.sources import DataError
from evaluation.prompts import read_prompts


def write(path, rows: list) -> str:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return str(path)


def test_both_row_kinds_are_read_in_order(tmp_path):
    refusal = {"category": "safety", "prompt": "Refuse this.", "check": {"type": "refusal"}}
    first = write(tmp_path / "a.jsonl", [refusal])
    second = write(tmp_path / "b.jsonl", [{"category": "reasoning", "instruction": "Add.", "input": "2 and 3",
                                           "output": "5"}])
    assert read_prompts([first, second]) == [
        {"category": "safety", "prompt": "Refuse this.", "input": "", "check": {"type": "refusal"}},
        {"category": "reasoning", "prompt": "Add.", "input": "2 and 3", "check": None},
    ]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"category": "x", "prompt": 5}, "row 2: field 'prompt': wrong type (int where a string is expected)"),
        ({"category": "x"}, "row 2: field 'prompt': missing field (a prompt row needs 'prompt' or 'instruction')"),
        ({"prompt": "Hi."}, "row 2: field 'category': missing field"),
        ({"category": "x", "prompt": "Hi.", "input": ["a"]}, "row 2: field 'input': wrong type"),
        ({"category": "x", "prompt": "Hi.", "check": "refusal"}, "row 2: field 'check': wrong type"),
        ({"category": "x", "prompt": "Hi.", "check": {"type": "rhyme"}}, "row 2: field 'check': invalid check"),
        ("{not json", "row 2: invalid JSON"),
    ],
)
def test_a_bad_row_is_the_same_data_error_as_in_training(tmp_path, row, message):
    path = write(tmp_path / "prompts.jsonl", [{"category": "x", "prompt": "Fine."}, row])
    with pytest.raises(DataError) as caught:
        read_prompts(path)
    assert str(caught.value).startswith(f"{path}: {message}")
    assert "on_bad_row: skip" in str(caught.value)


def test_skip_leaves_bad_rows_out_and_counts_them(tmp_path):
    path = write(tmp_path / "prompts.jsonl", [{"category": "x", "prompt": "Fine."}, {"category": "x", "prompt": ""}])
    assert read_prompts(path, on_bad_row="skip") == [{"category": "x", "prompt": "Fine.", "input": "", "check": None}]


def test_a_missing_or_empty_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="prompt file not found"):
        read_prompts(str(tmp_path / "missing.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty.jsonl is empty"):
        read_prompts(str(tmp_path / "empty.jsonl"))
