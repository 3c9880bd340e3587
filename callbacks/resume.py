"""Random-number generator states in checkpoints, so a resumed run draws the same dropout masks."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from common.distributed import world


def collect_rng_states() -> dict[str, Any]:
    """This process's torch (CPU and CUDA), Python and NumPy generator states, as tensors and plain lists
    (so the checkpoint still loads with ``weights_only=True``)."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached_gaussian)],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))


class RandomStateCheckpoint(L.Callback):
    """Save every rank's RNG states in each checkpoint; restore them when a run resumes.

    Lightning restores the weights, the optimiser, the loops and (with
    :class:`~datamodules.resumable.ResumableDataLoader`) the data position, but not the global
    random generators, so without this a resumed run would draw other dropout masks than the
    uninterrupted one. The states are restored at ``on_train_start``, the last moment before the
    first resumed step. Under several processes each rank gets its own states back (a resumed run
    must use the same number of processes).
    """

    def __init__(self) -> None:
        self._pending: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        states = collect_rng_states()
        world_size, _ = world()
        if world_size > 1:
            gathered: list[Any] = [None] * world_size
            dist.all_gather_object(gathered, states)
            return {"per_rank": gathered}
        return {"per_rank": [states]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict["per_rank"]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is None:
            return
        states, self._pending = self._pending, None
        if len(states) != trainer.world_size:
            rank_zero_warn(
                f"The checkpoint holds random states for {len(states)} processes, this run has {trainer.world_size}: "
                "not restored, so dropout masks will differ from the uninterrupted run."
            )
            return
        set_rng_states(states[trainer.global_rank])
        rank_zero_info("Restored the random generators' states from the checkpoint.")
