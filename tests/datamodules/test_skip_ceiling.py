"""The bad-row ceiling: under ``on_bad_row: skip``, a few bad rows are skipped and counted, but more than
``max_skipped_fraction`` of the rows read is one error line (the wrong file, schema or template). The counts
in the expected messages are worked out by hand from the files written here."""

from __future__ import annotations

import json

import pytest

from common.errors import ConfigError, DataError
from datamodules import InstructionDataModule, PreferenceDataModule

GOOD = {"instruction": "Add 2 and 3.", "input": "", "output": "5"}
NO_OUTPUT = {"instruction": "Add 2 and 3.", "input": ""}


def write_rows(path, rows: list[dict | str]):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return str(path)


def instruction_data(model_dir, files, ceiling: float | None) -> InstructionDataModule:
    return InstructionDataModule(
        str(model_dir), train_files=files, val_fraction=0.0, max_length=256, on_bad_row="skip",
        max_skipped_fraction=ceiling,
    )


def test_under_the_ceiling_the_bad_rows_are_skipped_and_counted(tiny_model_dir, tmp_path):
    # 20 rows read, row 7 bad: 1 / 20 = 5 %, at (not above) a 5 % ceiling.
    path = write_rows(tmp_path / "sft.jsonl", [GOOD] * 6 + [NO_OUTPUT] + [GOOD] * 13)
    data = instruction_data(tiny_model_dir, path, 0.05)
    data.setup("fit")
    assert len(data.train_dataset) == 19 and data.report.read == 20
    assert data.report.summary() == f"[instruction data] kept 19 rows, skipped 1 -- missing field: 1 (e.g. {path}:7)"


def test_over_the_ceiling_is_one_error_line_with_the_counts_and_the_files(tiny_model_dir, tmp_path):
    # 10 + 10 rows read; a.jsonl rows 2 and 5 lack output, b.jsonl row 4 is not JSON: 3 / 20 = 15 % > 10 %.
    first = write_rows(tmp_path / "a.jsonl", [GOOD, NO_OUTPUT, GOOD, GOOD, NO_OUTPUT] + [GOOD] * 5)
    second = write_rows(tmp_path / "b.jsonl", [GOOD] * 3 + ["{broken"] + [GOOD] * 6)
    with pytest.raises(DataError) as raised:
        instruction_data(tiny_model_dir, [first, second], 0.1).setup("fit")
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(
        "[instruction data] skipped 3 of the 20 rows read (15.00%), above max_skipped_fraction 0.1 -- "
        f"missing field: 2 (e.g. {first}:2, {first}:5); invalid JSON: 1 (e.g. {second}:4) -- in {first}, {second}."
    )
    assert "wrong file, schema or template" in message


def test_without_a_ceiling_any_share_is_skipped_as_before(tiny_model_dir, tmp_path):
    path = write_rows(tmp_path / "sft.jsonl", [NO_OUTPUT] * 3 + [GOOD])  # 3 / 4 = 75 %
    data = instruction_data(tiny_model_dir, path, None)
    data.setup("fit")
    assert len(data.train_dataset) == 1


@pytest.mark.parametrize("ceiling, fails", [(0.2, True), (0.25, False)])
def test_the_preference_ceiling_counts_identical_pairs(tiny_model_dir, tmp_path, ceiling, fails):
    # 8 pairs read, 2 with chosen identical to rejected (rows 3 and 8): 2 / 8 = 25 %.
    pair = {"prompt": "Add 2 and 3.", "chosen": "5", "rejected": "6"}
    tie = {"prompt": "Add 2 and 3.", "chosen": "5", "rejected": "5"}
    path = write_rows(tmp_path / "prefs.jsonl", [pair, pair, tie, pair, pair, pair, pair, tie])
    data = PreferenceDataModule(
        str(tiny_model_dir), train_files=path, max_length=256, max_prompt_length=128, max_skipped_fraction=ceiling
    )
    if fails:
        with pytest.raises(DataError, match=r"skipped 2 of the 8 rows read \(25\.00%\), above max_skipped_fraction "
                           r"0\.2 -- chosen identical to rejected: 2 \(e\.g\. .*prefs\.jsonl:3, .*prefs\.jsonl:8\)"):
            data.setup("fit")
    else:
        data.setup("fit")
        assert len(data.train_dataset) == 6


@pytest.mark.parametrize("module", [InstructionDataModule, PreferenceDataModule])
@pytest.mark.parametrize("ceiling", [-0.1, 1.0])
def test_a_ceiling_outside_0_1_is_a_config_error(tiny_model_dir, module, ceiling):
    with pytest.raises(ConfigError, match=r"max_skipped_fraction must be in \[0, 1\)"):
        module(str(tiny_model_dir), max_skipped_fraction=ceiling)
