"""Save a checkpoint when the run is told to stop (SIGTERM: preemption, ``kill``, a scheduler's time limit)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


class SigtermCheckpoint(L.Callback):
    """On SIGTERM, write ``last.ckpt`` before the process exits, so ``ckpt_path: last`` resumes there.

    Lightning 2.6 already turns SIGTERM into a clean stop: its handler sets a flag (and, under DDP,
    tells every rank), the current batch finishes, and the loop raises ``SIGTERMException``. This
    callback adds the missing piece, a checkpoint of that state: into every ``ModelCheckpoint``
    folder that keeps a ``last`` checkpoint, else ``dirpath``. No export is written (the run did
    not finish) and the process exits with status 0. SIGKILL cannot be caught: a killed run resumes
    from the most recent checkpoint instead (see ``every_n_train_steps`` in the configs).

    Args:
        dirpath: folder for ``last.ckpt`` when no ``ModelCheckpoint`` has ``save_last`` set;
            default ``<default_root_dir>/checkpoints``.
    """

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath

    def checkpoint_paths(self, trainer: L.Trainer) -> list[Path]:
        paths = {
            Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
            for callback in trainer.checkpoint_callbacks
            if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath
        }
        if not paths:
            folder = Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / "checkpoints"
            paths = {folder / "last.ckpt"}
        return sorted(paths)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.sanity_checking:
            return
        for path in self.checkpoint_paths(trainer):
            trainer.save_checkpoint(path)
            rank_zero_info(
                f"SIGTERM: saved {path} at step {trainer.global_step}; continue with --ckpt_path last (same config)."
            )
