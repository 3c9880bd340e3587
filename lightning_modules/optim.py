"""AdamW with linear warm-up and cosine or linear decay, shared by the SFT and DPO modules."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch


@dataclass
class OptimizerSettings:
    """Optimiser and learning-rate schedule.

    Attributes:
        lr: peak learning rate (the study: 2e-5 for SFT, 5e-7 for DPO).
        weight_decay: AdamW decoupled weight decay, applied to matrices only (not norms or biases).
        betas: AdamW moment coefficients.
        eps: AdamW denominator epsilon.
        warmup_ratio: share of the total steps spent warming up linearly from 0.
        warmup_steps: warm-up length in steps; overrides ``warmup_ratio`` when set.
        schedule: decay after warm-up: ``cosine``, ``linear`` or ``constant``.
        min_lr_ratio: the learning rate at the last step, as a share of ``lr``.
    """

    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_ratio: float = 0.03
    warmup_steps: int | None = None
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = 0.0


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Learning-rate factor at ``step``: linear warm-up to 1, then the chosen decay to ``min_lr_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress
    return min_lr_ratio + (1 - min_lr_ratio) * decay


def configure_adamw(module: torch.nn.Module, settings: OptimizerSettings, total_steps: int) -> dict:
    """AdamW over the trainable parameters plus a per-step LambdaLR, in Lightning's dict form."""
    trainable = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(
            "No trainable parameters: check the LoRA target_modules or set lora: null for full fine-tuning."
        )
    decay = [p for _, p in trainable if p.ndim >= 2]
    no_decay = [p for _, p in trainable if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr,
        betas=tuple(settings.betas),
        eps=settings.eps,
    )
    warmup = settings.warmup_steps if settings.warmup_steps is not None else round(settings.warmup_ratio * total_steps)
    warmup = max(1, warmup)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_multiplier(step, total_steps, warmup, settings.schedule, settings.min_lr_ratio),
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
