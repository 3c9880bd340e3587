"""Run several config-reading commands (``train.py fit --config C --print_config``...) in one Python process.

Each command as its own process spent ~9 s on imports, and the 20-odd configs side by side took ~95 s of a 2-core
CI machine; in one process they share the imports. Read on stdin: a JSON list of ``[script, *args]``; written to
stdout: a JSON list of ``{"returncode", "stdout", "stderr"}``, one per command, in order. Each runs as
``python script args`` would (``__main__``, its ``sys.argv``), with its output captured; a command that raises
reports status 1 and its traceback, as the interpreter would.
"""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import sys
import traceback


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


def main() -> None:
    commands = json.load(sys.stdin)
    results = [run(command) for command in commands]
    sys.__stdout__.write(json.dumps(results))


if __name__ == "__main__":
    main()
