"""scripts/upload_results.py and reporting/publish.py: the dry-run folder, the Hub calls (through a stand-in
HfApi), the token."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import upload_results
import yaml
from huggingface_hub import ModelCard, ModelCardData

from reporting import publish

TOKEN = "hf_sentinel_token_that_must_never_appear"
MISTRAL = "mistralai/Mistral-7B-v0.1"
SFT_DATA, DPO_DATA = "vicgalle/alpaca-gpt4", "HuggingFaceH4/ultrafeedback_binarized"
CARDS = ("README.md", "sft/README.md", "dpo/README.md")
TEMPLATE_MARK = "More Information Needed"  # peft's empty card template says it everywhere


@pytest.fixture
def exports(tiny_sft_export, tmp_path) -> dict[str, Path]:
    """An SFT export, a DPO export beside it (its weights do not matter here) and a results folder."""
    sft = tmp_path / "outputs" / "sft"
    shutil.copytree(tiny_sft_export, sft)
    config = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 3, "precision": "bf16-mixed"},
        "model": {"init_args": {"model_name_or_path": "artifacts/tiny-base", "lora": {"r": 16, "alpha": 32}}},
        "data": {"init_args": {"train_files": "data/tiny/sft_train.jsonl", "batch_size": 16}},
    }
    (sft / "training_config.yaml").write_text(yaml.safe_dump(config))
    dpo = tmp_path / "outputs" / "dpo"
    shutil.copytree(tiny_sft_export, dpo)
    dpo_config = {"model": {"init_args": {"model_name_or_path": str(sft), "beta": 0.25, "loss_type": "sigmoid"}}}
    (dpo / "training_config.yaml").write_text(yaml.safe_dump(dpo_config))
    (dpo / "export_info.json").write_text(json.dumps({"kind": "lora_adapter", "source_model": str(sft)}))
    (dpo / ".export-staging-leftover").write_text("not uploaded")
    results = tmp_path / "results"
    (results / "plots").mkdir(parents=True)
    (results / "plots" / "per_category_scores.png").write_bytes(b"\x89PNG")
    (results / "report.md").write_text("# report")
    (results / "side_by_side_comparison.txt").write_text("side by side")
    (results / "evaluation_results.json").write_text(json.dumps(sample_results()))
    return {"sft": sft, "dpo": dpo, "results": results}


@pytest.fixture
def hub_exports(exports) -> dict[str, Path]:
    """The same exports as if trained from Mistral-7B on Hub datasets (plus one local file), with a checked score."""
    for stage in ("sft", "dpo"):
        adapter = exports[stage] / "adapter_config.json"
        adapter.write_text(json.dumps({**json.loads(adapter.read_text()), "base_model_name_or_path": MISTRAL}))
    config = yaml.safe_load((exports["sft"] / "training_config.yaml").read_text())
    config["model"]["init_args"]["model_name_or_path"] = MISTRAL
    config["data"]["init_args"]["train_files"] = SFT_DATA
    (exports["sft"] / "training_config.yaml").write_text(yaml.safe_dump(config))
    config = yaml.safe_load((exports["dpo"] / "training_config.yaml").read_text())
    config["data"] = {"init_args": {"train_files": [DPO_DATA, "data/tiny/dpo_extra.jsonl"]}}
    (exports["dpo"] / "training_config.yaml").write_text(yaml.safe_dump(config))
    results = sample_results()
    results["metrics"]["sft_dpo"]["checked_score"] = {"overall": 0.75, "n": 4, "per_category": {}}
    (exports["results"] / "evaluation_results.json").write_text(json.dumps(results))
    return exports


def sample_results() -> dict:
    variants = ["base", "sft", "sft_dpo"]
    return {
        "meta": {
            "created": "2026-01-01T00:00:00+00:00",
            "variants": variants,
            "labels": {"base": "base", "sft": "SFT", "sft_dpo": "SFT+DPO"},
            "num_prompts": 60,
            "num_preference_pairs": 120,
            "num_instruction_examples": 100,
            "template": "alpaca",
        },
        "metrics": {
            name: {"preference": {"accuracy": accuracy, "mean_margin": 0.5}, "perplexity": {"value": 3.0}}
            for name, accuracy in zip(variants, (0.5, 0.6, 0.9), strict=True)
        },
    }


def arguments(exports: dict[str, Path], *extra: str) -> list[str]:
    paths = ["--sft", str(exports["sft"]), "--dpo", str(exports["dpo"]), "--results", str(exports["results"])]
    return [*paths, *extra]


class StandInHfApi:
    """Records the calls the script makes, and what the uploaded folder held at the time."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.uploaded: list[str] = []
        self.cards: dict[str, str] = {}
        self.asked: list[str] = []

    def model_info(self, repo_id):
        """The Hub's answer about the base model: only its card data's license is read."""
        self.asked.append(repo_id)
        return SimpleNamespace(card_data=ModelCardData(license="apache-2.0"))

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        folder = Path(kwargs["folder_path"])
        self.uploaded = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        self.cards = {name: (folder / name).read_text() for name in self.uploaded if name.endswith("README.md")}


