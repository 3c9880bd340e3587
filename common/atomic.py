"""Atomic writes: a reader, a crash or a kill never finds half a file or half a folder.

Everything is first written beside its target (a temporary name in the same folder, so the final
``os.replace`` is a rename on one file system, which is atomic), flushed to disk, then renamed over the
target. The one module for it: text files (results, reports, the suite), tensors (the reference cache,
checkpoints) and whole folders (model exports, the tiny base).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from common.errors import DiskFullError


def current_umask() -> int:
    """The process's umask. It can only be read by setting it, so it is set straight back."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


FULL = (errno.ENOSPC, errno.EDQUOT)
"""No space left on the device, or the user's quota exceeded."""


def open_temporary(handle: int, mode: dict[str, Any]) -> IO[Any]:
    """The temporary file's writer (one seam, so the tests can fill the disk)."""
    return os.fdopen(handle, **mode)


def disk_full(error: OSError, target: Path, needed: int) -> DiskFullError:
    """The one-line error for ``error`` (ENOSPC / EDQUOT) while writing ``target``: where, how much is free, about
    how much is needed, and that the previous version is intact."""
    free = shutil.disk_usage(target.parent).free
    kept = f"the previous {target.name} is intact" if target.exists() else f"nothing was written at {target}"
    return DiskFullError(
        f"No space left on the device while writing {target} ({error.strerror}): {free / 2**20:.1f} MiB free "
        f"there, about {needed / 2**20:.1f} MiB needed; {kept}. Free some space (or point the run elsewhere) and "
        "rerun; a training run resumes with --ckpt_path last."
    )


def full_disk_cause(error: BaseException | None) -> OSError | None:
    """The ENOSPC / EDQUOT ``OSError`` behind ``error``, if any (``torch.save`` turns one into a ``RuntimeError``
    about the zip writer's position, with the ``OSError`` as its context)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in FULL:
            return error
        error = error.__cause__ or error.__context__
    return None


def size_of(path: Path) -> int:
    """Bytes under ``path`` (a file or a folder); 0 when it does not exist."""
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file()) if path.is_dir() else 0


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
        try:
            with open_temporary(handle, mode) as file:
                yield file
                file.flush()
                os.fsync(file.fileno())
        except Exception as error:
            full = full_disk_cause(error)
            if full is None:
                raise
            # the part written so far, or the version it replaces: about what the next try needs
            needed = max(Path(temporary).stat().st_size if Path(temporary).exists() else 0, size_of(target))
            raise disk_full(full, target, needed) from error
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
        try:
            yield staging
        except Exception as error:
            full = full_disk_cause(error)
            if full is None:
                raise
            raise disk_full(full, out, max(size_of(staging), size_of(out))) from error
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
