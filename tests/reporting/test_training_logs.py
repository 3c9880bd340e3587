"""reporting/training_logs.py: scalars read back from TensorBoard event files."""

from __future__ import annotations

import pytest

from reporting.training_logs import read_scalars


def test_scalars_are_read_back_from_the_event_files(tmp_path, write_events):
    write_events(tmp_path / "sft", {"train/loss": [(0, 3.0), (5, 2.0), (10, 1.5)], "val/loss": [(10, 1.8)]})
    scalars = read_scalars(tmp_path / "sft")
    assert scalars["train/loss"] == [(0, 3.0), (5, 2.0), (10, 1.5)]
    assert scalars["val/loss"] == [(10, pytest.approx(1.8))]
    assert read_scalars(tmp_path / "missing") == {}
