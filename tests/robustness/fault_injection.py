"""Test support for the robustness tests: faults injected into real ``train.py fit`` runs, and the
tiny configs rewritten to write only under a temporary folder.

The callbacks are loaded by the training subprocess through ``class_path: fault_injection.<Name>``
(this folder is put on its ``PYTHONPATH``); they are not part of the trainer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


class KillAtStep(L.Callback):
    """Send ``signal`` to this process when the optimiser step ``step`` is about to start, i.e. after
    everything of step ``step - 1`` (its checkpoint included) is done. ``group``: to every process of the run
    (all ranks: :func:`start_fit` gives each run its own process group), as when the machine goes down."""

    def __init__(self, step: int, signal: str = "SIGKILL", group: bool = False) -> None:
        self.step, self.signal, self.group = step, signal, group

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.is_global_zero:
            if self.group:
                os.killpg(os.getpgid(0), getattr(signal, self.signal))
            os.kill(os.getpid(), getattr(signal, self.signal))


class StepLog(L.Callback):
    """Append, on rank 0, one JSON line per training step: the logged ``train/loss`` and the batch's rows;
    and one line per validation with the (rank-reduced) ``val/loss``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _write(self, trainer: L.Trainer, record: dict[str, Any]) -> None:
        if trainer.is_global_zero:
            with open(self.path, "a", encoding="utf-8") as file:
                file.write(json.dumps(record) + "\n")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        loss = trainer.callback_metrics["train/loss"]
        self._write(trainer, {"step": trainer.global_step - 1, "epoch": trainer.current_epoch, "loss": float(loss)})

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            val_loss = float(trainer.callback_metrics["val/loss"])
            self._write(trainer, {"val_step": trainer.global_step, "val_loss": val_loss})


class GradNormLog(L.Callback):
    """Append, on rank 0, the total norm of the gradients right after Lightning clipped them (the module's
    ``configure_gradient_clipping`` is wrapped at setup: no callback hook runs between clipping and the optimiser
    step), gathered whole when the gradients are DTensor shards (FSDP2)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        clip = pl_module.configure_gradient_clipping

        def clip_then_log(optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
            clip(optimizer, gradient_clip_val, gradient_clip_algorithm)
            self._log(trainer, pl_module)

        pl_module.configure_gradient_clipping = clip_then_log

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from torch.distributed.tensor import DTensor

        norm = torch.nn.utils.get_total_norm([p.grad for p in pl_module.parameters() if p.grad is not None])
        norm = norm.full_tensor() if isinstance(norm, DTensor) else norm  # a collective: every rank is here
        if trainer.is_global_zero:
            with open(self.path, "a", encoding="utf-8") as file:
                file.write(json.dumps({"step": trainer.global_step, "grad_norm": float(norm)}) + "\n")


class BufferDtypes(L.Callback):
    """Write, on rank 0, the dtype of every buffer and parameter of the model as the first training batch starts
    (after the strategy's setup: sharding, precision), then stop the run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        if trainer.is_global_zero:
            record = {
                "buffers": {name: str(b.dtype) for name, b in pl_module.named_buffers()},
                "trained": sorted({str(p.dtype) for p in pl_module.parameters() if p.requires_grad}),
                "frozen": sorted({str(p.dtype) for p in pl_module.parameters() if not p.requires_grad}),
                "precision": str(trainer.precision),
            }
            Path(self.path).write_text(json.dumps(record), encoding="utf-8")


def read_log(path: Path) -> tuple[dict[int, float], dict[int, float]]:
    """``({step: train loss}, {step: val loss})`` from a :class:`StepLog` file (a resumed step overwrites)."""
    train, val = {}, {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "loss" in record:
            train[record["step"]] = record["loss"]
        else:
            val[record["val_step"]] = record["val_loss"]
    return train, val


def tiny_config(stage: str, out: Path, model: Path, **trainer: Any) -> dict:
    """``configs/tiny/<stage>.yaml`` with every output path moved under ``out`` and the model replaced.

    ``trainer`` settings are merged into the trainer section.
    """
    text = (REPO / "configs" / "tiny" / f"{stage}.yaml").read_text()
    text = text.replace("runs/tiny", str(out / "runs")).replace("outputs/tiny", str(out / "outputs"))
    config = yaml.safe_load(text)
    config["model"]["init_args"]["model_name_or_path"] = str(model)
    data = config["data"]["init_args"]
    for key in ("train_files", "val_files"):
        data[key] = str(REPO / data[key])
    config["trainer"].update(enable_progress_bar=False, enable_model_summary=False, **trainer)
    return config


def add_callback(config: dict, class_path: str, **init_args: Any) -> dict:
    config["trainer"].setdefault("callbacks", []).append({"class_path": class_path, "init_args": init_args})
    return config


def checkpoint_every(config: dict, steps: int) -> dict:
    """``config`` with ``last.ckpt`` written every ``steps`` optimiser steps (its ``run:`` section)."""
    config["run"]["checkpoint_every_n_steps"] = steps
    return config


def start_fit(config: dict, path: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    """Write ``config`` to ``path`` and start ``python train.py fit --config path *args``."""
    path.write_text(yaml.safe_dump(config))
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]),
        **(env or {}),
    }
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), "fit", "--config", str(path), *args],
        cwd=cwd or path.parent,
        env=environment,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: finish() can stop every rank it launched
    )


def finish(process: subprocess.Popen, timeout: int = 300) -> subprocess.CompletedProcess:
    """Wait for a :func:`start_fit` run; past ``timeout``, kill it with every rank it started, then raise."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_fit(config: dict, path: Path, *args: str, **kwargs: Any) -> subprocess.CompletedProcess:
    return finish(start_fit(config, path, *args, **kwargs))


class FillDiskAtStep(L.Callback):
    """From optimiser step ``step`` on, every atomic write (checkpoints, exports) fails with ENOSPC after its first
    ``after_bytes`` bytes, as a full disk would (``common.atomic.open_temporary`` is the writers' one seam)."""

    def __init__(self, step: int, after_bytes: int = 4096) -> None:
        self.step = step
        self.after_bytes = after_bytes

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            import common.atomic

            common.atomic.open_temporary = full_disk_writer(self.after_bytes)


def full_disk_writer(after_bytes: int):
    """An ``open_temporary`` whose files take ``after_bytes`` bytes, then raise ENOSPC."""
    import errno
    import io

    class FullDisk(io.FileIO):
        def write(self, data) -> int:
            if self.tell() + len(data) > after_bytes:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    def open_temporary(handle: int, mode: dict):
        raw = FullDisk(handle, "w", closefd=True)
        return io.TextIOWrapper(raw, encoding="utf-8", newline="\n") if "encoding" in mode else raw

    return open_temporary
