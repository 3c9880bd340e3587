"""JSON Lines as this project writes and reads its own files (the suite, prompts, data it generated).

User data goes through ``datamodules.sources.read_rows`` instead: it checks every row and names the file,
the row and the field of a bad one. These two are for files the project itself wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def jsonl_text(rows: list[dict[str, Any]]) -> str:
    """One JSON object per line, non-ASCII kept as is, keys in their given order."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The objects of a JSON Lines file, in order; blank lines are passed over."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
