"""Writing the suite to disk, atomically: a reader never sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from evaluation.suite import PRETRAIN_FILE, TinySuite


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``.

    The rename is atomic on one file system, which is why the temporary file lives in the same
    folder. The folder is created if needed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def jsonl_text(rows: list[dict[str, Any]]) -> str:
    """One JSON object per line, non-ASCII kept as is, keys in their given order."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def corpus_text(documents: list[str]) -> str:
    """One document per line.

    Raises:
        ValueError: a document contains a line break (it would read back as several documents).
    """
    for number, document in enumerate(documents, start=1):
        if "\n" in document or "\r" in document:
            raise ValueError(f"Corpus document {number} contains a line break; documents must be one line.")
    return "".join(document + "\n" for document in documents)


def write_suite(suite: TinySuite, out_dir: Path) -> list[Path]:
    """Write every split as ``<name>.jsonl`` and the corpus as ``pretrain.txt``; return the paths."""
    paths = []
    for name, rows in suite.jsonl_splits().items():
        paths.append(out_dir / f"{name}.jsonl")
        atomic_write_text(paths[-1], jsonl_text(rows))
    paths.append(out_dir / PRETRAIN_FILE)
    atomic_write_text(paths[-1], corpus_text(suite.pretrain))
    return paths


def _umask() -> int:
    # The umask can only be read by setting it; set it straight back.
    mask = os.umask(0)
    os.umask(mask)
    return mask
