"""The run's two checkpoints: the best so far, and one resume point (``last.ckpt``) that is never stale."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


def best_checkpoint(dirpath: str, monitor: str) -> ModelCheckpoint:
    """The best checkpoint by ``monitor`` (lower is better), checked after each validation; keeps one file."""
    return ModelCheckpoint(dirpath=dirpath, filename="{epoch}-{step}", monitor=monitor, save_top_k=1, save_last=False)


class ResumeCheckpoint(ModelCheckpoint):
    """``last.ckpt``, the one resume point: every ``every_n_train_steps`` optimiser steps, after each validation
    and at the end of training.

    Lightning's ``save_last`` belongs to one ``ModelCheckpoint``: set on a step-interval callback alone, ``last.ckpt``
    lags a validation (or the end of the run) by up to ``every_n_train_steps - 1`` steps; set on a second,
    validation-time callback too, the second writer gets ``last-v1.ckpt``, a second full copy of the model. This
    callback is the only writer of ``last.ckpt`` and also writes it at the two moments a step interval misses.
    Register it after :func:`best_checkpoint`, so the resume point records the best checkpoint of the same step.

    Args:
        dirpath: the checkpoint folder.
        every_n_train_steps: optimiser steps between writes (SIGKILL loses at most these many).
    """

    def __init__(self, dirpath: str, every_n_train_steps: int) -> None:
        super().__init__(dirpath=dirpath, every_n_train_steps=every_n_train_steps, save_top_k=0, save_last=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._catch_up(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._catch_up(trainer)

    def _catch_up(self, trainer: L.Trainer) -> None:
        # Skips outside fit, in the sanity check, and when this step's last.ckpt is already written.
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
