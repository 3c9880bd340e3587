"""Checkpoint files written atomically, read with ``weights_only=True``, never holding NaN weights."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from common.atomic import atomic_torch_save
from common.errors import CorruptCheckpointError, NonFiniteCheckpointError
from common.settings import LoadSettings, LoraSettings, OptimizerSettings

SAFE_GLOBALS = [LoadSettings, LoraSettings, OptimizerSettings]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file beside the target, ``fsync``, then ``os.replace``.

    A crash or a kill at any moment leaves either the previous checkpoint or the new one, never a
    truncated file. (Lightning's default writes through an fsspec transaction whose temporary file
    lives in the system temp folder: on another filesystem the final move is a copy, and nothing is
    synced to disk.) Local paths only.

    Loading always uses ``torch.load(weights_only=True)``: tensors and plain containers, no code;
    the only classes allowed are the settings dataclasses that ``save_hyperparameters`` stores when a
    module is built in Python rather than by the CLI (:data:`SAFE_GLOBALS`).

    A ``state_dict`` holding NaN or Inf is refused with :class:`NonFiniteCheckpointError` before
    anything is written, so the last good checkpoint is never overwritten by a diverged state.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options.")
        target = Path(path)
        check_finite(checkpoint.get("state_dict", {}), target)
        atomic_torch_save(checkpoint, target)

    def load_checkpoint(
        self, path: _PATH, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            try:
                return super().load_checkpoint(path, map_location=map_location, weights_only=True)
            except FileNotFoundError:
                raise
            except pickle.UnpicklingError as error:
                if "Weights only load failed" in str(error):
                    raise  # not damaged but refused: it holds code (weights_only), which must stay loud
                raise corrupt_checkpoint(Path(path), error) from error
            except (RuntimeError, EOFError, OSError, ValueError) as error:
                raise corrupt_checkpoint(Path(path), error) from error


def corrupt_checkpoint(path: Path, error: BaseException) -> CorruptCheckpointError:
    """The one-line error for a checkpoint that cannot be read, with the ways back: another checkpoint of the run
    (the best one, if it reads), or a fresh start. Nothing has been restored at this point."""
    others = sorted(p for p in path.parent.glob("*.ckpt") if p != path and readable(p))
    back = f"resume from {others[-1]} (--ckpt_path {others[-1]})" if others else "no other checkpoint of it reads"
    reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    return CorruptCheckpointError(
        f"{path} cannot be read ({type(error).__name__}: {reason}): it is truncated or damaged, so the run was not "
        f"resumed. The way back: {back}, or start afresh (move {path.parent} aside and run without --ckpt_path)."
    )


def readable(path: Path) -> bool:
    """Whether ``path`` loads as a checkpoint (tensors and plain containers only)."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any failure means it does not read
        return False
    return True


def check_finite(state_dict: dict[str, Any], path: Path) -> None:
    """Raise :class:`NonFiniteCheckpointError` naming the first tensor of ``state_dict`` with NaN / Inf."""
    for name, value in state_dict.items():
        if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise NonFiniteCheckpointError(
                f"Not writing {path}: weight {name!r} holds NaN or Inf. The previous checkpoint is kept; resume "
                "from it with a lower learning rate, or find the bad batch (see docs/troubleshooting.md)."
            )
