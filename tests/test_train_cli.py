"""The tiny SFT config end to end through ``python train.py fit``: logs, checkpoint and export land
where the config says, relative to the working directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]
STEPS = 5


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """Five steps of configs/tiny/sft.yaml on the tiny base, run in an empty folder."""
    cwd = tmp_path_factory.mktemp("cli")
    data = REPO / "data" / "tiny"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [
            sys.executable, str(REPO / "train.py"), "fit",
            "--config", str(REPO / "configs" / "tiny" / "sft.yaml"),
            "--trainer.max_steps", str(STEPS),
            "--model.init_args.model_name_or_path", str(tiny_model_dir),
            "--data.init_args.train_files", str(data / "sft_train.jsonl"),
            "--data.init_args.val_files", str(data / "sft_val.jsonl"),
        ],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return cwd


def test_tensorboard_events_hold_the_training_loss(run_dir):
    events = list((run_dir / "runs" / "tiny" / "sft" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(events[0]))
    accumulator.Reload()
    assert "train/loss" in accumulator.Tags()["scalars"]
    losses = accumulator.Scalars("train/loss")
    assert losses and all(0 < event.value < 20 for event in losses)
    # The resolved config is saved beside the events, so the run can be repeated.
    assert (run_dir / "runs" / "tiny" / "sft" / "tensorboard" / "config.yaml").is_file()


def test_last_checkpoint_is_written_and_lean(run_dir):
    checkpoint = torch.load(run_dir / "runs" / "tiny" / "sft" / "checkpoints" / "last.ckpt",
                            map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == STEPS
    assert checkpoint["state_dict"] and all("lora_" in key for key in checkpoint["state_dict"])


def test_adapter_is_exported_in_hugging_face_format(run_dir, tiny_model_dir):
    out = run_dir / "outputs" / "tiny" / "sft"
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "export_info.json", "training_config.yaml"):
        assert (out / name).is_file(), name
    info = json.loads((out / "export_info.json").read_text())
    assert info["kind"] == "lora_adapter"
    assert info["source_model"] == str(tiny_model_dir)
    assert info["global_step"] == STEPS
    assert info["template"] == "alpaca"
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_model_dir)
    assert (adapter["r"], adapter["lora_alpha"]) == (16, 32)  # from the config
    # Nothing is left half-written beside the export.
    assert [p.name for p in out.parent.iterdir()] == ["sft"]
