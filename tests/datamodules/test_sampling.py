"""LengthGroupedSampler: a seeded permutation of batches of similar length, once per row per epoch."""

from __future__ import annotations

import random

from datamodules.sampling import LengthGroupedSampler

# A spread of lengths, 10 to 500 tokens, in no order.
_RNG = random.Random(0)
LENGTHS = [_RNG.randint(10, 500) for _ in range(203)]
BATCH = 8


def flatten(batches: list[list[int]]) -> list[int]:
    return [i for batch in batches for i in batch]


def test_every_row_is_visited_exactly_once_per_epoch():
    sampler = LengthGroupedSampler(LENGTHS, BATCH, seed=3, mega_batch_factor=4)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert sorted(flatten(list(sampler))) == list(range(len(LENGTHS)))


def test_epochs_differ_and_seed_plus_epoch_repeats():
    sampler = LengthGroupedSampler(LENGTHS, BATCH, seed=3, mega_batch_factor=4)
    sampler.set_epoch(0)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch0 != epoch1
    again = LengthGroupedSampler(LENGTHS, BATCH, seed=3, mega_batch_factor=4)
    again.set_epoch(1)
    assert list(again) == epoch1
    other_seed = LengthGroupedSampler(LENGTHS, BATCH, seed=4, mega_batch_factor=4)
    other_seed.set_epoch(1)
    assert list(other_seed) != epoch1


def test_len_matches_the_number_of_batches_yielded():
    for n_rows, batch_size, factor in [(203, 8, 4), (64, 8, 16), (1, 4, 16), (17, 16, 1)]:
        sampler = LengthGroupedSampler(LENGTHS[:n_rows], batch_size, mega_batch_factor=factor)
        batches = list(sampler)
        assert len(sampler) == len(batches) == -(-n_rows // batch_size)
        assert all(len(batch) <= batch_size for batch in batches)


def test_batches_are_more_length_homogeneous_than_random_batching():
    def mean_spread(batches: list[list[int]]) -> float:
        """Mean over batches of longest / shortest row: 1 means no padding at all."""
        ratios = [max(LENGTHS[i] for i in b) / min(LENGTHS[i] for i in b) for b in batches]
        return sum(ratios) / len(ratios)

    grouped = list(LengthGroupedSampler(LENGTHS, BATCH, seed=0, mega_batch_factor=16))
    order = list(range(len(LENGTHS)))
    random.Random(0).shuffle(order)
    unsorted = [order[i : i + BATCH] for i in range(0, len(order), BATCH)]
    assert mean_spread(grouped) < 2.0  # sorted inside mega-batches of 128 rows (here ~1.4)
    assert mean_spread(unsorted) > 5.0  # random batches mix 20- and 400-token rows (here ~10)
    # The batch order is still shuffled: not simply longest first.
    firsts = [LENGTHS[b[0]] for b in grouped]
    assert firsts != sorted(firsts, reverse=True)
