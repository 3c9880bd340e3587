"""Tokens per second over real (non-pad) tokens, logged to TensorBoard."""

from __future__ import annotations

import time

import lightning as L


class ThroughputCallback(L.Callback):
    """Log ``perf/tokens_per_sec``: real tokens of the batches trained since the last log, per second.

    Counts ``num_real_tokens`` from the collator (padding excluded) and wall time between batch
    ends, so data loading is included, as a user waiting for the run sees it.

    Args:
        log_every_n_steps: average over this many optimiser steps.
    """

    def __init__(self, log_every_n_steps: int = 10) -> None:
        self.log_every_n_steps = log_every_n_steps
        self._start: float | None = None
        self._tokens = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._tokens = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch: dict, batch_idx: int) -> None:
        self._tokens += int(batch["num_real_tokens"])
        # Log right after an optimiser step (not on every micro-batch of an accumulation window).
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if not stepped or trainer.global_step % self.log_every_n_steps or self._start is None:
            return
        elapsed = time.perf_counter() - self._start
        if elapsed > 0 and self._tokens:
            pl_module.log("perf/tokens_per_sec", self._tokens / elapsed, on_step=True, on_epoch=False)
        self._start, self._tokens = time.perf_counter(), 0
