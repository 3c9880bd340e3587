"""Every entry point run by an interpreter without the project's install: one ``error:`` line saying how to run it,
not a ModuleNotFoundError traceback (scripts/installed.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import installed
import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRY_POINTS = ["train.py", *sorted(f"scripts/{path.name}" for path in (REPO / "scripts").glob("*.py")
                                    if path.name != "installed.py")]  # fmt: skip


def test_every_script_is_listed():
    assert "scripts/evaluate.py" in ENTRY_POINTS and "scripts/run_study.py" in ENTRY_POINTS
    assert len(ENTRY_POINTS) >= 10


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_an_interpreter_without_the_install_gets_one_error_line(entry_point, tmp_path):
    # -S: no site-packages, so neither the dependencies nor the editable install; run from elsewhere, as a user might
    result = subprocess.run([sys.executable, "-S", str(REPO / entry_point), "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {sys.executable} cannot import ")
    assert "torch" in line and "lightning" in line
    # train.py sits beside the packages, so only the dependencies are missing; a script in scripts/ lacks both
    assert ("common" in line) == (entry_point != "train.py")
    assert line.endswith(f".venv/bin/python {REPO / entry_point}")


def test_the_fix_names_the_checkouts_venv_or_says_to_make_it():
    venv = REPO / ".venv" / "bin" / "python"
    other = installed.message(["torch"], "/usr/bin/python3", "train.py")
    assert other == (
        f"error: /usr/bin/python3 cannot import torch (the project is not installed for it): run {venv} train.py"
        if venv.is_file()
        else f"error: /usr/bin/python3 cannot import torch (the project is not installed for it): run `make venv` "
        f"in {REPO}, then .venv/bin/python train.py"
    )
    # the checkout's own .venv lacking a package: its install is incomplete, so make it again
    same = installed.message(["common"], str(venv), "train.py")
    assert same.endswith(f"run `make venv` in {REPO}, then .venv/bin/python train.py")


def test_this_interpreter_has_everything():
    assert installed.missing() == []
    assert installed.missing(("common", "no_such_package_here")) == ["no_such_package_here"]
