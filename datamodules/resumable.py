"""Data loaders that survive a restart and split the data between processes.

A run killed in the middle of an epoch must, when restarted with ``ckpt_path: last``, see exactly
the batches the uninterrupted run would have seen. Lightning saves the ``state_dict`` of a training
DataLoader that has one in every checkpoint and gives it back through ``load_state_dict`` before
the first batch of the resumed run; :class:`ResumableDataLoader` stores the epoch and the number of
batches already served, and its batch sampler skips those batches' indices (no data is loaded for
them). The order itself is a pure function of ``seed + epoch``.

Under DDP / FSDP every rank builds its own loader and takes its share of each epoch: the
length-grouped sampler deals out whole batches (rank ``r`` takes every ``world_size``-th), the plain
shuffle uses a ``DistributedSampler``. Lightning's own sampler injection cannot wrap these batch
samplers, so multi-process runs set ``trainer.use_distributed_sampler: false``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sized
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, Sampler

from common.distributed import world
from common.errors import ConfigError
from datamodules.sampling import LengthGroupedSampler


class ResumableBatches(Sampler[list[int]]):
    """The batches of an epoch-seeded batch sampler, optionally starting ``skip`` batches in.

    Args:
        batches: yields lists of row indices; its order depends only on the seed and the epoch.

    Attributes:
        sampler: the object whose ``set_epoch`` fixes the order (Lightning calls
            ``batch_sampler.sampler.set_epoch(epoch)`` at every epoch start): the
            :class:`LengthGroupedSampler` itself, or the ``DistributedSampler`` under a ``BatchSampler``.
        skip: batches to pass over at the start of the next iteration (set on resume, used once).
    """

    def __init__(self, batches: Sampler[list[int]]) -> None:
        self.batches = batches
        self.sampler = getattr(batches, "sampler", batches)
        self.skip = 0

    @property
    def epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        return itertools.islice(iter(self.batches), skip, None)

    def __len__(self) -> int:
        return len(self.batches)


class ResumableDataLoader(DataLoader):
    """A training DataLoader whose position in the epoch is saved in checkpoints.

    ``state_dict()`` is ``{"epoch", "batches_served"}``; ``load_state_dict`` makes the next
    iteration start with the first batch not yet served. A position at the very end of an epoch
    restores nothing: the next epoch starts from its beginning.
    """

    batch_sampler: ResumableBatches

    def __init__(self, dataset: Sized, batch_sampler: ResumableBatches, **kwargs: Any) -> None:
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self._served = 0

    def __iter__(self) -> Iterator[Any]:
        # A generator: the index order is drawn at the first batch, after Lightning's set_epoch.
        self._served = self.batch_sampler.skip
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.batch_sampler.epoch, "batches_served": self._served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.set_epoch(int(state["epoch"]))
        served = int(state["batches_served"])
        self.batch_sampler.skip = served if served < len(self.batch_sampler) else 0


def train_loader(
    dataset: Sized,
    batch_size: int,
    collate: Callable,
    *,
    group_by_length: bool,
    seed: int,
    num_workers: int = 0,
    trainer: Any = None,
) -> ResumableDataLoader:
    """The training loader: this rank's share of a seeded, per-epoch order, resumable mid-epoch.

    Args:
        dataset: tokenised rows (with a ``length`` column when ``group_by_length``).
        batch_size: rows per batch per rank.
        collate: the collator.
        group_by_length: batches of similar length (:class:`LengthGroupedSampler`), else a plain shuffle.
        seed: base seed; epoch ``e`` uses ``seed + e``.
        num_workers: DataLoader worker processes.
        trainer: the Lightning trainer, to check its sampler setting under several processes.

    Raises:
        ConfigError: several processes with ``use_distributed_sampler`` left on.
    """
    world_size, rank = world()
    connector = getattr(trainer, "_accelerator_connector", None)
    if world_size > 1 and getattr(connector, "use_distributed_sampler", False):
        raise ConfigError(
            f"{world_size} processes with trainer.use_distributed_sampler: true. The DataModule gives each rank "
            "its own share of every epoch itself (and can resume mid-epoch); set trainer.use_distributed_sampler: "
            "false in the config (see the overlay configs/fsdp/sft.yaml)."
        )
    if group_by_length:
        batches: Sampler[list[int]] = LengthGroupedSampler(dataset["length"], batch_size, seed=seed)
    else:
        rows = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        batches = BatchSampler(rows, batch_size, drop_last=False)
    return ResumableDataLoader(
        dataset,
        ResumableBatches(batches),
        collate_fn=collate,
        num_workers=num_workers,
        # Its own generator: creating the iterator then draws no number from the global RNG, which
        # a resumed run restores (dropout) and must find exactly where the checkpoint left it.
        generator=torch.Generator().manual_seed(seed),
    )


def eval_loader(dataset: Sized, batch_size: int, collate: Callable, *, num_workers: int = 0) -> DataLoader:
    """Every row once, in order; under several processes each rank takes an equal share.

    Ranks must run the same number of batches (DDP synchronises buffers at every forward), so the
    ``DistributedSampler`` repeats up to ``world_size - 1`` rows to even them out (the precomputed-reference
    pass, which sums the ranks' shares, takes its own: ``PreferenceDataModule.reference_dataloader``).
    """
    world_size, rank = world()
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=num_workers)
