"""Fixtures of the reporting tests: TensorBoard event files written as a training run writes them."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def write_events():
    """A function writing TensorBoard scalars ``{tag: [(step, value), ...]}`` into ``<run>/tensorboard``."""
    from torch.utils.tensorboard import SummaryWriter

    def write(run, scalars: dict[str, list[tuple[int, float]]]) -> None:
        writer = SummaryWriter(str(run / "tensorboard"))
        for tag, points in scalars.items():
            for step, value in points:
                writer.add_scalar(tag, value, step)
        writer.close()

    return write
