"""Pinned revisions: a config's ``revision`` is resolved once to a commit (the Hub call stood in), that commit is
what ``from_pretrained`` and ``load_dataset`` load, and it lands in ``export_info.json``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import datasets
import pytest
from datasets import Dataset
from huggingface_hub import HfApi
from huggingface_hub.errors import RevisionNotFoundError

from callbacks.export import HFExportCallback
from common.provenance import RevisionError, files_sha256, resolve_revision
from common.settings import LoraSettings
from datamodules import InstructionDataModule
from datamodules import tokenizer as tokenizers
from lightning_modules import loading
from lightning_modules.sft import SFTModule
from lightning_modules.trainer import StudyTrainer

MODEL_ID, DATA_ID = "someone/tiny-mistral", "someone/alpaca-mini"
MODEL_COMMIT, DATA_COMMIT = "a" * 40, "b" * 40


@pytest.fixture
def hub(monkeypatch, tiny_model_dir, repo):
    """The Hub stood in: revisions resolve to fixed commits; the model, tokenizer and dataset load from disk,
    recording the revision each ``from_pretrained`` / ``load_dataset`` call asked for."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    asked = {"model_info": [], "dataset_info": [], "model": [], "tokenizer": [], "dataset": []}

    def model_info(self, repo_id, revision=None, **kwargs):
        asked["model_info"].append((repo_id, revision))
        if revision == "no-such-tag":
            error = RevisionNotFoundError.__new__(RevisionNotFoundError)  # as the Hub's 404 would raise it
            Exception.__init__(error, f"{repo_id}: no revision {revision}")
            raise error
        return SimpleNamespace(sha=MODEL_COMMIT)

    def dataset_info(self, repo_id, revision=None, **kwargs):
        asked["dataset_info"].append((repo_id, revision))
        return SimpleNamespace(sha=DATA_COMMIT)

    def stand_in(kind, real):
        def load(name, *args, revision=None, **kwargs):
            asked[kind].append((name, revision))
            return real(str(tiny_model_dir), *args, **kwargs)

        return load

    shipped = [json.loads(line) for line in (repo / "data/tiny/sft_train.jsonl").read_text().splitlines()[:24]]
    rows = [{key: row[key] for key in ("instruction", "input", "output")} for row in shipped]

    def load_dataset(name, split=None, revision=None, **kwargs):
        asked["dataset"].append((name, split, revision))
        return Dataset.from_list(rows)

    monkeypatch.setattr(HfApi, "model_info", model_info)
    monkeypatch.setattr(HfApi, "dataset_info", dataset_info)
    monkeypatch.setattr(loading.AutoModelForCausalLM, "from_pretrained",
                        stand_in("model", loading.AutoModelForCausalLM.from_pretrained))
    monkeypatch.setattr(tokenizers.AutoTokenizer, "from_pretrained",
                        stand_in("tokenizer", tokenizers.AutoTokenizer.from_pretrained))
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return asked


def test_a_pinned_revision_is_loaded_as_its_commit_and_recorded_in_the_export(hub, tmp_path):
    module = SFTModule(MODEL_ID, lora=LoraSettings(r=4, alpha=8, dropout=0.0), revision="v1.0")
    data = InstructionDataModule(MODEL_ID, train_files=DATA_ID, revision="v2", tokenizer_revision="v1.0",
                                 val_fraction=0.25, max_length=512, batch_size=4)
    trainer = StudyTrainer(accelerator="cpu", precision="32-true", max_steps=2, logger=False,
                           enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                           callbacks=[HFExportCallback(str(tmp_path / "export"))])
    trainer.fit(module, datamodule=data)
    assert hub["model_info"] == [(MODEL_ID, "v1.0")]  # resolved once
    assert hub["model"] == [(MODEL_ID, MODEL_COMMIT)]  # and the commit is what was loaded
    assert hub["tokenizer"] == [(MODEL_ID, "v1.0")]
    assert hub["dataset_info"] == [(DATA_ID, "v2")]
    assert hub["dataset"] == [(DATA_ID, "train", DATA_COMMIT)]
    provenance = json.loads((tmp_path / "export" / "export_info.json").read_text())["provenance"]
    assert provenance["model"] == {"hub_id": MODEL_ID, "revision": "v1.0", "commit": MODEL_COMMIT}
    assert provenance["data"] == [{"hub_id": DATA_ID, "revision": "v2", "commit": DATA_COMMIT}]
    assert set(provenance["data_fingerprint"]) == {"train", "val"} and provenance["data_fingerprint"]["train"]


def test_an_unknown_revision_is_a_clear_error(hub):
    with pytest.raises(RevisionError, match=r"someone/tiny-mistral: model revision 'no-such-tag' not found"):
        resolve_revision(MODEL_ID, "no-such-tag", "model")


def test_offline_the_requested_revision_is_kept_and_local_paths_record_their_files(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_revision(MODEL_ID, "v1.0", "model") == "v1.0"  # no Hub call: the cache decides
    assert resolve_revision(str(tmp_path), "v1.0", "model") is None
    (tmp_path / "a.jsonl").write_text("one\n")
    first = files_sha256(tmp_path)
    (tmp_path / "a.jsonl").write_text("two\n")
    assert files_sha256(tmp_path) != first  # a changed data file changes the record
