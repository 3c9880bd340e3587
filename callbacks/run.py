"""What every training run gets from its ``run:`` settings: the logger, the callbacks, the checkpoint plugin.

The stage configs then say only what varies (paths, the checkpoint interval); the always-on pieces are listed
once, here, instead of in every YAML.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger

from callbacks.checkpoint_io import AtomicCheckpointIO
from callbacks.checkpoints import ResumeCheckpoint, best_checkpoint
from callbacks.export import HFExportCallback
from callbacks.nan_guard import NaNGuard
from callbacks.resume import RandomStateCheckpoint
from callbacks.signals import SigtermCheckpoint
from callbacks.throughput import ThroughputCallback
from common.settings import RunSettings


def run_logger(run: RunSettings) -> TensorBoardLogger:
    """TensorBoard in ``<run.dir>/tensorboard`` (a fixed version folder, so the report finds the event files)."""
    root = PurePosixPath(run.dir)
    return TensorBoardLogger(save_dir=str(root.parent), name=root.name, version="tensorboard")


def run_callbacks(run: RunSettings) -> list[L.Callback]:
    """The callbacks of every run, in the order they must run (the best checkpoint before the resume point)."""
    paths = run.paths()
    callbacks: list[L.Callback] = [
        LearningRateMonitor(logging_interval="step"),
        ThroughputCallback(),
        NaNGuard(max_consecutive=run.max_consecutive_nonfinite),  # a NaN/Inf step is skipped, not applied
        SigtermCheckpoint(),  # SIGTERM: write last.ckpt, then exit
        RandomStateCheckpoint(),  # exact resume: RNG states in checkpoints
        best_checkpoint(paths["checkpoints"], run.monitor),
        ResumeCheckpoint(paths["checkpoints"], run.checkpoint_every_n_steps),
    ]
    if run.export_dir:
        callbacks.append(HFExportCallback(dirpath=run.export_dir))
    return callbacks


def run_plugins() -> list:
    """Checkpoints written atomically and read with ``weights_only`` (:class:`AtomicCheckpointIO`)."""
    return [AtomicCheckpointIO()]
