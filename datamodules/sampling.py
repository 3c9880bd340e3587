"""Length-grouped batching: fewer pad tokens, still every row once per epoch in random order."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler

from common.distributed import world


class LengthGroupedSampler(Sampler[list[int]]):
    """Yield batches of row indices whose lengths are close.

    Each epoch the rows are shuffled with ``seed + epoch``, cut into mega-batches of
    ``batch_size * mega_batch_factor`` rows, each mega-batch is sorted by length and cut into
    batches, and the batches are shuffled. Sorting only inside a mega-batch keeps the order random
    across the epoch while a batch rarely mixes a 20-token row with a 400-token one.

    Under DDP each rank takes every ``world_size``-th batch; the last incomplete round of batches is
    dropped so all ranks make the same number of steps.

    Args:
        lengths: token length of every row.
        batch_size: rows per batch (per rank).
        seed: base seed; Lightning calls :meth:`set_epoch` so each epoch has its own order.
        mega_batch_factor: batches per sorted mega-batch.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, mega_batch_factor: int = 16) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega_batch_factor = mega_batch_factor
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        mega = self.batch_size * self.mega_batch_factor
        batches = []
        for start in range(0, len(order), mega):
            group = sorted(order[start : start + mega], key=lambda i: self.lengths[i], reverse=True)
            batches += [group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        world_size, rank = world()
        batches = self._all_batches()
        usable = len(batches) - len(batches) % world_size if world_size > 1 else len(batches)
        yield from batches[rank:usable:world_size]

    def __len__(self) -> int:
        world_size, _ = world()
        total = -(-len(self.lengths) // self.batch_size)
        return total // world_size
