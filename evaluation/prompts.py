"""Reading the evaluation prompts, with the same row checks and bad-row errors as the training data.

A row is ``{category, prompt}`` (the project's prompt files) or ``{category, instruction, input}`` (held-out
Alpaca rows, asked with their input block exactly as SFT saw such rows), with an optional ``check``
(:mod:`evaluation.checkers`). A row that cannot be used is a :class:`datamodules.sources.DataError`
naming the file, the row and the field, as for training data (:mod:`datamodules.sources`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.provenance import is_local
from datamodules.sources import BadRow, BadRowPolicy, DataError, PreparationReport, collect, require_text
from evaluation.checkers import check_response


def parse_prompt_row(record: Any) -> dict[str, Any]:
    """``{category, prompt, input, check}`` of one prompt row.

    Raises:
        BadRow: a missing or non-string category or prompt, an input that is not a string, or a check that
            is not an object of a known type with the fields that type needs.
    """
    category = require_text(record, "category")
    if "prompt" not in record and "instruction" not in record:
        raise BadRow("prompt", "missing field", "a prompt row needs 'prompt' or 'instruction'")
    prompt = require_text(record, "prompt" if "prompt" in record else "instruction")
    context = record.get("input")
    if context is not None and not isinstance(context, str):
        raise BadRow("input", "wrong type", f"{type(context).__name__} where a string is expected")
    check = record.get("check")
    if check is not None:
        if not isinstance(check, dict):
            raise BadRow("check", "wrong type", f"{type(check).__name__} where an object is expected")
        try:
            check_response(check, "")  # an unknown type or a missing field fails here, not after generation
        except ValueError as error:
            raise BadRow("check", "invalid check", str(error)) from None
    return {"category": category, "prompt": prompt, "input": context or "", "check": check}


def read_prompts(paths: str | list[str], on_bad_row: BadRowPolicy = "error") -> list[dict[str, Any]]:
    """Evaluation prompts from JSONL files, in order, as ``{category, prompt, input, check}`` rows.

    Raises:
        DataError: a missing file, a bad row (under ``on_bad_row: error``), or a file without usable rows.
    """
    sources = [paths] if isinstance(paths, str) else list(paths)
    for source in sources:
        if is_local(source, "dataset") and not Path(source).exists():
            raise DataError(f"{source}: prompt file not found (expected JSONL rows with category, prompt, check).")
    report = PreparationReport("evaluation prompts", on_bad_row)
    rows = collect(sources, parse_prompt_row, report)
    report.kept = len(rows)
    if on_bad_row == "skip":
        report.log()
    return [{key: row[key] for key in ("category", "prompt", "input", "check")} for row in rows]
