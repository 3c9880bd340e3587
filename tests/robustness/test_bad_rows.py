"""The bad-input corpus in tests/data/bad/: one file per kind of bad input, each checked under both
``on_bad_row`` policies.

``error`` must stop with a DataError naming the file, the row and the field; ``skip`` must keep the
good rows, drop the bad one and print one summary (count per reason, the row numbers). A file with
no usable row, a missing file and an unknown extension are errors under both policies.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from datamodules.instruction import InstructionDataModule
from datamodules.preference import PreferenceDataModule
from datamodules.sources import DataError

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
GOOD_ROWS = 3  # every one-bad-row file holds three good rows around the bad one

# file, row, field ("" for the row as a whole), reason
SFT_CASES = [
    ("sft_invalid_json.jsonl", 3, "", "invalid JSON"),
    ("sft_missing_output.jsonl", 2, "output", "missing field"),
    ("sft_output_number.jsonl", 2, "output", "wrong type"),
    ("sft_output_null.jsonl", 4, "output", "wrong type"),
    ("sft_output_list.jsonl", 1, "output", "wrong type"),
    ("sft_input_number.jsonl", 2, "input", "wrong type"),
    ("sft_empty_instruction.jsonl", 2, "instruction", "empty string"),
    ("sft_empty_output.jsonl", 3, "output", "empty string"),
    ("sft_row_not_object.jsonl", 2, "<row>", "wrong type"),
    ("sft_messages_no_assistant.jsonl", 2, "messages", "no assistant turn"),
    ("sft_messages_out_of_order.jsonl", 3, "messages", "roles out of order"),
    ("sft_messages_not_objects.jsonl", 2, "messages[0]", "wrong type"),
    ("sft_messages_content_number.jsonl", 2, "messages[1].content", "wrong type"),
    ("sft_prompt_too_long.jsonl", 2, "instruction", "prompt longer than max_length"),
    ("sft_not_utf8.jsonl", 2, "", "bytes that are not UTF-8"),
]
PREFERENCE_CASES = [
    ("prefs_missing_chosen.jsonl", 2, "chosen", "missing field"),
    ("prefs_missing_rejected.jsonl", 3, "rejected", "missing field"),
    ("prefs_chosen_number.jsonl", 2, "chosen", "wrong type"),
    ("prefs_rejected_null.jsonl", 2, "rejected", "wrong type"),
    ("prefs_prompt_list.jsonl", 1, "prompt", "wrong type"),
    ("prefs_empty_chosen.jsonl", 2, "chosen", "empty string"),
    ("prefs_identical.jsonl", 3, "rejected", "chosen identical to rejected"),
    ("prefs_no_assistant.jsonl", 2, "chosen", "no assistant turn"),
    ("prefs_roles_out_of_order.jsonl", 2, "rejected", "roles out of order"),
    ("prefs_content_null.jsonl", 3, "chosen[1].content", "wrong type"),
    ("prefs_nan_score.jsonl", 2, "score_chosen", "score is not finite"),
    ("prefs_string_score.jsonl", 4, "score_rejected", "wrong type"),
    ("prefs_invalid_json.jsonl", 2, "", "invalid JSON"),
    ("prefs_not_utf8.jsonl", 3, "", "bytes that are not UTF-8"),
]
# Errors under both policies: file, message fragments.
FILE_ERRORS = [
    ("sft", "missing.jsonl", ["missing.jsonl", "file not found"]),
    ("sft", "sft_unknown_extension.txt", ["sft_unknown_extension.txt", "unknown extension '.txt'"]),
    ("sft", "sft_not_a_list.json", ["sft_not_a_list.json", "must hold a list of rows"]),
    ("sft", "sft_empty.jsonl", ["sft_empty.jsonl", "is empty"]),
    ("preference", "prefs_empty.jsonl", ["prefs_empty.jsonl", "is empty"]),
]
ALL_BAD = [("sft", "sft_all_bad.jsonl", 4), ("preference", "prefs_all_bad.jsonl", 3)]


def data_module(kind: str, tokenizer_dir: Path, file: str, policy: str):
    if kind == "sft":
        return InstructionDataModule(
            str(tokenizer_dir), train_files=str(BAD / file), val_fraction=0.0, max_length=256, on_bad_row=policy
        )
    return PreferenceDataModule(
        str(tokenizer_dir), train_files=str(BAD / file), max_length=256, max_prompt_length=128, on_bad_row=policy
    )


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture()
def printed():
    """The lines the DataModules print through Lightning's rank-zero logger."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


CASES = [("sft", *case) for case in SFT_CASES] + [("preference", *case) for case in PREFERENCE_CASES]
IDS = [case[1].split(".")[0] for case in CASES]


