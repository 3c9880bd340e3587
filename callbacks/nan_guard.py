"""Skip optimiser steps with NaN / Inf gradients; stop after several in a row."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from common.errors import ConfigError, NonFiniteLossError


class NaNGuard(L.Callback):
    """Guard training against NaN / Inf losses and gradients.

    Before each optimiser step the gradients' total norm is checked (all ranks agree: a bad gradient
    on any rank skips the step everywhere). A non-finite step is skipped: its gradients are dropped,
    so AdamW leaves the weights and its moments as they were, and the step is counted. After
    ``max_consecutive`` skipped steps in a row the run stops with :class:`NonFiniteLossError`,
    raised before any checkpoint of that step is written. Because bad steps never reach the
    weights, every checkpoint holds finite weights; if the weights are found non-finite anyway
    (changed outside the optimiser), the run stops at once.

    Logs ``train/skipped_steps`` (the running count) on every step.

    Args:
        max_consecutive: stop after this many consecutive skipped steps (``K``).
    """

    def __init__(self, max_consecutive: int = 5) -> None:
        if max_consecutive < 1:
            raise ConfigError(f"max_consecutive must be at least 1, got {max_consecutive}.")
        self.max_consecutive = max_consecutive
        self.skipped = 0
        self.consecutive = 0
        self.skipped_steps: list[int] = []
        self._skipped_this_step = False

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        finite = bool(torch.isfinite(torch.nn.utils.get_total_norm(grads))) if grads else True
        if not trainer.strategy.reduce_boolean_decision(not finite, all=False):
            self.consecutive = 0
            return
        optimizer.zero_grad(set_to_none=True)  # parameters without a gradient are left alone by the step
        self.skipped += 1
        self.consecutive += 1
        self.skipped_steps.append(trainer.global_step)
        self._skipped_this_step = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)
        if not self._skipped_this_step:
            return
        self._skipped_this_step = False
        step = self.skipped_steps[-1]
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        loss_text = f"{float(loss):.4g}" if torch.is_tensor(loss) else "n/a"
        rank_zero_warn(
            f"[NaNGuard] step {step}: NaN/Inf gradients (loss {loss_text}); step skipped "
            f"({self.consecutive} in a row, {self.skipped} in all)."
        )
        bad_weights = [name for name, p in pl_module.named_parameters() if p.requires_grad and not p.isfinite().all()]
        if bad_weights:
            raise NonFiniteLossError(
                f"The trainable weights hold NaN/Inf at step {step} (e.g. {bad_weights[0]}), so no later step "
                "can recover. Stopped without writing a checkpoint of this state; resume from the last "
                "checkpoint (ckpt_path: last)."
            )
        if self.consecutive >= self.max_consecutive:
            first = step - self.consecutive + 1
            raise NonFiniteLossError(
                f"The loss or its gradients were NaN/Inf for {self.consecutive} consecutive steps ({first}-{step}; "
                f"NaNGuard max_consecutive={self.max_consecutive}). Stopped; the last checkpoint holds the weights "
                "from before these steps. Lower the learning rate, keep gradient_clip_val set, use bf16 rather "
                "than fp16, or look for a bad batch (see docs/troubleshooting.md)."
            )

    def state_dict(self) -> dict:
        return {"skipped": self.skipped, "consecutive": self.consecutive, "skipped_steps": list(self.skipped_steps)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
        self.consecutive = int(state_dict.get("consecutive", 0))
        self.skipped_steps = [int(s) for s in state_dict.get("skipped_steps", [])]
