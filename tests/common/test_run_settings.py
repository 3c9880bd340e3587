"""RunSettings: the paths a run writes, and a bad run: section named by its key before anything loads."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from common.settings import RunSettings


def test_paths_are_derived_from_the_run_folder():
    assert RunSettings(dir="runs/x/sft/", export_dir="outputs/x/sft").paths() == {
        "dir": "runs/x/sft",
        "checkpoints": "runs/x/sft/checkpoints",
        "last": "runs/x/sft/checkpoints/last.ckpt",
        "tensorboard": "runs/x/sft/tensorboard",
        "export": "outputs/x/sft",
    }


def test_no_run_folder_means_no_paths():
    assert RunSettings().paths() == dict.fromkeys(("dir", "checkpoints", "last", "tensorboard", "export"))


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"dir": "r", "checkpoint_every_n_steps": 0}, "run.checkpoint_every_n_steps"),
        ({"dir": "r", "max_consecutive_nonfinite": 0}, "run.max_consecutive_nonfinite"),
        ({"export_dir": "outputs/x"}, "run.export_dir"),
    ],
)
def test_a_bad_run_section_names_its_key(settings, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        RunSettings(**settings)
