"""InstructionDataModule on the shipped tiny suite and on small files written here.

The labels are checked by decoding: the masked part must read back as exactly the Alpaca prompt of
the file's row, the labelled part as exactly its output followed by EOS.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet
import pytest

from common.constants import IGNORE_INDEX
from datamodules.instruction import InstructionDataModule
from datamodules.sources import DataError
from datamodules.templates import format_prompt

FIELDS = ("instruction", "input", "output")


@pytest.fixture(scope="module")
def train_file(repo) -> Path:
    return repo / "data" / "tiny" / "sft_train.jsonl"


@pytest.fixture(scope="module")
def val_file(repo) -> Path:
    return repo / "data" / "tiny" / "sft_val.jsonl"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def make(tiny_model_dir, train, **kwargs) -> InstructionDataModule:
    kwargs.setdefault("val_fraction", 0.0)
    dm = InstructionDataModule(str(tiny_model_dir), train_files=str(train), **kwargs)
    dm.setup("fit")
    return dm


def by_row(dataset) -> dict[tuple[str, int], dict]:
    return {(ex["source"], ex["row"]): ex for ex in dataset}


@pytest.fixture(scope="module")
def shipped(tiny_model_dir, train_file, val_file) -> InstructionDataModule:
    """The shipped train/val files, long enough a max_length that nothing is cut."""
    return make(tiny_model_dir, train_file, val_files=str(val_file), max_length=1024)


def test_counts_equal_the_files_row_counts(shipped, train_file, val_file):
    assert len(shipped.train_dataset) == len(read_jsonl(train_file))
    assert len(shipped.val_dataset) == len(read_jsonl(val_file))
    n = len(read_jsonl(train_file)) + len(read_jsonl(val_file))
    assert shipped.report.summary() == f"[instruction data] kept {n} rows, skipped 0"


def test_labels_mask_exactly_the_prompt_and_end_with_eos(shipped, train_file, val_file):
    tokenizer = shipped.tokenizer
    raw = {(str(path), number): row for path in (train_file, val_file)
           for number, row in enumerate(read_jsonl(path), start=1)}
    for dataset in (shipped.train_dataset, shipped.val_dataset):
        for ex in dataset:
            row = raw[(ex["source"], ex["row"])]
            ids, labels = ex["input_ids"], ex["labels"]
            n_prompt = labels.count(IGNORE_INDEX)
            assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt  # the mask is one prefix
            assert labels[n_prompt:] == ids[n_prompt:]  # and every later token is its own label
            assert tokenizer.decode(ids[:n_prompt]) == "<s>" + format_prompt(row["instruction"], row["input"])
            assert tokenizer.decode(labels[n_prompt:]) == row["output"] + "</s>"
            assert labels[-1] == tokenizer.eos_token_id
            assert ex["length"] == len(ids) == len(labels)


def test_truncation_keeps_the_prompt_and_cuts_the_response_end(tiny_model_dir, shipped, train_file):
    max_length = 128  # prompts here are 84-159 tokens, full rows 90-184
    cut = make(tiny_model_dir, train_file, max_length=max_length, on_bad_row="skip")
    full = by_row(shipped.train_dataset)
    truncated = 0
    for ex in cut.train_dataset:
        whole = full[(ex["source"], ex["row"])]
        n_prompt = whole["labels"].count(IGNORE_INDEX)
        assert ex["input_ids"] == whole["input_ids"][:max_length]
        assert ex["labels"] == whole["labels"][:max_length]
        assert ex["labels"].count(IGNORE_INDEX) == n_prompt  # the whole prompt is kept
        assert ex["length"] > n_prompt  # at least one response token to learn from
        truncated += whole["length"] > max_length
    assert truncated > 0, "max_length should cut some responses of the shipped data"
    # Rows whose prompt alone reaches max_length are the ones skipped, and the report says so.
    too_long = sum(ex["labels"].count(IGNORE_INDEX) >= max_length for ex in full.values())
    assert too_long > 0
    assert len(cut.train_dataset) == len(full) - too_long
    assert f"prompt longer than max_length: {too_long}" in cut.report.summary()


@pytest.fixture()
def file_with_long_prompt(tmp_path, train_file) -> Path:
    rows = [{k: row[k] for k in FIELDS} for row in read_jsonl(train_file)[:4]]
    rows[2] = {"instruction": "Repeat after me: " + "apple " * 300, "input": "", "output": "apple"}  # row 3
    return write_jsonl(tmp_path / "long.jsonl", rows)


def test_prompt_longer_than_max_length_is_skipped_and_reported(tiny_model_dir, file_with_long_prompt):
    dm = make(tiny_model_dir, file_with_long_prompt, max_length=200, on_bad_row="skip")
    assert len(dm.train_dataset) == 3
    assert 3 not in dm.train_dataset["row"]
    assert dm.report.summary() == (
        "[instruction data] kept 3 rows, skipped 1 -- "
        f"prompt longer than max_length: 1 (e.g. {file_with_long_prompt}:3)"
    )


def test_prompt_longer_than_max_length_is_an_error_naming_file_and_row(tiny_model_dir, file_with_long_prompt):
    with pytest.raises(DataError, match="prompt longer than max_length") as caught:
        make(tiny_model_dir, file_with_long_prompt, max_length=200, on_bad_row="error")
    assert f"{file_with_long_prompt}: row 3" in str(caught.value)
    assert "on_bad_row: skip" in str(caught.value)  # tells the user how to go on


def test_num_examples_and_val_fraction_split(tiny_model_dir, train_file):
    dm = make(tiny_model_dir, train_file, num_examples=200, val_fraction=0.1, max_length=1024)
    assert (len(dm.train_dataset), len(dm.val_dataset)) == (180, 20)
    train_rows, val_rows = set(dm.train_dataset["row"]), set(dm.val_dataset["row"])
    assert not train_rows & val_rows  # held out, not copied
    # A seeded selection: the same seed picks the same rows, another seed others.
    again = make(tiny_model_dir, train_file, num_examples=200, val_fraction=0.1, max_length=1024)
    assert again.val_dataset["row"] == dm.val_dataset["row"]
    other = make(tiny_model_dir, train_file, num_examples=200, val_fraction=0.1, max_length=1024, seed=7)
    assert set(other.val_dataset["row"]) != val_rows


def test_messages_rows_are_read_as_instruction_and_output(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": "What is two plus two?"},
                      {"role": "assistant", "content": "Two plus two is four."}]},
        {"instruction": "Name a fruit.", "input": "", "output": "An apple."},
    ])
    dm = make(tiny_model_dir, path, max_length=512)
    rows = by_row(dm.train_dataset)
    chat = rows[(str(path), 1)]
    n_prompt = chat["labels"].count(IGNORE_INDEX)
    assert dm.tokenizer.decode(chat["input_ids"][:n_prompt]) == "<s>" + format_prompt("What is two plus two?")
    assert dm.tokenizer.decode(chat["labels"][n_prompt:]) == "Two plus two is four.</s>"
    assert (str(path), 2) in rows


def test_json_csv_and_parquet_load_the_same_examples_as_jsonl(tiny_model_dir, tmp_path, train_file):
    shipped = [{k: row[k] for k in FIELDS} for row in read_jsonl(train_file)]
    # Rows with and without an input: an empty CSV cell must still read as "no input".
    rows = [row for row in shipped if row["input"]][:4] + [row for row in shipped if not row["input"]][:4]
    assert len(rows) == 8
    table = pa.Table.from_pylist(rows)
    paths = {
        "jsonl": write_jsonl(tmp_path / "rows.jsonl", rows),
        "json": tmp_path / "rows.json",
        "csv": tmp_path / "rows.csv",
        "parquet": tmp_path / "rows.parquet",
    }
    paths["json"].write_text(json.dumps(rows), encoding="utf-8")
    pyarrow.csv.write_csv(table, paths["csv"])
    pyarrow.parquet.write_table(table, paths["parquet"])
    loaded = {kind: make(tiny_model_dir, path, max_length=1024).train_dataset for kind, path in paths.items()}
    reference = loaded.pop("jsonl")
    assert len(reference) == len(rows)
    for kind, dataset in loaded.items():
        assert dataset["row"] == reference["row"], kind
        assert dataset["input_ids"] == reference["input_ids"], kind
        assert dataset["labels"] == reference["labels"], kind


def test_csv_cells_are_text_so_number_answers_train(tiny_model_dir, tmp_path):
    """A CSV has no types: ``4`` in the output column is the answer "4", not an int to refuse."""
    path = tmp_path / "sums.csv"
    path.write_text('instruction,input,output\nWhat is 2+2?,,4\nAdd the numbers.,"1, 2",3\nWrite 0.50 as text.,,0.50\n')
    dm = make(tiny_model_dir, path, max_length=256)
    rows = by_row(dm.train_dataset)
    for number, answer in ((1, "4"), (2, "3"), (3, "0.50")):  # "0.50" stays "0.50": never parsed as a float
        labels = [t for t in rows[(str(path), number)]["labels"] if t != IGNORE_INDEX]
        assert dm.tokenizer.decode(labels) == f"{answer}</s>"
    prompt = rows[(str(path), 2)]["input_ids"][: rows[(str(path), 2)]["labels"].count(IGNORE_INDEX)]
    assert "### Input:\n1, 2\n\n" in dm.tokenizer.decode(prompt)


def test_parquet_keeps_its_types_so_a_number_answer_is_still_an_error(tiny_model_dir, tmp_path):
    path = tmp_path / "sums.parquet"
    pyarrow.parquet.write_table(pa.Table.from_pylist([{"instruction": "What is 2+2?", "input": "", "output": 4}]), path)
    with pytest.raises(DataError, match=r"row 1: field 'output': wrong type \(int where a string is expected\)"):
        make(tiny_model_dir, path, max_length=256)


def test_tokenised_data_is_cached_and_reused(tiny_model_dir, tmp_path, train_file, val_file):
    cache = tmp_path / "cache"
    kwargs = {"val_files": str(val_file), "max_length": 1024, "cache_dir": str(cache)}
    first = make(tiny_model_dir, train_file, **kwargs)
    files = sorted(cache.glob("tokenized-*.arrow"))
    assert len(files) == 2  # one for train, one for val
    stamps = {f: f.stat().st_mtime_ns for f in files}
    assert first.train_dataset.cache_files[0]["filename"] in map(str, files)

    second = make(tiny_model_dir, train_file, **kwargs)
    assert sorted(cache.glob("tokenized-*.arrow")) == files  # no new file
    assert {f: f.stat().st_mtime_ns for f in files} == stamps  # nor rewritten
    assert second.train_dataset.cache_files == first.train_dataset.cache_files
    assert second.train_dataset["input_ids"] == first.train_dataset["input_ids"]
    # Another max_length is another tokenisation, hence another cache file.
    make(tiny_model_dir, train_file, **{**kwargs, "max_length": 512})
    assert len(list(cache.glob("tokenized-*.arrow"))) == 4
