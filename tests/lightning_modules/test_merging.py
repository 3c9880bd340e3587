"""lightning_modules/merging.py: what merging a LoRA into bf16 / fp32 weights keeps of a small update, by hand."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from common.errors import ConfigError
from lightning_modules.loading import load_causal_lm
from lightning_modules.merging import MergeRetention, check_retention, merge_lora, merge_retention

UPDATE = 1e-5  # the std of each module's dW: a LoRA DPO at lr 5e-7; the tiny base's weights are ~N(0, 0.02)
MODULE = "model.layers.0.self_attn.q_proj"


@pytest.fixture(scope="module")
def small_update_adapter(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter on the tiny base whose B matrices make every module's update ~1e-5, saved as peft saves it."""
    torch.manual_seed(0)
    model = get_peft_model(
        load_causal_lm(str(tiny_model_dir), dtype="float32"),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"]),
    )
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "lora_B") and "default" in module.lora_B:
                weight = module.lora_B["default"].weight
                weight.normal_()
                weight.mul_(UPDATE / module.get_delta_weight("default").std())
    out = tmp_path_factory.mktemp("small-update") / "adapter"
    model.save_pretrained(out)
    return out


def on_base(tiny_model_dir, adapter, dtype: str) -> PeftModel:
    return PeftModel.from_pretrained(load_causal_lm(str(tiny_model_dir), dtype=dtype), str(adapter))


def test_a_small_update_merged_into_bf16_is_measured_as_lost_and_into_fp32_as_kept(
    tiny_model_dir, small_update_adapter
):
    model = on_base(tiny_model_dir, small_update_adapter, "bfloat16")
    retention = merge_retention(model, "default")
    # By hand for one module: W in bf16, dW = scaling * B @ A in fp32, the merge rounds W + dW to bf16 once.
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    weight = layer.base_layer.weight.float()
    delta = layer.scaling["default"] * layer.lora_B["default"].weight.float() @ layer.lora_A["default"].weight.float()
    change = (weight + delta).to(torch.bfloat16).float() - weight
    assert retention.norm_ratio[MODULE] == pytest.approx(float(change.norm() / delta.norm()), rel=1e-5)
    assert retention.retained[MODULE] == pytest.approx(float((change * delta).sum() / delta.square().sum()), rel=1e-5)
    assert retention.dtype == "bfloat16" and len(retention.retained) == 2 * 3  # 2 layers x 3 targets
    assert retention.median < 0.5  # most of a 1e-5 update is below half a bf16 ulp at 0.02 (6e-5)
    assert retention.summary()["below_threshold"] == list(retention.retained)
    # What peft's merge writes is exactly the rounding measured.
    merged = model.merge_and_unload().model.layers[0].self_attn.q_proj.weight
    assert torch.equal(merged.float(), (weight + delta).to(torch.bfloat16).float())

    exact = merge_retention(on_base(tiny_model_dir, small_update_adapter, "float32"), "default")
    assert exact.dtype == "float32"
    for name in retention.retained:
        assert exact.retained[name] == pytest.approx(1.0, abs=1e-3)
        assert exact.norm_ratio[name] == pytest.approx(1.0, abs=1e-3)


def test_merging_a_lost_update_is_refused_and_an_exact_one_is_made(tiny_model_dir, small_update_adapter):
    fix = "Set load.dtype: float32."
    with pytest.raises(ConfigError, match=r"Refused: merging the DPO adapter x in bfloat16 weights keeps 0\.\d+ of"):
        merge_lora(on_base(tiny_model_dir, small_update_adapter, "bfloat16"), "default", "the DPO adapter x", fix)
    merged, retention = merge_lora(on_base(tiny_model_dir, small_update_adapter, "float32"), "default", "x", fix)
    assert not hasattr(merged, "peft_config") and retention.median == pytest.approx(1.0, abs=1e-3)


def test_the_thresholds_refuse_below_090_warn_below_099_and_pass_the_rest(recwarn):
    def measured(*shares: float) -> MergeRetention:
        names = [f"layer{i}" for i in range(len(shares))]
        return MergeRetention("dpo", "bfloat16", dict(zip(names, shares, strict=True)), dict.fromkeys(names, 1.0))

    with pytest.raises(ConfigError, match=r"keeps 0\.850 of its update \(median over 3 LoRA modules, min 0\.800\)"):
        check_retention(measured(0.8, 0.85, 1.0), "merging it", "Fix.")
    with pytest.warns(UserWarning, match=r"^Merging it in bfloat16 weights keeps 0\.950 .*; 2 modules keep less"):
        check_retention(measured(0.93, 0.95, 1.0), "merging it", "Fix.")
    check_retention(measured(0.995, 1.0), "merging it", "Fix.")
    check_retention(measured(), "merging it", "Fix.")  # an untrained adapter: nothing to lose
    assert not recwarn.list


def test_an_adapter_already_stacked_is_warned_about_not_refused():
    lost = MergeRetention("sft", "bfloat16", {"layer0": 0.3, "layer1": 0.4}, {"layer0": 1.0, "layer1": 1.0})
    with pytest.warns(UserWarning, match=r"^Stacking it in bfloat16 weights keeps 0\.350 .* Load float32 weights\.$"):
        check_retention(lost, "stacking it", "Load float32 weights.", refuse=False)