def test_dry_run_writes_and_lists_the_exact_folder(exports, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    out = tmp_path / "preview"
    code = upload_results.main(arguments(exports, "--repo-id", "someone/tiny-sft-dpo", "--dry-run", "--out", str(out)))
    assert code == 0
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert {
        "README.md",
        "sft/adapter_config.json",
        "sft/adapter_model.safetensors",
        "sft/training_config.yaml",
        "dpo/adapter_model.safetensors",
        "dpo/export_info.json",
        "results/evaluation_results.json",
        "results/report.md",
        "results/side_by_side_comparison.txt",
        "results/plots/per_category_scores.png",
    } <= set(files)
    assert not any(name.startswith("dpo/.") for name in files)
    printed = capsys.readouterr().out
    for name in files:
        assert name in printed
    assert "private" in printed


def test_model_card_has_base_data_hyperparameters_and_the_metric_table(exports, tmp_path):
    out = tmp_path / "preview"
    assert upload_results.main(arguments(exports, "--repo-id", "someone/x", "--dry-run", "--out", str(out))) == 0
    card = (out / "README.md").read_text()
    base = json.loads((exports["sft"] / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base in card
    assert "data/tiny/sft_train.jsonl" in card
    assert "| LoRA r | `16` |" in card and "| epochs | `3` |" in card
    assert "| beta | `0.25` |" in card
    assert "| Held-out preference accuracy (log p chosen > rejected) | 50.0% | 60.0% | 90.0% | higher |" in card
    assert 'snapshot_download("someone/x")' in card


def test_uploaded_cards_follow_the_hub_conventions(hub_exports):
    # The exports still hold the template peft wrote: the upload must replace it.
    assert TEMPLATE_MARK in (hub_exports["sft"] / "README.md").read_text()
    api = StandInHfApi()
    assert upload_results.main(arguments(hub_exports, "--repo-id", "someone/study"), api=api) == 0
    assert api.asked == [MISTRAL]  # the license comes from the base model's Hub card data
    assert set(CARDS) <= set(api.cards)
    for name in CARDS:
        assert TEMPLATE_MARK not in api.cards[name], name
        data = ModelCard(api.cards[name]).data
        assert data.base_model == MISTRAL, name
        assert data.license == "apache-2.0", name
        assert data.library_name == "peft", name
        assert data.pipeline_tag == "text-generation", name
        assert {"sft", "lora", "lightning"} <= set(data.tags), name
    top, sft, dpo = (ModelCard(api.cards[name]) for name in CARDS)
    assert top.data.datasets == [SFT_DATA, DPO_DATA]
    assert "`data/tiny/dpo_extra.jsonl`" in top.text  # a local file is named in the text, not the metadata
    assert sft.data.datasets == [SFT_DATA] and dpo.data.datasets == [DPO_DATA]
    assert top.data.model_name == "study"
    assert {result.metric_name: result.metric_value for result in top.data.eval_results} == {
        "Preference accuracy, log p chosen > rejected (base)": 0.5,
        "Preference accuracy, log p chosen > rejected (SFT)": 0.6,
        "Preference accuracy, log p chosen > rejected (SFT+DPO)": 0.9,
        "Perplexity of reference responses (base)": 3.0,
        "Perplexity of reference responses (SFT)": 3.0,
        "Perplexity of reference responses (SFT+DPO)": 3.0,
        "Checked-prompt pass rate (SFT+DPO)": 0.75,  # the only variant with a checked score
    }
    assert 'model = PeftModel.from_pretrained(base, "someone/study", subfolder="sft")' in sft.text
    assert 'base = PeftModel.from_pretrained(base, "someone/study", subfolder="sft").merge_and_unload()' in dpo.text
    assert 'model = PeftModel.from_pretrained(base, "someone/study", subfolder="dpo")' in dpo.text
    assert "| beta | `0.25` |" in dpo.text


def test_dry_run_cards_inherit_a_local_base_license(exports, tmp_path):
    out = tmp_path / "preview"
    assert upload_results.main(arguments(exports, "--repo-id", "someone/x", "--dry-run", "--out", str(out))) == 0
    for name in CARDS:
        text = (out / name).read_text()
        assert TEMPLATE_MARK not in text, name
        data = ModelCard(text).data
        assert data.license == "apache-2.0", name  # the tiny base's README.md
        assert data.base_model is None, name  # a local base is no Hub id
        assert data.datasets is None, name  # local training files only
    top = ModelCard((out / "README.md").read_text())
    assert "Local training data (not on the Hub): `data/tiny/sft_train.jsonl`." in top.text
    assert len(top.data.eval_results) == 6  # preference accuracy and perplexity of three variants


def test_dry_run_asks_the_hub_nothing(hub_exports, tmp_path, monkeypatch):
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise AssertionError("--dry-run contacted the Hub")

    monkeypatch.setattr(huggingface_hub, "HfApi", no_hub)
    out = tmp_path / "preview"
    assert upload_results.main(arguments(hub_exports, "--repo-id", "someone/x", "--dry-run", "--out", str(out))) == 0
    data = ModelCard((out / "README.md").read_text()).data
    assert data.base_model == MISTRAL and data.license is None  # unknown offline: left out, not guessed


def test_upload_creates_a_private_repo_and_uploads_the_folder(exports, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    api = StandInHfApi()
    assert upload_results.main(arguments(exports, "--repo-id", "someone/study"), api=api) == 0
    (create, create_args), (upload, upload_args) = api.calls
    assert create == "create_repo" and upload == "upload_folder"
    assert create_args == {"repo_id": "someone/study", "repo_type": "model", "private": True, "exist_ok": True}
    assert upload_args["repo_id"] == "someone/study" and upload_args["repo_type"] == "model"
    assert {"README.md", "sft/adapter_model.safetensors", "dpo/adapter_model.safetensors"} <= set(api.uploaded)
    assert not Path(upload_args["folder_path"]).exists()  # the staging folder is cleaned up
    assert "https://huggingface.co/someone/study" in capsys.readouterr().out


def test_public_is_an_explicit_choice(exports):
    api = StandInHfApi()
    assert upload_results.main(arguments(exports, "--repo-id", "someone/study", "--public"), api=api) == 0
    assert api.calls[0][1]["private"] is False


def test_the_token_is_never_printed_or_written(exports, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    out = tmp_path / "preview"
    upload_results.main(arguments(exports, "--repo-id", "someone/x", "--dry-run", "--out", str(out)))
    upload_results.main(arguments(exports, "--repo-id", "someone/x"), api=StandInHfApi())
    captured = capfd.readouterr()
    assert TOKEN not in captured.out + captured.err
    for path in out.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_no_repo_id_is_a_clear_error_not_a_guess(exports, capsys):
    api = StandInHfApi()
    assert upload_results.main(arguments(exports), api=api) == 2
    assert "No --repo-id given" in capsys.readouterr().err
    assert api.calls == []
    assert upload_results.main(arguments(exports, "--repo-id", "no-owner"), api=api) == 2
    assert "owner/name" in capsys.readouterr().err


def test_no_token_is_a_clear_error(exports, capsys, monkeypatch):
    monkeypatch.setattr(publish, "has_token", lambda: False)
    assert upload_results.main(arguments(exports, "--repo-id", "someone/x")) == 2
    assert "HF_TOKEN" in capsys.readouterr().err


def test_a_missing_export_is_a_clear_error(exports, tmp_path, capsys):
    shutil.rmtree(exports["dpo"])
    out = tmp_path / "preview"
    assert upload_results.main(arguments(exports, "--repo-id", "someone/x", "--dry-run", "--out", str(out))) == 2
    assert "no complete dpo export" in capsys.readouterr().err


def test_merged_weights_are_optional_and_load_as_a_plain_model(exports, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "preview"
    args = arguments(exports, "--repo-id", "someone/x", "--dry-run", "--out", str(out), "--merged")
    assert upload_results.main(args) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (out / "merged").iterdir()}
    AutoModelForCausalLM.from_pretrained(out / "merged")
    assert "`merged/`" in (out / "README.md").read_text()
    card = ModelCard((out / "merged" / "README.md").read_text())
    assert card.data.library_name == "transformers" and card.data.license == "apache-2.0"
    assert 'AutoModelForCausalLM.from_pretrained("someone/x", subfolder="merged")' in card.text
    assert TEMPLATE_MARK not in card.text
