"""Pinned loss curves: 5 steps of tiny SFT and of tiny DPO in fp32, compared with values recorded once.

Every other test checks a piece against hand computation; these catch a silent numeric change anywhere on the
path from rows to loss (tokenisation, packing, ``position_ids``, the packed attention kernel, the response-only
LM head, the loss, the optimiser and its schedule), which no piece's own test would see.

Tolerance: 1e-5 relative. Recorded on an AMD EPYC Zen 3 (AVX2), torch 2.13, fp32. On another CPU (AVX-512)
the kernels sum in another order, which moves fp32 results in their last bits. We cannot run on another CPU
here, so the spread was measured by forcing other kernels on this one (ATEN_CPU_CAPABILITY=default,
MKL_ENABLE_INSTRUCTIONS=SSE4_2, DNNL_MAX_CPU_ISA=SSE41: narrower vectors, another summation order): the largest
relative difference over both curves was 7.8e-7 (DPO step 4); 1 and 2 threads gave identical bits. Adam does
not amplify such noise: a gradient element small enough for its sign to flip is far below ``eps`` (1e-8), so
its update is damped to nothing. A real change (another mask, a token more or less in the loss, another
learning-rate step) moves these losses by 1e-4 to 1e-3 relative or more, so 1e-5 sits about an order of
magnitude from each side. If this fails after a change meant to keep the numbers, it did not keep them; if it
fails on a new machine only, measure that machine's spread as above first.
"""

from __future__ import annotations

import math

import lightning as L
import pytest

from common.settings import LoadSettings, LoraSettings, OptimizerSettings
from datamodules import InstructionDataModule, PreferenceDataModule
from lightning_modules.dpo import DPOModule
from lightning_modules.sft import SFTModule

STEPS = 5
RTOL = 1e-5
SFT_LOSSES = [6.263819217681885, 6.231059551239014, 6.201584815979004, 6.174670219421387, 6.139430999755859]
DPO_LOSSES = [0.6931471824645996, 0.694441020488739, 0.693596601486206, 0.6885489821434021, 0.6806092262268066]


class LossLog(L.Callback):
    """``train/loss`` after every training step, in order."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(trainer.callback_metrics["train/loss"]))


def fit(module: L.LightningModule, data: L.LightningDataModule, cpu_trainer) -> list[float]:
    log = LossLog()
    cpu_trainer(max_steps=STEPS, precision="32-true", limit_val_batches=0, callbacks=[log]).fit(module, datamodule=data)
    return log.losses


def sft_curve(model_dir, repo, cpu_trainer) -> list[float]:
    """Packed batches of 8 rows, LoRA r=8 (no dropout), AdamW 5e-3 with one warm-up step, cosine decay."""
    L.seed_everything(0, verbose=False)
    module = SFTModule(
        str(model_dir),
        lora=LoraSettings(r=8, alpha=16, dropout=0.0),
        load=LoadSettings(dtype="float32"),
        optimizer=OptimizerSettings(lr=5e-3, warmup_steps=1),
    )
    data = InstructionDataModule(
        str(model_dir), train_files=str(repo / "data/tiny/sft_train.jsonl"), val_fraction=0.0, max_length=256,
        batch_size=8, seed=0,
    )  # fmt: skip
    return fit(module, data, cpu_trainer)


def dpo_curve(sft_export, repo, tmp_path, cpu_trainer) -> list[float]:
    """Packed pairs (4 per batch), precomputed reference, LoRA r=4 (no dropout), beta 0.1, AdamW 5e-3."""
    L.seed_everything(0, verbose=False)
    module = DPOModule(
        str(sft_export),
        lora=LoraSettings(r=4, alpha=8, dropout=0.0),
        reference="precomputed",
        reference_cache_dir=str(tmp_path / "reference"),
        load=LoadSettings(dtype="float32"),
        optimizer=OptimizerSettings(lr=5e-3, warmup_steps=1),
    )
    data = PreferenceDataModule(
        str(sft_export), train_files=str(repo / "data/tiny/prefs_train.jsonl"), max_length=256,
        max_prompt_length=128, batch_size=4, seed=0,
    )  # fmt: skip
    return fit(module, data, cpu_trainer)


def test_sft_loss_curve_is_pinned(tiny_model_dir, repo, cpu_trainer):
    losses = sft_curve(tiny_model_dir, repo, cpu_trainer)
    assert losses == pytest.approx(SFT_LOSSES, rel=RTOL)


def test_dpo_loss_curve_is_pinned(tiny_sft_export, repo, tmp_path, cpu_trainer):
    losses = dpo_curve(tiny_sft_export, repo, tmp_path, cpu_trainer)
    # Step 1: the new adapter is zero, so policy == reference, every implicit reward is 0 and the loss is ln 2.
    assert losses[0] == pytest.approx(math.log(2), rel=1e-6)
    assert losses == pytest.approx(DPO_LOSSES, rel=RTOL)
