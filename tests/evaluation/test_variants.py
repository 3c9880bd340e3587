"""evaluation/variants.py: the SFT+DPO variant is the trained policy; a DPO export from another SFT is refused."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from evaluation.variants import VariantLoadSettings, load_variant, resolve_sources
from lightning_modules.loading import ModelLoadError

FP32 = VariantLoadSettings(dtype="float32")  # compared with the fp32 training module: exact on any machine


def test_sft_dpo_variant_is_the_trained_policy_merged_or_stacked(tiny_sft_export, tiny_dpo_export):
    export, module = tiny_dpo_export
    sources = resolve_sources(str(tiny_sft_export), str(export))
    input_ids = torch.tensor([[1, 40, 50, 60, 70, 80]])
    module.eval()
    with torch.no_grad():
        expected = module.model(input_ids=input_ids).logits
        merged = load_variant("sft_dpo", sources, FP32)(input_ids=input_ids).logits
        stacked_load = VariantLoadSettings("float32", merge_adapters=False)
        stacked = load_variant("sft_dpo", sources, stacked_load)(input_ids=input_ids)
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
