"""One training process per run folder: an OS lock on ``<run.dir>/.lock``, taken before the model loads.

Two trainings (or two pipelines) writing one run folder would interleave checkpoints, TensorBoard events and the
export. The second one stops at once, with one error line naming the first (its PID, host, start and command,
which the holder writes into the file). The lock is ``flock``'s: the kernel drops it when the holding process
ends, however it ends (a crash, SIGKILL, a lost node), so a dead run never leaves it stuck; the file stays, its
contents then describe a run that no longer holds it. Under DDP or FSDP only the launching process (rank 0 of
node 0) takes it: the ranks it starts are the same run.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from common.errors import RunInUseError

LOCK_NAME = ".lock"
_held: dict[str, int] = {}  # run folder -> the open descriptor that holds its lock, for this process's lifetime


def is_launching_process() -> bool:
    """Whether this process is rank 0 of node 0, or not a launched rank at all (the ranks a launcher starts set
    ``RANK`` / ``LOCAL_RANK`` / ``NODE_RANK``)."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def lock_run_folder(folder: str | os.PathLike) -> Path | None:
    """Take ``folder``'s lock for the rest of this process (a no-op in a launched rank, or when held already).

    Returns:
        The lock file's path; ``None`` where this process does not lock (a launched rank).

    Raises:
        RunInUseError: another live process holds it; the message names that process and the ways out.
    """
    if not is_launching_process():
        return None
    folder = Path(folder)
    path = folder / LOCK_NAME
    key = str(folder.resolve())
    if key in _held:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = holder_of(path)
        os.close(descriptor)
        raise RunInUseError(
            f"{folder} is being written by another run ({holder}). Wait for it to finish or stop it, or give this "
            "run another run.dir (and run.export_dir)."
        ) from None
    os.ftruncate(descriptor, 0)
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(sys.argv),
    }
    os.write(descriptor, json.dumps(record).encode())
    _held[key] = descriptor  # kept open: closing it would release the lock
    return path


def holder_of(path: Path) -> str:
    """``PID 123 on host, since <start>: <command>``, from the lock file (what the holder wrote)."""
    try:
        record = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        record = {}
    if not record:
        return "a process that has not written its details yet"
    return f"PID {record.get('pid')} on {record.get('host')}, since {record.get('started')}: {record.get('command')}"


def release_run_folders() -> None:
    """Let every lock this process holds go before it ends (the CLI's ``main`` returning to an in-process caller,
    which may start the next fit on the same folder)."""
    while _held:
        os.close(_held.popitem()[1])
