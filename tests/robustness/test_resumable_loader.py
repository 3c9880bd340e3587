"""The training loader behind exact resume, without a model: Lightning sets its epoch, its state is the
position in the epoch, and a loader given that state serves exactly the batches not yet served."""

from __future__ import annotations

import random

import pytest
import torch
from datasets import Dataset
from lightning.fabric.utilities.data import _set_sampler_epoch
from lightning.fabric.utilities.types import _Stateful

from datamodules.resumable import eval_loader, train_loader
from datamodules.sampling import LengthGroupedSampler

_RNG = random.Random(0)
LENGTHS = [_RNG.randint(10, 500) for _ in range(100)]
BATCH = 8  # 13 batches per epoch


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return Dataset.from_dict({"length": LENGTHS, "row": list(range(len(LENGTHS)))})


def make(dataset: Dataset, group_by_length: bool):
    return train_loader(dataset, BATCH, lambda rows: [r["row"] for r in rows], group_by_length=group_by_length, seed=3)


def epoch(loader, number: int) -> list[list[int]]:
    _set_sampler_epoch(loader, number)  # what Lightning's fit loop does at every epoch start
    return list(loader)


@pytest.mark.parametrize("group_by_length", [True, False])
def test_lightning_sets_the_epoch_so_each_epoch_has_its_own_order(dataset, group_by_length):
    loader = make(dataset, group_by_length)
    first, second = epoch(loader, 0), epoch(loader, 1)
    assert first != second
    for batches in (first, second):
        assert sorted(row for batch in batches for row in batch) == list(range(len(LENGTHS)))
    if group_by_length:
        expected = LengthGroupedSampler(LENGTHS, BATCH, seed=3)
        expected.set_epoch(1)
        assert second == list(expected)
    assert epoch(make(dataset, group_by_length), 1) == second  # a pure function of seed and epoch


@pytest.mark.parametrize("group_by_length", [True, False])
def test_state_is_the_position_in_the_epoch_and_restores_the_rest(dataset, group_by_length):
    loader = make(dataset, group_by_length)
    assert isinstance(loader, _Stateful)  # Lightning saves it in every checkpoint
    whole = epoch(loader, 2)
    _set_sampler_epoch(loader, 2)
    served = iter(loader)
    head = [next(served) for _ in range(5)]
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches_served": 5}
    resumed = make(dataset, group_by_length)  # a new process: fresh loader, epoch 0
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert head + rest == whole
    assert resumed.state_dict() == {"epoch": 2, "batches_served": len(whole)}
    assert epoch(resumed, 3) == epoch(make(dataset, group_by_length), 3)  # the next epoch starts from its start


def test_state_at_the_end_of_an_epoch_restores_nothing(dataset):
    loader = make(dataset, True)
    whole = epoch(loader, 0)
    resumed = make(dataset, True)
    resumed.load_state_dict(loader.state_dict())
    assert list(resumed) == whole


def test_iterating_draws_nothing_from_the_global_random_generator(dataset):
    """A resumed run restores the global RNG; creating the loader's iterator must not move it."""
    loader = make(dataset, True)
    before = torch.get_rng_state()
    next(iter(loader))
    assert torch.equal(torch.get_rng_state(), before)


def test_eval_loader_keeps_every_row_in_order(dataset):
    loader = eval_loader(dataset, 10, lambda rows: [r["row"] for r in rows])
    assert [row for batch in loader for row in batch] == list(range(len(LENGTHS)))
