"""The memory terms against hand arithmetic, autograd's saved tensors and bitsandbytes' own 4-bit layout."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from common.precision import Hardware
from planner.devices import GB, Device, gpu
from planner.memory import Batch, Dtypes, layer_activation_bytes, nf4_bytes, plan_memory, saved_activation_bytes
from planner.settings import Lora, PlannedRun
from planner.shapes import Architecture

# A small Mistral: h 64, MLP 224, 4 query / 2 key-value heads of 16, vocabulary 128.
SMALL = Architecture(hidden=64, intermediate=224, layers=2, heads=4, kv_heads=2, head_dim=16, vocab=128)
CPU = Device("test CPU", Hardware(device="cpu", cpu_capability="AVX2"), None, 64 * GB, 0, 0.0, None)


def settings(**overrides) -> PlannedRun:
    values = dict(
        config_path=Path("configs/sft.yaml"),
        stage="sft",
        model="small",
        lora=Lora(r=4, alpha=8, dropout=0.0),
        dtype="float32",
        precision="32-true",
        batch_size=2,
        max_length=32,
        pack=True,
    )
    return PlannedRun(**(values | overrides))


def test_parameter_counts_by_hand():
    # per layer: q 64x64, k 64x32, v 64x32, o 64x64, gate/up/down 64x224 -> 4096+2048+2048+4096+3*14336
    assert SMALL.layer_linear_params == 4096 + 2048 + 2048 + 4096 + 3 * 14336 == 55296
    assert SMALL.total_params == 2 * 55296 + 2 * 128 * 64 + 5 * 64  # + embeddings, head, 2x2+1 norms
    # LoRA r=4: q 4(64+64), k 4(64+32), v the same, o 4(64+64), gate/up/down 4(64+224) each
    assert SMALL.lora_params(Lora(r=4)) == 2 * (512 + 384 + 384 + 512 + 3 * 1152)


def test_persistent_terms_by_hand():
    plan = plan_memory(SMALL, settings(), CPU)
    lora = SMALL.lora_params(Lora(r=4))
    assert plan.persistent["base weights"] == 4 * SMALL.total_params  # fp32
    assert plan.persistent["LoRA weights (trained)"] == 4 * lora
    assert plan.persistent["gradients"] == 4 * lora
    assert plan.persistent["AdamW m + v"] == 8 * lora
    assert plan.persistent["reference model"] == 0
    bf16 = plan_memory(SMALL, settings(dtype="auto", precision="bf16-mixed"), gpu("H100"))
    assert bf16.persistent["base weights"] == 2 * SMALL.total_params  # frozen base: the compute dtype
    assert bf16.step["autocast weight copies"] == 2 * lora  # bf16 copies of the fp32 adapters


def test_full_fine_tuning_keeps_fp32_weights_under_mixed_precision():
    plan = plan_memory(SMALL, settings(lora=None, dtype="auto", precision="bf16-mixed"), gpu("H100"))
    n = SMALL.total_params
    assert plan.persistent["base weights"] == 4 * n
    assert plan.persistent["gradients"] == 4 * n and plan.persistent["AdamW m + v"] == 8 * n


def test_separate_reference_is_a_second_copy_and_precomputed_none():
    dpo = dict(stage="dpo", dtype="bfloat16", precision="bf16-mixed", merge_sft_adapter=True)  # unset: stacked
    separate = plan_memory(SMALL, settings(**dpo, reference="separate"), gpu("H100"))
    precomputed = plan_memory(SMALL, settings(**dpo, reference="precomputed"), gpu("H100"))
    assert separate.persistent["reference model"] == separate.persistent["base weights"] == 2 * SMALL.total_params
    assert precomputed.persistent["reference model"] == 0
    assert Batch.of(settings(**dpo)) == Batch(rows=4, tokens=128, response_positions=124)  # 2 pairs, 2 rows each


def test_dpo_keeps_the_sft_adapter_stacked_on_16_bit_weights_as_the_module_does():
    assert settings(stage="dpo", dtype="bfloat16").stacked_sft_adapter
    assert settings(stage="dpo", dtype="auto").stacked_sft_adapter  # bf16 on the GPUs planned for
    assert not settings(stage="dpo").stacked_sft_adapter  # float32: merged
    assert not settings(stage="dpo", dtype="bfloat16", lora=None).stacked_sft_adapter  # full fine-tuning: merged
    assert not settings(stage="dpo", dtype="bfloat16", merge_sft_adapter=True).stacked_sft_adapter


def test_nf4_bytes_match_bitsandbytes():
    import bitsandbytes.functional as bnb

    weight = torch.randn(256, 512)
    for double_quant in (True, False):
        packed, state = bnb.quantize_4bit(weight, blocksize=64, compress_statistics=double_quant, quant_type="nf4")
        tensors = [packed, state.absmax, state.code]
        if double_quant:
            tensors += [state.state2.absmax, state.state2.code, state.offset]
        measured = sum(t.numel() * t.element_size() for t in tensors)
        assert nf4_bytes(weight.numel(), double_quant) == measured
    # by hand, 7B's largest matrix: 4096 x 14336 -> half a byte per weight + 1 byte per 64 + fp32 per 64*256
    n = 4096 * 14336
    assert nf4_bytes(n) == n // 2 + n // 64 + 4 * math.ceil(n / 64 / 256) + 1024 + 4 + 64


def test_four_bit_base_weights():
    plan = plan_memory(SMALL, settings(load_in_4bit=True, dtype="bfloat16", precision="bf16-mixed"), gpu("H100"))
    quantised = 2 * sum(nf4_bytes(i * o) for i, o in SMALL.linear_shapes().values())
    unquantised = 2 * (2 * 128 * 64 + 5 * 64)  # embeddings, head, norms in bf16
    assert plan.persistent["base weights"] == quantised + unquantised


def saved_bytes_by_autograd(lora: Lora, autocast: bool) -> int:
    """Bytes autograd saves in the decoder of a 2-layer SMALL model with ``lora``, over 2 packed rows of 32."""
    from transformers import MistralConfig, MistralForCausalLM

    from lightning_modules.causal_lm import use_packed_sdpa
    from lightning_modules.loading import LoraSettings, add_lora, decoder_and_head

    torch.manual_seed(0)
    config = MistralConfig(
        hidden_size=64,
        intermediate_size=224,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=128,
        attn_implementation="sdpa",
    )
    dtype = torch.bfloat16 if autocast else torch.float32
    model = add_lora(MistralForCausalLM(config).to(dtype), LoraSettings(r=lora.r, alpha=8, dropout=lora.dropout))
    model.train()
    use_packed_sdpa(model)
    decoder, _ = decoder_and_head(model)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    position_ids = torch.cat([torch.arange(32), torch.arange(32)])[None]  # (1, 64): two packed rows
    input_ids = torch.randint(0, 128, (1, 64))
    with (
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast),
        torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
    ):
        decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False)
    return sum(storages.values())


@pytest.mark.parametrize("dropout", [0.0, 0.05])
def test_saved_activations_match_autograd_fp32(dropout):
    lora = Lora(r=4, dropout=dropout)
    run = settings(lora=lora)
    predicted = saved_activation_bytes(SMALL, run, Dtypes.of(run, CPU), CPU, checkpointing=False, tokens=64)
    assert predicted == saved_bytes_by_autograd(lora, autocast=False)


@pytest.mark.parametrize("dropout", [0.0, 0.05])
def test_saved_activations_match_autograd_bf16_autocast(dropout):
    """Under autocast the saved set also holds bf16 copies of the LoRA weights (counted apart, as
    "autocast weight copies"); with them the prediction is within 2 %."""
    lora = Lora(r=4, dropout=dropout)
    run = settings(lora=lora, dtype="bfloat16", precision="bf16-mixed")
    cpu_bf16 = Device("bf16 CPU", Hardware(device="cpu", cpu_amx=True), None, 64 * GB, 0, 0.0, None)
    dtypes = Dtypes.of(run, cpu_bf16)
    predicted = saved_activation_bytes(SMALL, run, dtypes, cpu_bf16, checkpointing=False, tokens=64)
    predicted += 2 * SMALL.lora_params(lora)
    assert predicted == pytest.approx(saved_bytes_by_autograd(lora, autocast=True), rel=0.02)


def test_checkpointing_every_layer_keeps_only_layer_inputs():
    run = settings(gradient_checkpointing=True, checkpoint_last_layer=True)
    dtypes = Dtypes.of(run, CPU)
    per_token = saved_activation_bytes(SMALL, run, dtypes, CPU, checkpointing=True, tokens=1)
    # 2 layer inputs of 64 fp32, RoPE cos + sin (2 x 16 fp32), the final norm's input and rsqrt
    assert per_token == 2 * 64 * 4 + 2 * 16 * 4 + 64 * 4 + 4
    plan = plan_memory(SMALL, run, CPU)
    assert plan.activations_checkpointed == 64 * per_token  # 2 rows x 32 tokens
    assert plan.activations_full > plan.activations_checkpointed


def test_checkpointing_by_default_keeps_the_last_layer_whole():
    """The last layer is not recomputed: it keeps what a plain layer saves, in place of its input; in a layer's
    backward that is the one live layer, not counted twice."""
    every = settings(gradient_checkpointing=True, checkpoint_last_layer=True)
    default = settings(gradient_checkpointing=True)
    dtypes = Dtypes.of(default, CPU)
    whole_layer = layer_activation_bytes(SMALL, default.lora, dtypes, CPU, True, None)
    every_bytes = saved_activation_bytes(SMALL, every, dtypes, CPU, checkpointing=True, tokens=1)
    default_bytes = saved_activation_bytes(SMALL, default, dtypes, CPU, checkpointing=True, tokens=1)
    assert default_bytes == every_bytes - 64 * 4 + whole_layer
    backward = "decoder layer backward"
    every_moment, default_moment = (
        plan_memory(SMALL, every, CPU).moments[backward],
        plan_memory(SMALL, default, CPU).moments[backward],
    )
    # one layer input fewer, over 2 rows x 32 tokens
    assert default_moment["activations (saved)"] == every_moment["activations (saved)"] - 64 * 64 * 4
    assert default_moment["one layer recomputed"] == every_moment["one layer recomputed"] > 0


def test_logits_only_at_response_positions():
    plan = plan_memory(SMALL, settings(), CPU)
    # 2 rows x 32 tokens, 62 response positions, 12 bytes per position per vocabulary entry
    assert plan.moments["end of forward (activations + logits)"]["logits (response positions)"] == 12 * 62 * 128


def test_fits_and_does_not_fit():
    run = settings()
    need = plan_memory(SMALL, run, gpu("H100")).peak_bytes
    assert plan_memory(SMALL, run, gpu("H100", memory_gb=need / GB * 1.01)).fits
    assert not plan_memory(SMALL, run, gpu("H100", memory_gb=need / GB * 0.99)).fits
