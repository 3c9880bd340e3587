"""AdamW with linear warm-up and cosine or linear decay, shared by the SFT and DPO modules."""

from __future__ import annotations

import math

import torch

from common.errors import ConfigError
from common.settings import OptimizerSettings


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
        raise ConfigError(
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
