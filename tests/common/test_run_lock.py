"""One process per run folder (common/run_lock.py): a second training or pipeline stops at once naming the first;
a killed holder leaves nothing stuck; the ranks a launcher starts do not lock."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.errors import RunInUseError
from common.run_lock import LOCK_NAME, lock_run_folder, release_run_folders

REPO = Path(__file__).resolve().parents[2]
HOLD = (
    "import sys, time; from common.run_lock import lock_run_folder; lock_run_folder(sys.argv[1]); "
    "print('held', flush=True); time.sleep(120)"
)


def hold(folder: Path) -> subprocess.Popen:
    """Another process that takes ``folder``'s lock and keeps it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    yield
    release_run_folders()


def test_a_second_process_is_refused_naming_the_first_and_a_killed_holder_frees_the_folder(tmp_path, clean_env):
    folder = tmp_path / "runs" / "dpo"
    holder = hold(folder)
    try:
        with pytest.raises(RunInUseError, match=rf"{folder} is being written by another run \(PID {holder.pid} on "):
            lock_run_folder(folder)
        with pytest.raises(RunInUseError, match=r": -c .*\)\. Wait for it to finish or stop it"):
            lock_run_folder(folder)
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: nothing runs to let the lock go
        holder.wait()
    assert lock_run_folder(folder) == folder / LOCK_NAME  # the kernel dropped the dead holder's lock
    assert str(os.getpid()) in (folder / LOCK_NAME).read_text()
    assert lock_run_folder(folder) == folder / LOCK_NAME  # taking it twice in one process is no conflict


def test_a_launched_rank_does_not_lock(tmp_path, clean_env, monkeypatch):
    folder = tmp_path / "run"
    holder = hold(folder)
    try:
        monkeypatch.setenv("LOCAL_RANK", "1")  # what Lightning's launcher sets in the ranks it starts
        assert lock_run_folder(folder) is None
    finally:
        holder.kill()
        holder.wait()


def test_train_py_stops_before_loading_the_model_when_its_run_folder_is_in_use(tmp_path, clean_env):
    folder = tmp_path / "runs" / "sft"
    holder = hold(folder)
    try:
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs/tiny/sft.yaml"),
             "--run.dir", str(folder), "--run.export_dir", str(tmp_path / "out"),
             "--model.init_args.model_name_or_path", str(tmp_path / "no-model-here")],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
        )  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1
    # the lock's error, not the missing model's: nothing was loaded
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {folder} is being written by another run (PID")
    assert time.monotonic() - started < 120


def test_a_second_pipeline_of_the_same_set_stops_naming_the_first(tmp_path, clean_env):
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    (tmp_path / "scripts").mkdir()
    for script in ("run_study.py", "installed.py"):
        shutil.copy(REPO / "scripts" / script, tmp_path / "scripts")
    holder = hold(tmp_path / "runs" / "tiny")
    try:
        result = subprocess.run(
            [sys.executable, "scripts/run_study.py", "tiny"], cwd=tmp_path, capture_output=True, text=True,
            timeout=120, env={**os.environ, "PYTHON": "false"},
        )  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: runs/tiny is being written by another run (PID")
