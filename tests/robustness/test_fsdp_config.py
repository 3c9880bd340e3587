"""configs/sft_fsdp.yaml, the multi-GPU example: its FSDP strategy builds as intended. (Running it needs
four GPUs; tests/test_configs.py parses it through the CLI like every config.)"""

from __future__ import annotations

import yaml
from fault_injection import REPO
from jsonargparse import ArgumentParser
from lightning.pytorch.strategies import FSDPStrategy, Strategy
from torch.distributed.fsdp.wrap import ModuleWrapPolicy
from transformers.models.mistral.modeling_mistral import MistralDecoderLayer


def test_fsdp_example_wraps_each_mistral_layer_and_keeps_the_study_batch():
    config = yaml.safe_load((REPO / "configs" / "sft_fsdp.yaml").read_text())
    parser = ArgumentParser()
    parser.add_argument("--strategy", type=Strategy)
    strategy = parser.instantiate(parser.parse_object({"strategy": config["trainer"]["strategy"]})).strategy
    assert isinstance(strategy, FSDPStrategy)
    policy = strategy.kwargs["auto_wrap_policy"]
    assert isinstance(policy, ModuleWrapPolicy) and policy._module_classes == {MistralDecoderLayer}
    assert strategy.kwargs["use_orig_params"]  # frozen base and LoRA weights in one wrapped layer
    assert strategy._state_dict_type == "full"
    trainer, data = config["trainer"], config["data"]["init_args"]
    assert trainer["use_distributed_sampler"] is False
    study = yaml.safe_load((REPO / "configs" / "sft.yaml").read_text())
    global_batch = trainer["devices"] * data["batch_size"] * trainer.get("accumulate_grad_batches", 1)
    study_batch = study["data"]["init_args"]["batch_size"] * study["trainer"]["accumulate_grad_batches"]
    assert global_batch == study_batch == 16
    assert config["model"]["init_args"]["lora"] == study["model"]["init_args"]["lora"]
