"""The held-out rows are read at the dataset commit the training export recorded: "Alpaca rows SFT never saw"
holds only for the rows SFT shuffled. The Hub is stood in: ``dataset_info`` answers a fixed commit for the
default branch (the dataset moved on since training), ``load_dataset`` records the revision it is asked for."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import datasets
import pytest
from datasets import Dataset
from huggingface_hub import HfApi

from evaluation import engine
from evaluation.config import EvaluationConfig
from evaluation.scoring import HeldOutData, read_instruction_examples, read_preference_pairs

ALPACA, ULTRAFEEDBACK = "vicgalle/alpaca-gpt4", "HuggingFaceH4/ultrafeedback_binarized"
TRAINED, MAIN_NOW = "a" * 40, "f" * 40  # the commit SFT / DPO read; the default branch's commit today
ROWS = {
    ALPACA: [{"instruction": f"Say {n}.", "input": "", "output": f"{n}"} for n in range(6)],
    ULTRAFEEDBACK: [{"prompt": f"Pick {n}.", "chosen": f"{n}", "rejected": f"not {n}"} for n in range(6)],
}


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    asked = {"dataset_info": [], "load_dataset": []}

    def dataset_info(self, repo_id, revision=None, **kwargs):
        asked["dataset_info"].append((repo_id, revision))
        return SimpleNamespace(sha=revision if revision and len(revision) == 40 else MAIN_NOW)

    def load_dataset(name, split=None, revision=None, **kwargs):
        asked["load_dataset"].append((name, split, revision))
        return Dataset.from_list(ROWS[name])

    monkeypatch.setattr(HfApi, "dataset_info", dataset_info)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return asked


def export_recording(folder, data: list[dict]):
    """An export folder whose export_info.json records ``data`` as the training stage's provenance."""
    folder.mkdir(parents=True, exist_ok=True)
    info = json.loads((folder / "export_info.json").read_text()) if (folder / "export_info.json").is_file() else {}
    info["provenance"] = {"model": {"hub_id": "mistralai/Mistral-7B-v0.1"}, "data": data}
    (folder / "export_info.json").write_text(json.dumps(info))
    return str(folder)


def trained_on(hub_id: str, revision: str = "main", commit: str = TRAINED) -> dict:
    return {"hub_id": hub_id, "revision": revision, "commit": commit}


def test_unpinned_instruction_data_reads_the_commit_sft_recorded(hub, tmp_path, capsys):
    sft = export_recording(tmp_path / "sft", [trained_on(ALPACA)])
    data, record = engine.held_out_at_training_commit(
        HeldOutData(files=ALPACA, split="train", shuffle_seed=42, skip=2, num_examples=3),
        sft, "SFT", "instruction_data",
    )
    rows = read_instruction_examples(data)
    assert hub["load_dataset"] == [(ALPACA, "train", TRAINED)]  # not MAIN_NOW
    assert len(rows) == 3 and "warning" not in capsys.readouterr().out
    assert record["revision"] == TRAINED and record["revision_from"] == f"SFT export {sft}"
    assert record["read"] == [{"hub_id": ALPACA, "revision": TRAINED, "commit": TRAINED}]
    assert (record["split"], record["shuffle_seed"], record["skip"], record["num_examples"]) == ("train", 42, 2, 3)


def test_preference_data_reads_the_commit_dpo_recorded_for_the_same_repository(hub, tmp_path):
    # DPO trained on train_prefs; test_prefs is another split of the same repository, at the same commit.
    dpo = export_recording(tmp_path / "dpo", [trained_on(ULTRAFEEDBACK)])
    data, record = engine.held_out_at_training_commit(
        HeldOutData(files=ULTRAFEEDBACK, split="test_prefs"), dpo, "DPO", "preference_data"
    )
    assert len(read_preference_pairs(data)) == 6
    assert hub["load_dataset"] == [(ULTRAFEEDBACK, "test_prefs", TRAINED)]
    assert record["revision_from"] == f"DPO export {dpo}"


