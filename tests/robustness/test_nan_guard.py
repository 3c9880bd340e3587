"""NaNGuard on the tiny model made to produce NaN at chosen steps, and the atomic, finite-only,
weights-only checkpoint files of AtomicCheckpointIO."""

from __future__ import annotations

import pickle
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from callbacks.checkpoint_io import AtomicCheckpointIO, NonFiniteCheckpointError
from callbacks.nan_guard import NaNGuard, NonFiniteLossError
from common.settings import LoraSettings, OptimizerSettings
from datamodules.instruction import InstructionDataModule
from lightning_modules.sft import SFTModule


class NaNAtSteps(L.Callback):
    """Makes the embeddings NaN (so the loss and every gradient are NaN) at the chosen steps, or sets a
    LoRA weight to NaN at ``poison_step``; records the trainable weights around every step."""

    def __init__(self, steps: set[int] | range = frozenset(), poison_step: int | None = None) -> None:
        self.steps, self.poison_step = steps, poison_step
        self.before: dict[int, dict[str, torch.Tensor]] = {}
        self.after: dict[int, dict[str, torch.Tensor]] = {}
        self._handle = None

    def on_train_start(self, trainer, pl_module) -> None:
        embed = pl_module.model.get_base_model().get_input_embeddings()
        self._handle = embed.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        if self._trainer.global_step in self.steps:
            return output * float("nan")
        return output

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._trainer = trainer
        if trainer.global_step == self.poison_step:
            with torch.no_grad():
                next(p for n, p in pl_module.named_parameters() if "lora_A" in n).fill_(float("nan"))
        self.before[trainer.global_step] = trainable(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after[trainer.global_step - 1] = trainable(pl_module)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._handle.remove()


def trainable(module: L.LightningModule) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


def fit(cpu_trainer, tiny_model_dir: Path, repo: Path, tmp_path: Path, injector: NaNAtSteps, guard: NaNGuard,
        steps: int):
    L.seed_everything(0, verbose=False)
    module = SFTModule(
        str(tiny_model_dir),
        lora=LoraSettings(r=4, alpha=8, dropout=0.0),
        optimizer=OptimizerSettings(lr=1e-2, warmup_steps=1),
    )
    data = InstructionDataModule(
        str(tiny_model_dir),
        train_files=str(repo / "data/tiny/sft_train.jsonl"),
        num_examples=64,
        val_fraction=0.0,
        max_length=256,
        batch_size=8,
    )
    trainer = cpu_trainer(
        max_steps=steps,
        enable_checkpointing=True,
        gradient_clip_val=1.0,
        plugins=[AtomicCheckpointIO()],
        callbacks=[
            injector,
            guard,
            ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=0, save_last=True),
        ],
    )
    trainer.fit(module, datamodule=data)
    return trainer


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def last_checkpoint_weights(tmp_path: Path) -> tuple[int, dict[str, torch.Tensor]]:
    checkpoint = AtomicCheckpointIO().load_checkpoint(tmp_path / "ckpt" / "last.ckpt")
    return checkpoint["global_step"], checkpoint["state_dict"]


def test_nan_steps_are_skipped_and_counted(tiny_model_dir, repo, tmp_path, cpu_trainer):
    injector, guard = NaNAtSteps(steps={2, 4}), NaNGuard(max_consecutive=2)
    trainer = fit(cpu_trainer, tiny_model_dir, repo, tmp_path, injector, guard, steps=7)
    assert trainer.global_step == 7  # the run went on
    assert (guard.skipped, guard.skipped_steps) == (2, [2, 4])
    assert float(trainer.callback_metrics["train/skipped_steps"]) == 2.0
    for step in (2, 4):  # a skipped step leaves the weights exactly as they were
        assert_same(injector.before[step], injector.after[step])
    for step in (1, 3, 5):  # the others train
        assert any(not torch.equal(injector.before[step][n], injector.after[step][n]) for n in injector.before[step])
    assert all(torch.isfinite(p).all() for p in injector.after[6].values())


def test_consecutive_nan_steps_stop_the_run_and_the_last_checkpoint_stays_good(
    tiny_model_dir, repo, tmp_path, cpu_trainer
):
    injector, guard = NaNAtSteps(steps=range(3, 100)), NaNGuard(max_consecutive=3)
    message = r"NaN/Inf for 3 consecutive steps \(3-5; NaNGuard max_consecutive=3\)"
    with pytest.raises(NonFiniteLossError, match=message):
        fit(cpu_trainer, tiny_model_dir, repo, tmp_path, injector, guard, steps=20)
    step, weights = last_checkpoint_weights(tmp_path)
    assert step == 5  # written after the skipped steps 3 and 4, not after step 5 (the run stopped first)
    assert_same(weights, injector.after[2])  # the weights of the last good step, finite


def test_poisoned_weights_stop_at_once_without_a_checkpoint_of_them(tiny_model_dir, repo, tmp_path, cpu_trainer):
    injector, guard = NaNAtSteps(poison_step=3), NaNGuard(max_consecutive=5)
    with pytest.raises(NonFiniteLossError, match="trainable weights hold NaN/Inf at step 3"):
        fit(cpu_trainer, tiny_model_dir, repo, tmp_path, injector, guard, steps=20)
    step, weights = last_checkpoint_weights(tmp_path)
    assert step == 3
    assert all(torch.isfinite(w).all() for w in weights.values())


# ---- AtomicCheckpointIO ------------------------------------------------------------------------


def test_checkpoint_write_is_atomic_when_the_write_crashes(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)
    before = path.read_bytes()

    def crash(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt  # a kill in the middle of the write

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 2}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left
    monkeypatch.undo()
    assert io.load_checkpoint(path)["global_step"] == 1


def test_a_non_finite_state_never_overwrites_the_last_checkpoint(tmp_path):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    before = path.read_bytes()
    with pytest.raises(NonFiniteCheckpointError, match="weight 'w' holds NaN or Inf"):
        io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("nan"), 2.0])}}, path)
    assert path.read_bytes() == before
    assert path.stat().st_mode & 0o044  # readable by the group / others, as a plain torch.save file would be


class Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_checkpoints_load_with_weights_only(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        AtomicCheckpointIO().load_checkpoint(path, weights_only=False)
