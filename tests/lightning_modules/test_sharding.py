"""lightning_modules/sharding.py: which strategies are refused, which layers become FSDP2 units, and that a
sharded model computes what the unsharded one does (one process, gloo; the two-process runs are in
tests/robustness/test_fsdp.py)."""

from __future__ import annotations

import json
import socket

import pytest
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from transformers import AutoConfig, AutoModelForCausalLM, MistralConfig, MistralForCausalLM
from transformers.models.mistral.modeling_mistral import MistralDecoderLayer

from common.precision import Hardware
from lightning_modules.causal_lm import CausalLMModule
from lightning_modules.loading import LoraSettings, add_lora
from lightning_modules.sharding import (
    FSDP2Strategy,
    ShardingError,
    check_strategy,
    decoder_layer_classes,
    gather_full_state,
    shard_causal_lm,
)

CPU, GPU = Hardware(device="cpu"), Hardware(device="cuda", cuda_bf16=True, cuda_capability=(9, 0))


@pytest.mark.parametrize("hardware", [CPU, GPU], ids=["cpu", "cuda"])
@pytest.mark.parametrize("strategy", ["fsdp", "fsdp_cpu_offload", FSDPStrategy(), FSDPStrategy])
def test_fsdp1_is_refused_on_every_device_with_what_runs_instead(strategy, hardware):
    with pytest.raises(ShardingError) as error:
        check_strategy(strategy, hardware)
    message = str(error.value)
    assert "FSDPStrategy (FSDP1), which is not supported here" in message
    assert f"computes on the {hardware.device}" in message and "cannot clip gradients by norm" in message
    assert "strategy: {class_path: lightning_modules.sharding.FSDP2Strategy}" in message
    assert "strategy: ddp" in message


def test_fsdp1_subclass_is_refused_too():
    # Lightning's own check is `type(strategy) is FSDPStrategy`: a subclass passes it and fails in torch.
    class Subclass(FSDPStrategy):
        pass

    with pytest.raises(ShardingError, match="Subclass is Lightning's FSDPStrategy"):
        check_strategy(Subclass(), GPU)


def test_plain_model_parallel_strategy_is_refused_but_fsdp2_and_ddp_pass():
    with pytest.raises(ShardingError, match="ModelParallelStrategy is not implemented here"):
        check_strategy(ModelParallelStrategy(), CPU)
    for strategy in (FSDP2Strategy(), FSDP2Strategy, "ddp", DDPStrategy(), "auto"):
        check_strategy(strategy, CPU)


def test_wrap_policy_finds_the_decoder_layer_of_the_7b_shaped_model(repo):
    """Mistral-7B-v0.1's exact architecture with one layer, built on the meta device (no weights, no memory)."""
    config = AutoConfig.from_pretrained(repo / "configs" / "models" / "mistral-7b-v0.1.json")
    assert json.loads((repo / "configs/models/mistral-7b-v0.1.json").read_text())["num_hidden_layers"] == 32
    config.num_hidden_layers = 1
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert decoder_layer_classes(model) == {MistralDecoderLayer}
    with torch.device("meta"):
        wrapped = add_lora(model, LoraSettings())
    assert decoder_layer_classes(wrapped) == {MistralDecoderLayer}  # through the PEFT wrapper
    layer = model.model.layers[0]
    assert layer.self_attn.q_proj.weight.shape == (4096, 4096)
    assert layer.self_attn.k_proj.weight.shape == (1024, 4096)  # 8 key/value heads of 128
    assert layer.mlp.up_proj.weight.shape == (14336, 4096)


def test_a_model_without_a_decoder_layer_class_is_refused():
    model = MistralForCausalLM(
        MistralConfig(
            vocab_size=32,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    model._no_split_modules = ["NoSuchLayer"]
    with pytest.raises(ShardingError, match=r"names no decoder-layer class in _no_split_modules \(\['NoSuchLayer'\]\)"):
        decoder_layer_classes(model)


@pytest.fixture
def one_process_group():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=1, rank=0)
    yield init_device_mesh("cpu", (1, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
    dist.destroy_process_group()


def test_sharded_model_has_one_unit_per_layer_and_computes_the_same_logits(one_process_group, tiny_model_dir):
    torch.manual_seed(0)
    model = add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraSettings(r=4, alpha=8, dropout=0.0))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # nonzero, so the adapter takes part in the comparison
            torch.nn.init.normal_(param, std=0.1)
    batch = {
        "input_ids": torch.tensor([[1, 5, 9, 42, 7, 300, 2]]),
        "labels": torch.tensor([[-100, -100, -100, 42, 7, 300, 2]]),
    }
    module = CausalLMModule()
    before = module.response_forward(model, batch).logits.detach()
    expected_state = {name: value.clone() for name, value in model.state_dict().items()}

    shard_causal_lm(model, one_process_group["data_parallel"])
    shard_causal_lm(model, one_process_group["data_parallel"])  # Lightning may call configure_model again
    base = model.get_base_model()
    assert all(isinstance(layer, FSDPModule) for layer in base.model.layers)
    assert isinstance(base.model, FSDPModule) and isinstance(base.lm_head, FSDPModule)
    assert all(isinstance(param, DTensor) for param in model.parameters())
    after = module.response_forward(model, batch).logits.detach()
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)
    gathered = gather_full_state(model)  # what the export writes from
    assert gathered.keys() == expected_state.keys()
    for name, value in expected_state.items():
        torch.testing.assert_close(gathered[name], value, rtol=0, atol=0)


def test_tied_embeddings_are_refused(one_process_group):
    config = MistralConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    model = MistralForCausalLM(config)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with pytest.raises(ShardingError, match="ties its LM head to its input embeddings"):
        shard_causal_lm(model, one_process_group["data_parallel"])
