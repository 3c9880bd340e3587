"""KTO's unpaired data: both schemas, the mismatched completion of each row, labels, bad rows by file and row."""

import json

import pytest

from common.errors import DataError
from datamodules import UnpairedDataModule
from datamodules.sources import BadRow
from datamodules.unpaired import parse_unpaired_row

LENGTHS = {"max_length": 64, "max_prompt_length": 32}


def write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


UNPAIRED = [
    {"prompt": "Name a colour.", "completion": "Blue.", "label": True},
    {"prompt": "Name a fruit.", "completion": "A chair.", "label": "undesirable"},
    {"prompt": "Name a planet.", "completion": "Mars.", "label": "desirable"},
]


def test_an_unpaired_row_and_a_pair_read_as_labelled_completions():
    assert parse_unpaired_row(UNPAIRED[1])["completions"] == [("A chair.", False)]
    assert parse_unpaired_row({**UNPAIRED[0], "label": "Desirable "})["completions"] == [("Blue.", True)]
    pair = parse_unpaired_row({"prompt": "2 + 2?", "chosen": "4", "rejected": "5"})
    assert pair["prompt"] == "2 + 2?" and pair["completions"] == [("4", True), ("5", False)]


@pytest.mark.parametrize(
    "record, field, reason",
    [
        ({"prompt": "Hi", "completion": "Hello"}, "label", "missing field"),
        ({"prompt": "Hi", "completion": "Hello", "label": 1}, "label", "not a label"),
        ({"prompt": "Hi", "completion": "Hello", "label": "good"}, "label", "not a label"),
        ({"prompt": "Hi", "label": True}, "completion", "missing field"),
        ({"prompt": "Hi", "completion": " ", "label": True}, "completion", "empty string"),
        ({"prompt": "Hi", "chosen": "Same", "rejected": "Same"}, "rejected", "chosen identical to rejected"),
    ],
)
def test_bad_rows_name_their_field(record, field, reason):
    with pytest.raises(BadRow) as raised:
        parse_unpaired_row(record)
    assert (raised.value.field, raised.value.reason) == (field, reason)


def test_each_row_gets_the_next_rows_completion_as_its_mismatched_one(tiny_model_dir, tmp_path):
    path = write(tmp_path / "kto.jsonl", UNPAIRED)
    data = UnpairedDataModule(
        str(tiny_model_dir), train_files=path, val_files=path, max_length=64, max_prompt_length=32
    )
    data.setup("fit")
    tokenizer = data.tokenizer
    val = data.val_dataset  # in file order: no shuffle, no selection
    own = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in val["chosen_ids"]]
    mismatched = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in val["rejected_ids"]]
    assert own == ["Blue.", "A chair.", "Mars."]
    assert mismatched == ["A chair.", "Mars.", "Blue."]  # the next row's, the last takes the first's
    assert val["desirable"] == [True, False, True]
    batch = next(iter(data.val_dataloader()))
    assert batch["desirable"].tolist() == [True, False, True]
    assert batch["row_lengths"].shape == (6,)  # the 3 rows' own completions, then the 3 mismatched


def test_a_pair_file_gives_two_rows_per_pair(tiny_model_dir, repo, tmp_path):
    prefs = repo / "data/tiny/prefs_val.jsonl"
    pairs = len(prefs.read_text().splitlines())
    data = UnpairedDataModule(
        str(tiny_model_dir), train_files=str(prefs), val_files=str(prefs), max_length=128, max_prompt_length=64
    )
    data.setup("fit")
    assert len(data.train_dataset) == 2 * pairs
    assert sum(data.train_dataset["desirable"]) == pairs
    assert data.report.summary() == f"[unpaired data] kept {4 * pairs} rows, skipped 0"


def test_bad_rows_are_skipped_and_counted_or_stop_the_run_naming_file_row_and_field(tiny_model_dir, tmp_path):
    rows = [*UNPAIRED, {"prompt": "Name a tree.", "completion": "Oak."}]
    path = write(tmp_path / "kto.jsonl", rows)
    options = dict(train_files=path, val_files=path, max_length=64, max_prompt_length=32)
    skipping = UnpairedDataModule(str(tiny_model_dir), on_bad_row="skip", **options)
    skipping.setup("fit")
    assert len(skipping.train_dataset) == 3
    assert skipping.report.examples["missing field"] == [f"{path}:4", f"{path}:4"]  # train and val read the file
    strict = UnpairedDataModule(str(tiny_model_dir), on_bad_row="error", **options)
    with pytest.raises(DataError, match=rf"{path}: row 4: field 'label': missing field"):
        strict.setup("fit")


def test_a_split_of_one_row_has_no_mismatched_completion(tiny_model_dir, tmp_path):
    path = write(tmp_path / "one.jsonl", UNPAIRED[:1])
    data = UnpairedDataModule(
        str(tiny_model_dir), train_files=path, val_files=path, max_length=64, max_prompt_length=32
    )
    with pytest.raises(DataError, match="a split needs at least 2 rows"):
        data.setup("fit")
