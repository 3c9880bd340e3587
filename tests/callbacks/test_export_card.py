"""callbacks/export_card.py: the card of one export folder, by the Hub's conventions, and the export
callback writing it over peft's empty template."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from huggingface_hub import ModelCard, ModelCardData
from peft import PeftModel

from callbacks import export_card as cards
from callbacks.export import HFExportCallback

MISTRAL = "mistralai/Mistral-7B-v0.1"
TEMPLATE_MARK = "More Information Needed"


def write_export(folder: Path, *, base: str | None, info: dict, config: dict | None = None) -> Path:
    """An export folder's metadata files (weights do not matter to a card)."""
    folder.mkdir(parents=True)
    if base is not None:
        (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": 8}))
    (folder / "export_info.json").write_text(json.dumps(info))
    if config is not None:
        (folder / "training_config.yaml").write_text(yaml.safe_dump(config))
    # What peft's save_pretrained leaves in every adapter folder.
    (folder / "README.md").write_text(f"# Model Card for Model ID\n\n[{TEMPLATE_MARK}]\n")
    return folder


def python_block(text: str) -> str:
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


@pytest.fixture
def dpo_export(tmp_path) -> Path:
    """A DPO adapter on Mistral + a local SFT adapter, with a saved config and provenance."""
    sft = write_export(tmp_path / "sft", base=MISTRAL, info={"kind": "lora_adapter", "stage": "SFTModule"})
    config = {
        "trainer": {"max_epochs": 2, "precision": "auto"},
        "model": {"init_args": {"beta": 0.1, "loss_type": "ipo", "optimizer": {"lr": 5e-6}, "lora": {"r": 8}}},
        "data": {"init_args": {"train_files": ["HuggingFaceH4/ultrafeedback_binarized", "data/extra.jsonl"]}},
    }
    info = {
        "kind": "lora_adapter",
        "stage": "DPOModule",
        "source_model": str(sft),
        "global_step": 40,
        "precision": "bf16-mixed (CPU with native bf16: AVX512_BF16)",
        "provenance": {"base revision": "abc123", "data | split": {"train": 90}},
    }
    return write_export(tmp_path / "dpo", base=MISTRAL, info=info, config=config)


def test_dpo_adapter_card_front_matter_follows_the_hub(dpo_export):
    card = cards.export_card(dpo_export)
    parsed = ModelCard(str(card))  # what the Hub reads back
    assert parsed.data.library_name == "peft"
    assert parsed.data.pipeline_tag == "text-generation"
    assert parsed.data.base_model == MISTRAL
    assert parsed.data.datasets == ["HuggingFaceH4/ultrafeedback_binarized"]  # the local file is no Hub dataset
    assert {"dpo", "lora"} <= set(parsed.data.tags)
    assert parsed.data.license is None  # a Hub base and no api given: unknown, left out rather than guessed
    assert "license" not in parsed.data.to_dict()
    assert TEMPLATE_MARK not in str(card)


def test_dpo_adapter_card_says_what_it_sits_on_and_how_it_was_trained(dpo_export):
    text = str(cards.export_card(dpo_export))
    assert "# DPO LoRA adapter" in text
    code = python_block(text)
    sft = json.dumps(str(dpo_export.parent / "sft"))
    assert f"base = PeftModel.from_pretrained(base, {sft}).merge_and_unload()" in code
    assert f"model = PeftModel.from_pretrained(base, {json.dumps(str(dpo_export))})" in code
    assert "| beta | `0.1` |" in text and "| loss type | `ipo` |" in text
    assert "| learning rate | `5e-06` |" in text and "| epochs | `2` |" in text and "| LoRA r | `8` |" in text
    assert "| optimizer steps | `40` |" in text
    # The resolved precision, not the config's "auto".
    assert "| precision | `bf16-mixed (CPU with native bf16: AVX512_BF16)` |" in text
    assert "`auto`" not in text
    assert "## Provenance" in text
    assert "| base revision | `abc123` |" in text
    assert '| data \\| split | `{"train": 90}` |' in text


def test_sft_adapter_card_on_a_local_base_inherits_its_license(tiny_model_dir, tmp_path):
    export = write_export(
        tmp_path / "sft", base=str(tiny_model_dir), info={"kind": "lora_adapter", "stage": "SFTModule"}
    )
    text = cards.write_export_card(export).read_text()  # replaces the template
    parsed = ModelCard(text)
    assert parsed.data.license == "apache-2.0"  # from the tiny base's README.md (scripts/build_tiny_model.py)
    assert parsed.data.base_model is None  # a local path means nothing on the Hub
    assert "# SFT LoRA adapter" in text and TEMPLATE_MARK not in text
    assert "merge_and_unload" not in text
    assert "(no training_config.yaml was saved with this export)" in text
    assert "## Provenance" not in text


def test_full_model_card_loads_with_transformers(tmp_path):
    export = write_export(
        tmp_path / "full", base=None, info={"kind": "full_model", "stage": "SFTModule", "source_model": MISTRAL}
    )
    card = cards.export_card(export, location=cards.Location("you/study", "sft"))
    assert card.data.library_name == "transformers"
    assert card.data.base_model == MISTRAL
    assert "lora" not in card.data.tags
    assert "# SFT full model" in str(card)
    code = python_block(str(card))
    assert 'AutoModelForCausalLM.from_pretrained("you/study", subfolder="sft")' in code
    assert "PeftModel" not in code


def test_merged_card_points_to_the_adapters_for_settings(tmp_path):
    merged = tmp_path / "merged"
    merged.mkdir()
    card = cards.export_card(merged, stage="merged", base_model=MISTRAL, license="apache-2.0")
    assert card.data.library_name == "transformers" and card.data.license == "apache-2.0"
    assert "merged" in card.data.tags
    assert "See the cards of the SFT and DPO adapters" in str(card)
    with pytest.raises(ValueError, match="stage must be one of"):
        cards.export_card(merged, stage="ppo")


@pytest.mark.parametrize(
    ("name", "expected"),
    [(MISTRAL, True), ("gpt2", True), ("/abs/path/base", False), ("./base", False), ("two words", False), ("", False)],
)
def test_is_hub_model_id(name, expected):
    assert cards.is_hub_model_id(name) is expected


def test_an_existing_local_folder_is_no_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner" / "name").mkdir(parents=True)
    assert cards.is_hub_model_id("owner/name") is False


class StandInHfApi:
    def __init__(self, license: str | None = None, error: Exception | None = None) -> None:
        self.license, self.error, self.asked = license, error, []

    def model_info(self, repo_id):
        self.asked.append(repo_id)
        if self.error is not None:
            raise self.error
        return SimpleNamespace(card_data=ModelCardData(license=self.license))


def test_license_of_reads_the_hub_and_tolerates_failure(tmp_path):
    api = StandInHfApi("apache-2.0")
    assert cards.license_of(MISTRAL, api) == "apache-2.0"
    assert api.asked == [MISTRAL]
    assert cards.license_of(MISTRAL, StandInHfApi(error=ConnectionError("offline"))) is None
    assert cards.license_of(MISTRAL) is None  # no api: nothing is asked
    local = StandInHfApi("mit")
    assert cards.license_of(str(tmp_path), local) is None and local.asked == []  # a local base without README.md


def test_the_export_callback_writes_our_card_over_peft_template(tiny_model_dir, repo, tmp_path, cpu_trainer):
    """A real fit through HFExportCallback: the README.md peft writes is replaced by our card, which
    reads the copied training_config.yaml, inherits the tiny base's license, and its snippet loads."""
    from common.settings import LoraSettings
    from datamodules.instruction import InstructionDataModule
    from lightning_modules.sft import SFTModule

    run = tmp_path / "run"
    run.mkdir()
    saved = {
        "trainer": {"max_epochs": 1, "precision": "32-true"},
        "model": {"init_args": {"model_name_or_path": str(tiny_model_dir), "lora": {"r": 4, "alpha": 8}}},
        "data": {"init_args": {"train_files": "vicgalle/alpaca-gpt4", "batch_size": 4}},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(saved))  # what LightningCLI saves in the log dir
    out = tmp_path / "outputs" / "sft"
    module = SFTModule(str(tiny_model_dir), lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    data = InstructionDataModule(
        str(tiny_model_dir),
        train_files=str(repo / "data" / "tiny" / "sft_train.jsonl"),
        num_examples=8,
        val_fraction=0.0,
        max_length=256,
        batch_size=4,
    )
    trainer = cpu_trainer(max_steps=1, default_root_dir=str(run), callbacks=[HFExportCallback(str(out))])
    trainer.fit(module, datamodule=data)

    text = (out / "README.md").read_text()
    assert TEMPLATE_MARK not in text
    parsed = ModelCard(text)
    assert parsed.data.library_name == "peft" and parsed.data.pipeline_tag == "text-generation"
    assert parsed.data.license == "apache-2.0"
    assert parsed.data.datasets == ["vicgalle/alpaca-gpt4"]  # read from the copied training_config.yaml
    assert "| LoRA r | `4` |" in text and "| optimizer steps | `1` |" in text
    namespace: dict = {}
    exec(python_block(text), namespace)  # the card's own usage snippet
    assert isinstance(namespace["model"], PeftModel)
    assert namespace["tokenizer"].eos_token == "</s>"


def test_a_loss_list_replaces_the_older_loss_type_row():
    config = {
        "model": {
            "init_args": {
                "loss_type": "sigmoid",
                "label_smoothing": 0.0,
                "losses": [{"name": "sigmoid", "weight": 0.8, "gamma": None}, {"name": "sft", "weight": 1.0}],
            }
        }
    }
    rows = dict(cards.settings(config, cards.EXPORT_SETTINGS))
    assert "loss type" not in rows
    assert cards.settings_table([("losses", rows["losses"])]).endswith(
        '| losses | `[{"name": "sigmoid", "weight": 0.8}, {"name": "sft", "weight": 1.0}]` |'
    )
    config["model"]["init_args"]["losses"] = None
    assert dict(cards.settings(config, cards.EXPORT_SETTINGS))["loss type"] == "sigmoid"
