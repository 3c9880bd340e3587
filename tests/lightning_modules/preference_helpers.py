"""The tiny preference data of the DPO and reward-model tests (imported by them, as robustness/ imports
fault_injection)."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from common.settings import LoraSettings
from datamodules import PreferenceDataModule

LORA = LoraSettings(r=8, alpha=16, dropout=0.0)
"""The DPO and KTO tests' adapter."""


class Recorder(L.Callback):
    """The ``train/*`` metrics after every training batch, in ``rows``."""

    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append({k: v.item() for k, v in trainer.callback_metrics.items() if k.startswith("train/")})


def preference_data(
    model_dir: Path | str, repo: Path, tmp_path: Path, data_class: type = PreferenceDataModule, **kwargs
) -> PreferenceDataModule:
    """The shipped tiny pairs, short rows, batch 8, set up for fit; ``kwargs`` override any option. ``data_class``
    ``UnpairedDataModule`` splits each pair into a desirable and an undesirable row (KTO)."""
    options = dict(
        train_files=str(repo / "data/tiny/prefs_train.jsonl"),
        val_files=str(repo / "data/tiny/prefs_val.jsonl"),
        max_length=128,
        max_prompt_length=64,
        batch_size=8,
        cache_dir=str(tmp_path / "cache"),
    )
    options.update(kwargs)
    data = data_class(str(model_dir), **options)
    data.setup("fit")
    return data


def first_batch(data: PreferenceDataModule) -> dict:
    """The first validation batch (in order: the same rows every time)."""
    return next(iter(data.val_dataloader()))
