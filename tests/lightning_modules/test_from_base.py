"""``from_base``: a preference method trained from the base model itself, no SFT stage (ORPO's own setting), through
training, export, its card and the evaluation's ``base_<method>`` variant."""

import json
import math

import pytest
import torch
from peft import PeftModel
from preference_helpers import LORA, Recorder, first_batch, preference_data
from torch.testing import assert_close

from callbacks.export import HFExportCallback
from common.errors import ConfigError
from common.settings import LossTerm, OptimizerSettings
from evaluation.variants import VariantLoadSettings, build_variant, label, method_variant, resolve_sources
from lightning_modules.dpo import DPOModule
from lightning_modules.loading import ModelLoadError, load_causal_lm

FP32 = VariantLoadSettings(dtype="float32")


@pytest.fixture(scope="module")
def base_orpo(tiny_model_dir, repo, tmp_path_factory, cpu_trainer):
    """ORPO from the tiny base, 20 steps, exported as the export callback writes it."""
    import lightning as L

    L.seed_everything(0, verbose=False)
    tmp_path = tmp_path_factory.mktemp("base_orpo")
    data = preference_data(tiny_model_dir, repo, tmp_path, num_examples=32)
    module = DPOModule(
        str(tiny_model_dir),
        from_base=True,
        lora=LORA,
        losses=[LossTerm("orpo")],
        optimizer=OptimizerSettings(lr=1e-2, warmup_steps=2),
    )
    out = tmp_path / "outputs" / "base_orpo"
    recorder = Recorder()
    trainer = cpu_trainer(max_steps=20, limit_val_batches=0, callbacks=[recorder, HFExportCallback(str(out))])
    trainer.fit(module, datamodule=data)
    return module, out, recorder.rows


def test_orpo_from_the_base_learns_with_no_reference_and_records_its_start(base_orpo, tiny_model_dir):
    module, out, rows = base_orpo
    assert module.reference_strategy is None and module.sft_adapter is None
    mean = lambda part: sum(r["train/loss"] for r in part) / len(part)  # noqa: E731
    assert mean(rows[-4:]) < mean(rows[:4])
    info = json.loads((out / "export_info.json").read_text())
    assert info["start"] == "base" and info["source_model"] == str(tiny_model_dir)
    assert info["sft_adapter"] is None and info["provenance"]["model"]["path"] == str(tiny_model_dir)
    card = (out / "README.md").read_text()
    assert f"the base model `{tiny_model_dir}` itself (no SFT stage)" in card
    assert "Apply it to that model" not in card


def test_the_evaluation_builds_it_as_the_base_with_its_adapter(base_orpo, tiny_model_dir, tiny_sft_export):
    module, out, _ = base_orpo
    variant = method_variant("base_orpo", out)
    assert (variant, label(variant)) == ("base_orpo", "base+ORPO")
    assert method_variant("orpo", out) == "base_orpo"  # the export says where it started, whatever the name
    sources = resolve_sources(str(tiny_sft_export), None, methods={variant: str(out)})
    model, build = build_variant(variant, sources, FP32)
    assert (build.sft, build.dpo) == (None, "stacked")
    assert sources.weights_lines({variant: build})[variant].startswith(f"{tiny_model_dir} + ORPO adapter {out}")
    input_ids = torch.tensor([[1, 40, 50, 60, 70, 80]])
    module.eval()
    with torch.no_grad():
        expected = module.model(input_ids=input_ids).logits
        assert_close(model(input_ids=input_ids).logits, expected, rtol=1e-4, atol=1e-4)
        base = load_causal_lm(str(tiny_model_dir), dtype="float32").eval()(input_ids=input_ids).logits
    assert not torch.allclose(base, expected, atol=1e-3)  # the adapter changes something
    assert isinstance(model, PeftModel)


def test_a_base_method_trained_on_another_base_is_refused(base_orpo, tiny_sft_export, tmp_path):
    _, out, _ = base_orpo
    with pytest.raises(ModelLoadError, match="trained from the base model .* but the study's base is"):
        other = str(tmp_path / "another-base")
        resolve_sources(str(tiny_sft_export), None, base=other, methods={"base_orpo": str(out)})


def test_dpo_from_the_base_has_the_base_as_its_reference(tiny_model_dir, repo, tmp_path):
    """At step 0 the policy is the base and so is the reference: DPO's loss is ln 2."""
    data = preference_data(tiny_model_dir, repo, tmp_path, pack=False)
    module = DPOModule(str(tiny_model_dir), from_base=True, lora=LORA, reference="separate").eval()
    module.log = lambda *args, **kwargs: None
    with torch.no_grad():
        assert_close(module._shared_step(first_batch(data), "val"), torch.tensor(math.log(2)), atol=1e-5, rtol=0)


def test_a_revision_without_from_base_is_refused(tiny_sft_export):
    with pytest.raises(ConfigError, match="model.revision pins the base model of from_base: true"):
        DPOModule(str(tiny_sft_export), lora=LORA, revision="main")
