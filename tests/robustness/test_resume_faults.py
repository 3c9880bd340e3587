"""Faults around checkpoints: a resume with other training settings than the run's saved config is refused, key by
key, before anything loads (``run.allow_config_change: true`` lets it through; the same settings resume as
before); a full disk while a checkpoint or an export is written is one error line and the previous one stays
intact and loadable; a corrupt ``last.ckpt`` is one error line with the way back, and nothing is restored."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fault_injection import add_callback, checkpoint_every, full_disk_writer, run_fit, tiny_config

import common.atomic
from callbacks.checkpoint_io import AtomicCheckpointIO
from common.atomic import atomic_folder
from common.errors import DiskFullError
from study.resume_config import differences

SAVED = {
    "seed_everything": 0,
    "trainer": {"precision": "32-true", "max_epochs": 1, "accumulate_grad_batches": 1, "log_every_n_steps": 5,
                "callbacks": None},
    "model": {"init_args": {"optimizer": {"lr": 1e-3}, "reference_cache_dir": "runs/a",
                            "losses": [{"name": "sigmoid"}]}},
    "data": {"init_args": {"batch_size": 16, "num_workers": 0, "train_files": "a.jsonl"}},
    "run": {"dir": "runs/tiny/dpo", "checkpoint_every_n_steps": 25},
    "ckpt_path": None,
}  # fmt: skip


def changed(**edits) -> dict:
    import copy

    config = copy.deepcopy(SAVED)
    for dotted, value in edits.items():
        *parents, leaf = dotted.split("__")
        node = config
        for key in parents:
            node = node[key]
        node[leaf] = value
    return config


def test_what_changes_the_training_is_listed_and_nothing_else():
    assert differences(SAVED, SAVED) == []
    # paths, caches, workers, logging, callbacks, the run section and ckpt_path itself change nothing trained
    same = changed(
        model__init_args__reference_cache_dir="elsewhere", data__init_args__num_workers=4, run__dir="runs/other",
        trainer__log_every_n_steps=1, trainer__callbacks=[{"class_path": "x"}], ckpt_path="last",
    )  # fmt: skip
    assert differences(SAVED, same) == []
    other = changed(
        model__init_args__optimizer={"lr": 5e-4}, data__init_args__batch_size=8, trainer__accumulate_grad_batches=2,
        trainer__precision="bf16-mixed", model__init_args__losses=[{"name": "ipo"}],
    )  # fmt: skip
    assert differences(SAVED, other) == [
        "data.init_args.batch_size: 16 -> 8",
        "model.init_args.losses: [{'name': 'sigmoid'}] -> [{'name': 'ipo'}]",
        "model.init_args.optimizer.lr: 0.001 -> 0.0005",
        "trainer.accumulate_grad_batches: 1 -> 2",
        "trainer.precision: '32-true' -> 'bf16-mixed'",
    ]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("resume_config")
    config = tiny_config("sft", out, tiny_model_dir, max_epochs=1, max_steps=2, limit_val_batches=0)
    config["data"]["init_args"].update(num_examples=16, batch_size=8)
    checkpoint_every(config, 1)
    result = run_fit(config, out / "config.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "runs" / "sft" / "checkpoints" / "last.ckpt").is_file()
    return config, out


def test_a_resume_with_another_learning_rate_is_refused_naming_the_key(finished_run):
    config, out = finished_run
    result = run_fit(config, out / "config.yaml", "--ckpt_path", "last", "--model.init_args.optimizer.lr", "1e-5")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: --ckpt_path resumes a run trained with other settings (")
    assert "model.init_args.optimizer.lr: 0.004 -> 1e-05" in line and "run.allow_config_change: true" in line
    assert "Loading weights" not in result.stderr  # refused before the model loads


def test_the_flag_lets_a_meant_change_through(finished_run):
    """(A resume with the same settings: tests/robustness/test_resume.py, whose resumed runs drop a callback.)"""
    config, out = finished_run
    meant = run_fit(
        config, out / "config.yaml", "--ckpt_path", "last", "--model.init_args.optimizer.lr", "1e-5",
        "--run.allow_config_change", "true",
    )  # fmt: skip
    assert meant.returncode == 0, meant.stderr[-3000:]


# ---- a full disk ---------------------------------------------------------------------------------------------------


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "state_dict": {"w": torch.ones(4)}}, path)
    monkeypatch.setattr(common.atomic, "open_temporary", full_disk_writer(after_bytes=100))
    with pytest.raises(DiskFullError, match=rf"No space left on the device while writing {path} .* MiB free there, "
                       r"about .* MiB needed; the previous last.ckpt is intact"):  # fmt: skip
        io.save_checkpoint({"global_step": 2, "state_dict": {"w": torch.zeros(4096)}}, path)
    assert io.load_checkpoint(path)["global_step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left


def test_a_full_disk_during_an_export_keeps_the_previous_export(tmp_path):
    export = tmp_path / "outputs" / "sft"
    with atomic_folder(export) as staging:
        (staging / "adapter_model.safetensors").write_bytes(b"old weights")
    with pytest.raises(DiskFullError, match="while writing .*sft .*; the previous sft is intact"):
        with atomic_folder(export) as staging:
            (staging / "adapter_model.safetensors").write_bytes(b"new")
            raise OSError(28, "No space left on device")  # what save_pretrained raises on a full disk
    assert (export / "adapter_model.safetensors").read_bytes() == b"old weights"
    assert [p.name for p in export.parent.iterdir()] == ["sft"]


def test_a_full_disk_mid_run_is_one_error_line_and_the_last_checkpoint_still_loads(tmp_path, tiny_model_dir):
    config = tiny_config("sft", tmp_path, tiny_model_dir, max_epochs=1, max_steps=5, limit_val_batches=0)
    config["data"]["init_args"].update(num_examples=40, batch_size=8)
    add_callback(checkpoint_every(config, 1), "fault_injection.FillDiskAtStep", step=3)
    result = run_fit(config, tmp_path / "config.yaml")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    last = tmp_path / "runs" / "sft" / "checkpoints" / "last.ckpt"
    assert line.startswith(f"error: No space left on the device while writing {last} (No space left on device)")
    assert AtomicCheckpointIO().load_checkpoint(last)["global_step"] == 3  # the one written before the disk filled
    assert not (tmp_path / "outputs").exists()  # no half export


# ---- a corrupt checkpoint ------------------------------------------------------------------------------------------


def test_a_corrupt_last_checkpoint_is_one_error_line_with_the_way_back(finished_run):
    config, out = finished_run
    last = out / "runs" / "sft" / "checkpoints" / "last.ckpt"
    intact = last.read_bytes()
    try:
        last.write_bytes(intact[: len(intact) // 2])  # truncated, as a copy cut short would leave it
        # (the flag: a test above resumed this run with another learning rate, which its saved config now holds)
        result = run_fit(config, out / "config.yaml", "--ckpt_path", "last", "--run.allow_config_change", "true")
    finally:
        last.write_bytes(intact)
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {last} cannot be read (")
    assert "so the run was not resumed. The way back: " in line and "or start afresh (move " in line
