"""Run several command-line runs (``train.py fit --config C --print_config``, a fit that must stop with one error
line, ``scripts/evaluate.py ...``) one after the other in one Python process.

Each command as its own process spent ~9 s on imports (torch, lightning, transformers); the tests that only check
what a command prints before any model loads ran ~40 of them. In one process they share the imports. As a script:
a JSON list of ``[script, *args]`` on stdin, a JSON list of ``{"returncode", "stdout", "stderr"}`` on stdout, one
per command, in order; each runs as ``python script args`` would (``__main__``, its ``sys.argv``), with its output
captured, and a command that raises reports status 1 and its traceback, as the interpreter would. From the tests:
:func:`run_batch` (the ``cli_batch`` fixture of tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import subprocess
import sys
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(command: list[str]) -> dict:
    script, *args = command
    stdout, stderr = io.StringIO(), io.StringIO()
    sys.argv = [script, *args]
    code = 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            if not isinstance(exit_.code, int | None):
                print(exit_.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - reported as the interpreter would, then the next command runs
            traceback.print_exc()
            code = 1
    return {"returncode": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


def run_batch(
    commands: dict, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300
) -> dict[object, subprocess.CompletedProcess]:
    """``{key: [script, *args]}`` run in one fresh process in ``cwd``, offline, with the repository importable and
    ``env`` added; ``{key: CompletedProcess}`` in the same order."""
    keys = list(commands)
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # the checkout, and scripts/ as `python scripts/X.py` puts its folder first (their `import installed`)
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "scripts")]),
        **(env or {}),
    }
    process = subprocess.run(
        [sys.executable, __file__], input=json.dumps([[str(part) for part in commands[key]] for key in keys]),
        cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-3000:]
    results = json.loads(process.stdout)
    return {
        key: subprocess.CompletedProcess(commands[key], r["returncode"], r["stdout"], r["stderr"])
        for key, r in zip(keys, results, strict=True)
    }


def main() -> None:
    commands = json.load(sys.stdin)
    results = [run(command) for command in commands]
    sys.__stdout__.write(json.dumps(results))


if __name__ == "__main__":
    main()
