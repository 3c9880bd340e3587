"""Writing the suite to disk, atomically (a reader never sees half a file), and a summary line per file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from common.atomic import atomic_write_text
from common.jsonl import jsonl_text, read_jsonl
from tiny_world.suite import PRETRAIN_FILE, TinySuite


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


def file_summary(path: Path) -> str:
    """``path: N rows, S KiB, per category ...`` (documents and words for the corpus)."""
    size = f"{path.stat().st_size / 1024:.1f} KiB"
    if path.name == PRETRAIN_FILE:
        lines = path.read_text(encoding="utf-8").splitlines()
        words = sum(len(line.split()) for line in lines)
        return f"{path}: {len(lines)} documents, {words} words, {size}"
    rows = read_jsonl(path)
    categories = Counter(row["category"] for row in rows)
    per_category = ", ".join(f"{category} {count}" for category, count in sorted(categories.items()))
    return f"{path}: {len(rows)} rows, {size} ({per_category})"
