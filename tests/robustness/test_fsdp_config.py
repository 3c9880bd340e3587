"""configs/sft_fsdp.yaml, the multi-GPU example: it builds the project's FSDP2 strategy (the one tested with two
processes in test_fsdp.py), clips, loads the frozen base in the compute dtype, and keeps the study's batch. (Running
it needs four GPUs; tests/test_configs.py parses it through the CLI like every config.)"""

from __future__ import annotations

import yaml
from fault_injection import REPO
from jsonargparse import ArgumentParser
from lightning.pytorch.strategies import Strategy

from common.precision import Hardware
from lightning_modules.sharding import FSDP2Strategy, check_strategy


def test_fsdp_example_shards_with_fsdp2_and_keeps_the_study_batch():
    config = yaml.safe_load((REPO / "configs" / "sft_fsdp.yaml").read_text())
    parser = ArgumentParser()
    parser.add_argument("--strategy", type=Strategy)
    strategy = parser.instantiate(parser.parse_object({"strategy": config["trainer"]["strategy"]})).strategy
    assert isinstance(strategy, FSDP2Strategy) and strategy._save_distributed_checkpoint
    check_strategy(strategy, Hardware(device="cuda", cuda_bf16=True, cuda_capability=(9, 0)))  # not refused
    trainer, data, model = config["trainer"], config["data"]["init_args"], config["model"]["init_args"]
    assert trainer["use_distributed_sampler"] is False and trainer["gradient_clip_val"] == 1.0
    assert model["load"]["dtype"] == "auto"  # no fp32 copy of the frozen base: FSDP2 keeps each weight's dtype
    study = yaml.safe_load((REPO / "configs" / "sft.yaml").read_text())
    global_batch = trainer["devices"] * data["batch_size"] * trainer.get("accumulate_grad_batches", 1)
    study_batch = study["data"]["init_args"]["batch_size"] * study["trainer"]["accumulate_grad_batches"]
    assert global_batch == study_batch == 16
    assert model["lora"] == study["model"]["init_args"]["lora"]
