"""configs/fsdp/sft.yaml, the multi-GPU overlay, on configs/sft.yaml: it builds the project's FSDP2 strategy (the one
tested with two processes in test_fsdp.py), clips, loads the frozen base in the compute dtype, and keeps the study's
batch. (Running it needs four GPUs; tests/test_configs.py parses it through the CLI on top of configs/sft.yaml.)"""

from __future__ import annotations

import yaml
from fault_injection import REPO
from jsonargparse import ArgumentParser
from lightning.pytorch.strategies import Strategy

from common.precision import Hardware
from lightning_modules.sharding import FSDP2Strategy, check_strategy
from planner.settings import read_yaml


def test_fsdp_example_shards_with_fsdp2_and_keeps_the_study_batch():
    study = yaml.safe_load((REPO / "configs" / "sft.yaml").read_text())
    overlay = yaml.safe_load((REPO / "configs" / "fsdp" / "sft.yaml").read_text())
    assert set(overlay) == {"run", "trainer", "model"} and "data" not in overlay  # only what sharding changes
    config = read_yaml(f"{REPO / 'configs/sft.yaml'}+{REPO / 'configs/fsdp/sft.yaml'}")  # as LightningCLI merges
    parser = ArgumentParser()
    parser.add_argument("--strategy", type=Strategy)
    strategy = parser.instantiate(parser.parse_object({"strategy": config["trainer"]["strategy"]})).strategy
    assert isinstance(strategy, FSDP2Strategy) and strategy._save_distributed_checkpoint
    check_strategy(strategy, Hardware(device="cuda", cuda_bf16=True, cuda_capability=(9, 0)))  # not refused
    trainer, data, model = config["trainer"], config["data"]["init_args"], config["model"]["init_args"]
    assert trainer["use_distributed_sampler"] is False and trainer["gradient_clip_val"] == 1.0
    assert model["load"]["dtype"] == "auto"  # no fp32 copy of the frozen base: FSDP2 keeps each weight's dtype
    global_batch = trainer["devices"] * data["batch_size"] * trainer.get("accumulate_grad_batches", 1)
    study_batch = study["data"]["init_args"]["batch_size"] * study["trainer"]["accumulate_grad_batches"]
    assert global_batch == study_batch == 16
    assert model["lora"] == study["model"]["init_args"]["lora"]