@pytest.mark.parametrize(("kind", "file", "row", "field", "reason"), CASES, ids=IDS)
def test_error_policy_names_file_row_and_field(tiny_model_dir, kind, file, row, field, reason):
    dm = data_module(kind, tiny_model_dir, file, "error")
    with pytest.raises(DataError) as caught:
        dm.setup("fit")
    message = str(caught.value)
    assert message.startswith(f"{BAD / file}: row {row}")
    if field:
        assert f"field '{field}'" in message
    assert reason in message
    assert "on_bad_row: skip" in message  # how to go on


@pytest.mark.parametrize(("kind", "file", "row", "field", "reason"), CASES, ids=IDS)
def test_skip_policy_drops_the_row_and_prints_one_summary(tiny_model_dir, printed, kind, file, row, field, reason):
    dm = data_module(kind, tiny_model_dir, file, "skip")
    dm.setup("fit")
    assert sorted(dm.train_dataset["row"]) == [n for n in range(1, GOOD_ROWS + 2) if n != row]
    assert dict(dm.report.skipped) == {reason: 1}
    name = "instruction data" if kind == "sft" else "preference data"
    expected = f"[{name}] kept {GOOD_ROWS} rows, skipped 1 -- {reason}: 1 (e.g. {BAD / file}:{row})"
    assert dm.report.summary() == expected
    summaries = [line for line in printed if line.startswith(f"[{name}]")]
    assert summaries == [expected]


@pytest.mark.parametrize(("kind", "file", "fragments"), FILE_ERRORS, ids=[c[1] for c in FILE_ERRORS])
@pytest.mark.parametrize("policy", ["error", "skip"])
def test_unreadable_or_empty_file_is_an_error_under_both_policies(tiny_model_dir, kind, file, fragments, policy):
    dm = data_module(kind, tiny_model_dir, file, policy)
    with pytest.raises(DataError) as caught:
        dm.setup("fit")
    for fragment in fragments:
        assert fragment in str(caught.value)


@pytest.mark.parametrize(("kind", "file", "rows"), ALL_BAD, ids=[c[1] for c in ALL_BAD])
def test_file_with_only_bad_rows_is_an_error_under_both_policies(tiny_model_dir, kind, file, rows):
    with pytest.raises(DataError, match=r"row 1: field"):
        data_module(kind, tiny_model_dir, file, "error").setup("fit")
    with pytest.raises(DataError) as caught:
        data_module(kind, tiny_model_dir, file, "skip").setup("fit")
    message = str(caught.value)
    assert f"{BAD / file} has no usable rows ({rows} rows, all bad)" in message
    assert f"skipped {rows}" in message  # the summary says why


def test_skip_summary_counts_each_reason_with_row_numbers(tiny_model_dir, tmp_path):
    """Two files in one run: one summary, reasons counted together, row numbers per file."""
    rows = (BAD / "sft_missing_output.jsonl").read_text().splitlines()
    second = tmp_path / "more.jsonl"
    second.write_text("\n".join([rows[0], rows[1], rows[1], "{broken", rows[2]]) + "\n")
    dm = InstructionDataModule(
        str(tiny_model_dir),
        train_files=[str(BAD / "sft_missing_output.jsonl"), str(second)],
        val_fraction=0.0,
        on_bad_row="skip",
    )
    dm.setup("fit")
    assert dm.report.summary() == (
        f"[instruction data] kept 5 rows, skipped 4 -- missing field: 3 "
        f"(e.g. {BAD / 'sft_missing_output.jsonl'}:2, {second}:2, {second}:3); invalid JSON: 1 (e.g. {second}:4)"
    )


def test_long_preference_prompt_is_kept_with_its_end(tiny_model_dir):
    """Not a bad row: DPO keeps the end of a long prompt (where the question is) within max_prompt_length."""
    dm = data_module("preference", tiny_model_dir, "prefs_long_prompt.jsonl", "error")
    dm.setup("fit")
    long_row = next(ex for ex in dm.train_dataset if ex["row"] == 2)
    assert len(long_row["prompt_ids"]) == 128
    assert dm.tokenizer.decode(long_row["prompt_ids"]).rstrip().endswith("### Response:")
    assert "What is 9 plus 9?" in dm.tokenizer.decode(long_row["prompt_ids"])


def test_no_train_files_is_a_clear_error(tiny_model_dir):
    dm = InstructionDataModule(str(tiny_model_dir), train_files=[], val_fraction=0.0)
    with pytest.raises(DataError, match="no data source given: set train_files"):
        dm.setup("fit")