def test_an_explicit_revision_that_differs_is_kept_with_one_warning_line(hub, tmp_path, capsys):
    sft = export_recording(tmp_path / "sft", [trained_on(ALPACA)])
    data, record = engine.held_out_at_training_commit(
        HeldOutData(files=ALPACA, split="train", revision="main"), sft, "SFT", "instruction_data"
    )
    read_instruction_examples(data)
    assert hub["load_dataset"] == [(ALPACA, "train", MAIN_NOW)]
    warnings = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert f"instruction_data.revision 'main' is not the commit {TRAINED} the SFT export {sft}" in warnings[0]
    assert record["revision"] == MAIN_NOW and record["revision_from"] == "config"


def test_an_explicit_revision_equal_to_the_recorded_commit_says_nothing(hub, tmp_path, capsys):
    sft = export_recording(tmp_path / "sft", [trained_on(ALPACA)])
    data, _ = engine.held_out_at_training_commit(
        HeldOutData(files=ALPACA, revision=TRAINED), sft, "SFT", "instruction_data"
    )
    assert data.revision == TRAINED and "warning" not in capsys.readouterr().out


@pytest.mark.parametrize("recorded", [
    [trained_on("someone/other-dataset")],  # another dataset
    [{"path": "data/alpaca.jsonl", "sha256": "0" * 64}],  # local files
    [trained_on(ALPACA, commit="unresolved (offline)")],  # resolved offline at the default branch: no commit
])
def test_without_a_recorded_commit_for_the_id_the_default_branch_is_read_and_recorded(hub, tmp_path, recorded):
    sft = export_recording(tmp_path / "sft", recorded)
    data, record = engine.held_out_at_training_commit(HeldOutData(files=ALPACA), sft, "SFT", "instruction_data")
    read_instruction_examples(data)
    assert hub["load_dataset"] == [(ALPACA, "train", MAIN_NOW)]
    assert record["revision_from"] is None and record["read"][0]["commit"] == MAIN_NOW


def test_offline_a_recorded_tag_is_read_when_no_commit_was_resolved(hub, tmp_path, monkeypatch):
    sft = export_recording(tmp_path / "sft", [trained_on(ALPACA, revision="v2", commit="unresolved (offline)")])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data, record = engine.held_out_at_training_commit(HeldOutData(files=ALPACA), sft, "SFT", "instruction_data")
    read_instruction_examples(data)
    assert hub["dataset_info"] == [] and hub["load_dataset"] == [(ALPACA, "train", "v2")]
    assert record["read"] == [{"hub_id": ALPACA, "revision": "v2", "commit": "unresolved (offline)"}]


def test_the_evaluation_resolves_both_and_records_them_in_the_results_meta(hub, tiny_sft_export, tmp_path):
    sft = tmp_path / "sft"
    shutil.copytree(tiny_sft_export, sft)
    export_recording(sft, [trained_on(ALPACA)])
    dpo = export_recording(tmp_path / "dpo", [trained_on(ULTRAFEEDBACK, commit="b" * 40)])
    config = EvaluationConfig(
        sft_adapter=str(sft), dpo_adapter=dpo, variants=["base", "sft"], device="cpu",
        preference_data=HeldOutData(files=ULTRAFEEDBACK, split="test_prefs"),
        instruction_data=HeldOutData(files=ALPACA, split="train"),
    )
    run = engine.resolve(config)
    assert (run.instruction_data.revision, run.preference_data.revision) == (TRAINED, "b" * 40)
    meta = engine.results_meta(config, run, None, num_prompts=0, num_pairs=0, num_examples=0)
    assert meta["instruction_data"]["read"] == [{"hub_id": ALPACA, "revision": TRAINED, "commit": TRAINED}]
    assert meta["preference_data"]["revision_from"] == f"DPO export {dpo}"
    assert meta["preference_data"]["read"][0]["commit"] == "b" * 40
