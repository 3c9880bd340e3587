"""Atomic writes: a reader, a crash or a kill never finds half a file or half a folder.

Everything is first written beside its target (a temporary name in the same folder, so the final
``os.replace`` is a rename on one file system, which is atomic), flushed to disk, then renamed over the
target. The one module for it: text files (results, reports, the suite), tensors (the reference cache,
checkpoints) and whole folders (model exports, the tiny base).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def current_umask() -> int:
    """The process's umask. It can only be read by setting it, so it is set straight back."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: str | os.PathLike, text: bool = False) -> Iterator[IO[Any]]:
    """An open temporary file beside ``path`` that replaces ``path`` when the block ends without an error.

    The file is synced to disk before the rename and gets the mode a plain ``open()`` would give it
    (``mkstemp`` makes it private, 0600, which would hide it from the rest of the team). On an error the
    temporary file is removed and ``path`` is left as it was. The folder is created if needed.

    Args:
        path: the target file.
        text: open in text mode (UTF-8, ``\\n`` line ends) instead of binary.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        mode = {"mode": "w", "encoding": "utf-8", "newline": "\n"} if text else {"mode": "wb"}
        with os.fdopen(handle, **mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends kept as they are) to ``path`` atomically."""
    with atomic_file(path, text=True) as file:
        file.write(text)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically (checkpoints, the precomputed-reference cache)."""
    import torch

    with atomic_file(path) as file:
        torch.save(obj, file)


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh staging folder beside ``path`` that takes the place of ``path`` when the block succeeds.

    An existing ``path`` is first renamed aside and removed only once the new folder is in place, so at
    every moment either the old folder or the new one is there, never half of one. The staging folder is
    readable by all (0755: an export is meant to be shared; ``mkdtemp`` would make it owner-only). On an
    error it is removed and ``path`` is left as it was.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        staging.chmod(0o755)
        yield staging
        if out.exists():
            backup = out.with_name(f".{out.name}-old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(out, backup)
            os.replace(staging, out)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
