"""Exact resume through ``train.py fit``: a run killed mid-epoch (SIGKILL) or told to stop (SIGTERM)
and restarted with ``--ckpt_path last`` logs the same loss at every step as the uninterrupted run.

The tiny SFT config in fp32 on CPU, 6 steps per epoch, 10 steps, LoRA dropout on (so the random
generators' states matter), validation at each epoch end. Three runs start side by side (the
uninterrupted one, one killed with SIGKILL before step 8, one sent SIGTERM before step 4), then the
two interrupted ones are resumed side by side: about a minute on two cores, hence ``slow``.
"""

from __future__ import annotations

import copy
import signal
from pathlib import Path

import pytest
import torch
from fault_injection import add_callback, checkpoint_every, finish, read_log, start_fit, tiny_config

from callbacks.checkpoint_io import AtomicCheckpointIO

STEPS = 10  # 6 per epoch: the runs cross one epoch boundary and one validation
KILL_AT = 8  # SIGKILL when step 8 is about to start: mid-epoch 1, last checkpoint after step 7
TERM_AT = 4  # SIGTERM when step 4 starts: step 4 finishes, then the checkpoint, then the exit
pytestmark = pytest.mark.slow

THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # side by side on two cores


def config(out: Path, model: Path, every_n_train_steps: int) -> dict:
    # max_epochs bounds the run as in the real configs: with it, configure_optimizers' estimated_stepping_batches
    # builds the training loader before the checkpoint is restored (CausalLMModule.on_train_start); max_steps cuts
    # epoch 1 short, and the schedule is the same 10 steps as with max_epochs: -1.
    cfg = tiny_config("sft", out, model, precision="32", max_epochs=2, max_steps=STEPS, limit_val_batches=2)
    cfg["data"]["init_args"].update(num_examples=48, batch_size=8)
    checkpoint_every(cfg, every_n_train_steps)
    return add_callback(cfg, "fault_injection.StepLog", path=str(out / "steps.jsonl"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("resume")
    folders = {name: root / name for name in ("full", "sigkill", "sigterm")}
    for folder in folders.values():
        folder.mkdir()
    configs = {
        "full": config(folders["full"], tiny_model_dir, every_n_train_steps=1),
        "sigkill": config(folders["sigkill"], tiny_model_dir, every_n_train_steps=1),
        # No step checkpoints: the only last.ckpt before the first validation is SIGTERM's.
        "sigterm": config(folders["sigterm"], tiny_model_dir, every_n_train_steps=1000),
    }
    interrupted = {
        name: add_callback(copy.deepcopy(configs[name]), "fault_injection.KillAtStep", step=step, signal=sig)
        for name, step, sig in (("sigkill", KILL_AT, "SIGKILL"), ("sigterm", TERM_AT, "SIGTERM"))
    }
    first = {
        "full": start_fit(configs["full"], folders["full"] / "config.yaml", env=THREADS),
        **{name: start_fit(cfg, folders[name] / "interrupted.yaml", env=THREADS) for name, cfg in interrupted.items()},
    }
    results = {name: finish(process) for name, process in first.items()}
    assert results["full"].returncode == 0, results["full"].stderr[-3000:]
    assert results["sigkill"].returncode == -signal.SIGKILL, results["sigkill"].stderr[-3000:]
    assert results["sigterm"].returncode == 0, results["sigterm"].stderr[-3000:]
    for name in interrupted:  # what the interrupted runs left behind, before the resumed runs add to it
        (folders[name] / "interrupted.log").write_text(results[name].stdout + results[name].stderr)
        (folders[name] / "steps-interrupted.jsonl").write_text((folders[name] / "steps.jsonl").read_text())
        last = folders[name] / "runs" / "sft" / "checkpoints" / "last.ckpt"
        (folders[name] / "last-interrupted.ckpt").write_bytes(last.read_bytes())
        (folders[name] / "exported-before-resume").write_text(str((folders[name] / "outputs").exists()))
    second = {
        name: start_fit(configs[name], folders[name] / "config.yaml", "--ckpt_path", "last", env=THREADS)
        for name in interrupted
    }
    for name, process in second.items():
        result = finish(process)
        assert result.returncode == 0, result.stderr[-3000:]
        (folders[name] / "resumed.log").write_text(result.stdout + result.stderr)
    return folders


def assert_same_losses(resumed: dict[int, float], full: dict[int, float]) -> None:
    assert sorted(resumed) == sorted(full)
    for step in full:
        assert resumed[step] == pytest.approx(full[step], abs=1e-6, rel=0), f"step {step}"


def test_uninterrupted_run_logs_every_step_and_one_validation(runs):
    train, val = read_log(runs["full"] / "steps.jsonl")
    assert sorted(train) == list(range(STEPS))
    assert sorted(val) == [6]  # the end of epoch 0 (epoch 1 is cut by max_steps)
    assert len(set(train.values())) == STEPS  # each step its own batch and loss


def test_sigkill_mid_epoch_then_ckpt_path_last_reproduces_every_logged_loss(runs):
    before_kill, _ = read_log(runs["sigkill"] / "steps-interrupted.jsonl")
    assert sorted(before_kill) == list(range(KILL_AT))  # killed before step 8 ran
    resumed_log = (runs["sigkill"] / "resumed.log").read_text()
    assert "Restored all states from the checkpoint" in resumed_log
    assert "Restored the random generators' states" in resumed_log
    assert "not resumable" not in resumed_log  # Lightning's warning for a data position it cannot restore
    full_train, full_val = read_log(runs["full"] / "steps.jsonl")
    train, val = read_log(runs["sigkill"] / "steps.jsonl")
    assert_same_losses(train, full_train)
    assert val == pytest.approx(full_val, abs=1e-6)


def test_sigterm_writes_last_checkpoint_and_exits_cleanly(runs):
    log = (runs["sigterm"] / "interrupted.log").read_text()
    assert f"SIGTERM: saved {runs['sigterm'] / 'runs/sft/checkpoints/last.ckpt'} at step {TERM_AT + 1}" in log
    checkpoint = AtomicCheckpointIO().load_checkpoint(runs["sigterm"] / "last-interrupted.ckpt")
    assert checkpoint["global_step"] == TERM_AT + 1  # the step in flight finished first
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 0, "batches_served": TERM_AT + 1}
    ]
    assert (runs["sigterm"] / "exported-before-resume").read_text() == "False"  # an interrupted run exports nothing
    before, _ = read_log(runs["sigterm"] / "steps-interrupted.jsonl")
    assert sorted(before) == list(range(TERM_AT + 1))


def test_run_resumed_after_sigterm_reproduces_every_logged_loss(runs):
    full_train, _ = read_log(runs["full"] / "steps.jsonl")
    train, _ = read_log(runs["sigterm"] / "steps.jsonl")
    assert_same_losses(train, full_train)


def test_resumed_run_exports_the_same_adapter(runs):
    from safetensors.torch import load_file

    full = load_file(runs["full"] / "outputs" / "sft" / "adapter_model.safetensors")
    for name in ("sigkill", "sigterm"):
        resumed = load_file(runs[name] / "outputs" / "sft" / "adapter_model.safetensors")
        assert full.keys() == resumed.keys()
        for key in full:
            torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=1e-6)
