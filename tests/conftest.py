"""Shared fixtures: a tiny Mistral built locally (no Hub), offline mode, and the repo root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def cli_batch():
    """:func:`cli_batch.run_batch`: several command-line runs in one process (the imports once)."""
    from cli_batch import run_batch

    return run_batch


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def cpu_trainer():
    """The tests' Lightning Trainer: on the CPU, quiet (no logger, checkpoints, progress bar or model summary).

    A factory: ``cpu_trainer(max_steps=3, callbacks=[...])``; any keyword overrides a default.
    """
    import lightning as L

    def make(**overrides) -> L.Trainer:
        options = {
            "accelerator": "cpu",
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        }
        return L.Trainer(**{**options, **overrides})

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised tiny Mistral + BPE tokenizer trained on the shipped suite, saved with
    ``save_pretrained``: the same loading path as the real model, built in a second."""
    from tiny_world.base import TinyBaseSettings, build

    out = tmp_path_factory.mktemp("tiny") / "base"
    settings = TinyBaseSettings(
        vocab_size=512,
        hidden=64,
        layers=2,
        heads=4,
        kv_heads=2,
        max_positions=1024,
        pretrain_steps=0,
        seq_len=64,
        batch_size=4,
        lr=1e-3,
        seed=0,
    )
    build(out, REPO / "data" / "tiny", settings)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from datamodules.tokenizer import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="session")
def tiny_sft_export(tiny_model_dir, tmp_path_factory, cpu_trainer) -> Path:
    """A LoRA SFT export of the tiny model after a few steps, as the SFT stage writes it."""
    import lightning as L

    from common.settings import LoraSettings, OptimizerSettings
    from datamodules import InstructionDataModule
    from lightning_modules.sft import SFTModule

    L.seed_everything(0, verbose=False)
    module = SFTModule(
        str(tiny_model_dir),
        lora=LoraSettings(r=8, alpha=16, dropout=0.0),
        optimizer=OptimizerSettings(lr=5e-3, warmup_steps=1),
    )
    data = InstructionDataModule(
        str(tiny_model_dir),
        train_files=str(REPO / "data/tiny/sft_train.jsonl"),
        val_files=str(REPO / "data/tiny/sft_val.jsonl"),
        max_length=256,
        batch_size=8,
    )
    cpu_trainer(max_steps=10, limit_val_batches=0).fit(module, datamodule=data)
    return module.export_pretrained(tmp_path_factory.mktemp("sft") / "export", data.tokenizer)
