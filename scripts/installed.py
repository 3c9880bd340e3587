"""Imported first by every entry point: one ``error:`` line instead of a ModuleNotFoundError when the interpreter
running it lacks the project's install.

The scripts import the project's packages (``common``, ``evaluation``...) from the editable install that
``make venv`` puts into ``.venv``, not by editing ``sys.path``; under another interpreter the first import
would fail with a traceback naming a package the user never heard of. This module uses the standard library only,
and asks the import system (without importing anything) whether each needed package can be found.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

NEEDED = ("common", "torch", "lightning", "transformers", "jsonargparse")
"""The project itself (its packages) and the dependencies every entry point imports first."""


def missing(needed: tuple[str, ...] = NEEDED) -> list[str]:
    """The packages of ``needed`` this interpreter cannot import."""
    return [name for name in needed if importlib.util.find_spec(name) is None]


def message(absent: list[str], executable: str, script: str) -> str:
    """What to do about ``absent``: run the script with the checkout's ``.venv``, or make it first."""
    root = Path(__file__).resolve().parents[1]
    venv = root / ".venv" / "bin" / "python"
    if venv.is_file() and Path(executable) != venv:
        fix = f"run {venv} {script}"
    else:  # no .venv yet, or one whose install is incomplete
        fix = f"run `make venv` in {root}, then .venv/bin/python {script}"
    return f"error: {executable} cannot import {', '.join(absent)} (the project is not installed for it): {fix}"


if absent := missing():
    sys.exit(message(absent, sys.executable, sys.argv[0] if sys.argv and sys.argv[0] else "<script>"))
