"""bf16 autocast and the fused optimiser are speed-ups only: the loss curve stays the fp32 one."""

from __future__ import annotations

import lightning as L
import torch
from torch.testing import assert_close

from common.settings import OptimizerSettings
from datamodules import InstructionDataModule
from lightning_modules.sft import SFTModule

STEPS = 6
# bf16 keeps 8 bits of mantissa (~0.4% relative error per logit); the loss itself is computed in fp32 and
# averaged over the batch. Measured on this tiny model: at most 0.0006 apart over 6 steps (loss ~6.2), so
# 0.01 (0.16%) leaves room for other CPUs' kernels while still catching a loss computed in bf16.
LOSS_TOLERANCE = 0.01


class Losses(L.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(float(trainer.callback_metrics["train/loss"]))


def sft_losses(cpu_trainer, tiny_model_dir, repo, precision: str) -> list[float]:
    L.seed_everything(0, verbose=False)
    module = SFTModule(
        str(tiny_model_dir), lora=None, optimizer=OptimizerSettings(lr=2e-3, warmup_steps=1, schedule="constant")
    )
    data = InstructionDataModule(
        str(tiny_model_dir),
        train_files=str(repo / "data/tiny/sft_train.jsonl"),
        num_examples=48,
        val_fraction=0.0,
        max_length=256,
        batch_size=8,
    )
    losses = Losses()
    cpu_trainer(
        precision=precision, max_steps=STEPS, gradient_clip_val=1.0, limit_val_batches=0, callbacks=[losses]
    ).fit(module, datamodule=data)
    return losses.values


def test_bf16_mixed_loss_curve_matches_fp32(tiny_model_dir, repo, cpu_trainer):
    fp32 = sft_losses(cpu_trainer, tiny_model_dir, repo, "32-true")
    bf16 = sft_losses(cpu_trainer, tiny_model_dir, repo, "bf16-mixed")
    assert len(fp32) == len(bf16) == STEPS
    assert fp32[-1] < fp32[0] - 0.1  # the curve moves, so agreeing along it means something
    assert_close(torch.tensor(bf16), torch.tensor(fp32), atol=LOSS_TOLERANCE, rtol=0)


def test_configured_adamw_is_fused_and_steps_like_the_default(tiny_model_dir, cpu_trainer):
    module = SFTModule(
        str(tiny_model_dir),
        lora=None,
        optimizer=OptimizerSettings(lr=1e-2, weight_decay=0.1, warmup_steps=1, schedule="constant"),
    )
    module.trainer = cpu_trainer(max_steps=3)
    optimizer = module.configure_optimizers()["optimizer"]
    assert all(group["fused"] for group in optimizer.param_groups)
    # The same update as torch's default AdamW with the same groups.
    params = [p for group in optimizer.param_groups for p in group["params"]]
    start = [p.detach().clone() for p in params]
    reference_params = [p.detach().clone().requires_grad_() for p in params]
    reference = torch.optim.AdamW(
        [
            {"params": reference_params[: len(optimizer.param_groups[0]["params"])], "weight_decay": 0.1},
            {"params": reference_params[len(optimizer.param_groups[0]["params"]) :], "weight_decay": 0.0},
        ],
        lr=1e-2,
    )
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p, q in zip(params, reference_params, strict=True):
            grad = torch.randn(p.shape, generator=generator)
            p.grad, q.grad = grad.clone(), grad.clone()
        optimizer.step()
        reference.step()
    for p, q in zip(params, reference_params, strict=True):
        assert_close(p.detach(), q.detach(), atol=1e-6, rtol=1e-5)
    assert any(not torch.equal(p, p0) for p, p0 in zip(params, start, strict=True))


def test_the_fused_lever_off_gives_torchs_default_adamw(tiny_model_dir, cpu_trainer):
    module = SFTModule(str(tiny_model_dir), lora=None, optimizer=OptimizerSettings(fused=False))
    module.trainer = cpu_trainer(max_steps=3)
    optimizer = module.configure_optimizers()["optimizer"]
    assert not any(group["fused"] for group in optimizer.param_groups)
