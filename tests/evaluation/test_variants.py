"""evaluation/variants.py: the SFT+DPO variant is the trained policy; a DPO export from another SFT is refused."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from torch.testing import assert_close

from common.errors import ConfigError
from evaluation.variants import VariantLoadSettings, build_variant, load_variant, resolve_sources
from lightning_modules.loading import ModelLoadError, load_sft_model

FP32 = VariantLoadSettings(dtype="float32")  # compared with the fp32 training module: exact on any machine


def test_sft_dpo_variant_is_the_trained_policy_merged_or_stacked(tiny_sft_export, tiny_dpo_export):
    export, module = tiny_dpo_export
    sources = resolve_sources(str(tiny_sft_export), str(export))
    input_ids = torch.tensor([[1, 40, 50, 60, 70, 80]])
    module.eval()
    with torch.no_grad():
        expected = module.model(input_ids=input_ids).logits
        merged_load = VariantLoadSettings("float32", merge_adapters=True)
        merged = load_variant("sft_dpo", sources, merged_load)(input_ids=input_ids).logits
        stacked = load_variant("sft_dpo", sources, FP32)(input_ids=input_ids)  # the default: stacked
        sft = load_variant("sft", sources, FP32)(input_ids=input_ids).logits
    assert_close(merged, expected, rtol=1e-4, atol=1e-4)
    assert_close(stacked.logits, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(sft, expected, atol=1e-3)  # the DPO adapter changes something


def test_a_dpo_export_from_another_sft_export_is_refused(tiny_sft_export, tiny_dpo_export, tmp_path):
    export, _ = tiny_dpo_export
    other = tmp_path / "other-sft"
    other.mkdir()
    for item in tiny_sft_export.iterdir():
        (other / item.name).write_bytes(item.read_bytes())
    with pytest.raises(ModelLoadError, match="trained from the SFT export"):
        resolve_sources(str(other), str(export))


# ---- a small DPO update (~1e-5 per weight, a LoRA DPO at lr 5e-7) in bf16 ----------------------------------------

SMALL_UPDATE = 1e-5
BF16 = VariantLoadSettings("bfloat16")  # the default: adapters stacked


@pytest.fixture(scope="module")
def small_dpo_export(tiny_sft_export, tmp_path_factory):
    """A real DPO export (DPOModule, fp32 as in the tests) whose B matrices make every module's update ~1e-5."""
    from common.settings import LoraSettings
    from datamodules.tokenizer import load_tokenizer
    from lightning_modules.dpo import DPOModule

    torch.manual_seed(0)
    module = DPOModule(str(tiny_sft_export), lora=LoraSettings(r=4, alpha=8, dropout=0.0), reference="adapter")
    with torch.no_grad():
        for layer in module.model.modules():
            if hasattr(layer, "lora_B") and "dpo" in layer.lora_B:
                weight = layer.lora_B["dpo"].weight
                weight.normal_()
                weight.mul_(SMALL_UPDATE / layer.get_delta_weight("dpo").std())
    info = {"source_model": str(tiny_sft_export), "template": "alpaca", "sft_adapter": module.sft_adapter}
    out = tmp_path_factory.mktemp("small-dpo") / "export"
    return module.export_pretrained(out, load_tokenizer(str(tiny_sft_export)), info)


def logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids).logits.float()  # (R, T, V)


def dpo_shift(sources, settings: VariantLoadSettings, input_ids: torch.Tensor) -> torch.Tensor:
    """(R, T, V) logits of sft_dpo minus those of sft, both loaded with ``settings``."""
    return logits(load_variant("sft_dpo", sources, settings), input_ids) - logits(
        load_variant("sft", sources, settings), input_ids
    )


def slope(shift: torch.Tensor, exact: torch.Tensor) -> float:
    """Least-squares slope of ``shift`` on ``exact`` through 0: 1 keeps the update on average, 0 erases it."""
    return float((shift * exact).sum() / exact.square().sum())


def test_the_default_bf16_evaluation_keeps_a_small_dpo_update_that_a_merge_would_erase(
    tiny_sft_export, small_dpo_export
):
    sources = resolve_sources(str(tiny_sft_export), str(small_dpo_export))
    input_ids = torch.randint(0, 512, (512, 32), generator=torch.Generator().manual_seed(0))
    exact = dpo_shift(sources, FP32, input_ids)
    # The default (stacked): both adapters' outputs are summed in fp32 and rounded once. Each logit's shift is
    # mostly bf16 rounding noise, but on average it is the fp32 one (slopes 0.93-1.06 over 4 seeds of rows).
    assert 0.8 < slope(dpo_shift(sources, BF16, input_ids), exact) < 1.2
    # What merging both into bf16 gave (the former default, peft's merge_and_unload): most of the update gone.
    sft_merged = load_sft_model(str(tiny_sft_export), merge_adapter=False, dtype="bfloat16").merge_and_unload()
    sft_logits = logits(sft_merged, input_ids)
    dpo_merged = PeftModel.from_pretrained(sft_merged, str(small_dpo_export)).merge_and_unload()
    assert slope(logits(dpo_merged, input_ids) - sft_logits, exact) < 0.5  # seen: 0.17-0.25
    # Asked for, that merge is refused, with the share it keeps and the fix.
    with pytest.raises(ConfigError) as refused:
        load_variant("sft_dpo", sources, VariantLoadSettings("bfloat16", merge_adapters=True))
    refusal = f"Refused: merging the DPO adapter {small_dpo_export} in bfloat16 weights keeps 0."
    assert str(refused.value).startswith(refusal)
    assert str(refused.value).endswith(
        "Set load.merge_adapters: false (the adapters stacked) or load float32 weights (load.dtype: float32)."
    )


def test_each_variant_records_how_it_was_built(tiny_sft_export, small_dpo_export):
    sources = resolve_sources(str(tiny_sft_export), str(small_dpo_export))
    builds = {name: build_variant(name, sources, BF16)[1] for name in ("base", "sft", "sft_dpo")}
    assert (builds["base"].sft, builds["sft"].sft, builds["sft"].dpo) == (None, "stacked", None)
    assert (builds["sft_dpo"].sft, builds["sft_dpo"].dpo) == ("stacked", "stacked")
    # DPO trained on the SFT adapter merged into fp32 (the fixture's module: load null): recorded, not repeated.
    assert builds["sft_dpo"].dpo_trained_on == {"applied": "merged", "dtype": "float32"}
    # The DPO adapter sits on the SFT adapter's every module: none is alone, none measured.
    assert builds["sft_dpo"].retained["dpo"]["modules"] == 0
    assert builds["sft_dpo"].retained["sft"]["retained_median"] > 0.99  # SFT's update is large
    described = sources.weights_lines(builds)
    assert described["base"] == f"{sources.base} (bfloat16 weights)"
    assert described["sft_dpo"] == (
        f"{sources.base} + SFT adapter {tiny_sft_export} + DPO adapter {small_dpo_export} (stacked, both active; "
        "bfloat16 weights)"
    )
    merged_fp32 = VariantLoadSettings("float32", merge_adapters=True)
    build = build_variant("sft_dpo", sources, merged_fp32)[1]
    assert build.retained["dpo"]["retained_median"] == pytest.approx(1.0, abs=1e-3)
    line = sources.weights_lines({"sft_dpo": build})["sft_dpo"]
    assert line.startswith(f"{sources.base} + SFT adapter {tiny_sft_export} (merged into float32 weights, 1.000 of")
    assert line.endswith(
        f"+ DPO adapter {small_dpo_export} (merged into float32 weights, 1.000 of its update kept (median module))"
    )
