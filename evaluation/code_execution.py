"""Running a model's Python program in a child process: how HumanEval's pass@1 is scored here.

:func:`run_python` runs one program with ``sys.executable -I`` (isolated mode: no ``PYTHON*`` variables, no
user site-packages, no script directory on ``sys.path``) in a fresh temporary directory that is removed
afterwards, with:

- a wall-clock timeout: the child leads its own process group, and the whole group is killed with SIGKILL
  when the time is up (and after every run, so nothing it started outlives it);
- resource limits the child sets on itself before the program runs (``resource.setrlimit``): address space,
  CPU seconds, file size, no core files, and ``RLIMIT_NPROC`` 0 (no new processes or threads) where the
  platform has it; each limit the platform refuses is skipped;
- a minimal environment (``PATH``, ``HOME`` and ``TMPDIR`` in the temporary directory, a UTF-8 locale):
  nothing of the parent's environment, tokens included, reaches the child;
- a preamble that replaces ``socket.socket``, ``socket.create_connection``, name resolution and friends with
  functions that raise ``PermissionError``, and does the same for ``os.fork``, ``os.system``,
  ``subprocess.Popen`` and friends (``RLIMIT_NPROC`` does not bind root, the usual user in a container).

This guards against a confused model's accidents: a loop that never ends, a list that eats the memory, a
file written into the repository, a download, a fork that never stops. It is **not a security sandbox**:
the child runs as the same user, can read and write everything that user can outside its directory, and
can get around the Python-level guards (``ctypes``, ``_posixsubprocess``, a re-imported module). Code you
have reason to distrust (a model you did not train, a benchmark you did not read) belongs in a container or
a VM without network (``docker run --network none --read-only ...``).

HumanEval's program is the one lm-eval's ``code_eval`` metric runs: the candidate (the prompt and the
model's completion), a newline, then the test case (the problem's ``test``, a newline and
``check(<entry_point>)``); it passes when it runs to its end without an exception (:func:`code_eval_outcome`,
:func:`humaneval_outcome`). A program that leaves early (``sys.exit``, ``os._exit``) does not pass: the
bootstrap marks the end of the program, and only a marked end with exit status 0 is ``passed``.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from common.errors import ConfigError

CODE_TIMEOUT_ENV = "SFT_DPO_CODE_TIMEOUT_S"
"""The environment variable that sets the wall-clock limit of each executed program, in seconds (the
benchmark stage sets it; lm-eval's metric functions take no settings of ours)."""
DEFAULT_CODE_TIMEOUT_S = 10.0
"""The limit when :data:`CODE_TIMEOUT_ENV` is unset. lm-eval's ``code_eval`` allows 3 s of execution; ours also
covers the interpreter's start on a busy machine, and a correct HumanEval solution runs in milliseconds."""
DETAIL_CHARS = 300
"""The longest detail kept (the last line of the child's stderr)."""

Status = Literal["passed", "failed", "timeout"]


@dataclass(frozen=True)
class ResourceLimits:
    """What the child may use, set with ``resource.setrlimit`` in the child before the program runs."""

    address_space_bytes: int = 4 * 2**30
    """RLIMIT_AS: virtual memory; beyond it an allocation raises MemoryError."""
    file_size_bytes: int = 16 * 2**20
    """RLIMIT_FSIZE: the largest file the child may write (its stderr file included)."""
    cpu_margin_s: int = 1
    """RLIMIT_CPU is the wall-clock timeout rounded up plus this: the timeout normally ends a run first."""


@dataclass(frozen=True)
class ExecutionResult:
    """How one program ended."""

    status: Status
    """``passed`` (ran to its end, exit status 0), ``failed`` (an exception, an early exit, a signal) or
    ``timeout`` (killed at the wall-clock limit, or by the CPU-time limit)."""
    detail: str
    """A short reason: the last line of the child's stderr (``AssertionError``, ``NameError: ...``), the
    timeout, or the signal; empty when it passed."""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# Runs in the child as `python -I -c _BOOTSTRAP <program> <done marker> <AS> <CPU s> <FSIZE>`: limits, guards,
# then the program as __main__; the marker file is written only when the program reached its end.
_BOOTSTRAP = """
import resource, runpy, sys

def _limits(address_space, cpu_s, file_size):
    wanted = {"RLIMIT_AS": address_space, "RLIMIT_CPU": cpu_s, "RLIMIT_FSIZE": file_size, "RLIMIT_CORE": 0,
              "RLIMIT_NPROC": 0}
    for name, value in wanted.items():
        if hasattr(resource, name):
            kind = getattr(resource, name)
            hard = resource.getrlimit(kind)[1]
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            try:
                resource.setrlimit(kind, (value, value))
            except (ValueError, OSError):
                pass

def _guards():
    import _socket, os, socket, subprocess

    def no_network(*args, **kwargs):
        raise PermissionError("network access is disabled for executed code (evaluation/code_execution.py)")

    def no_process(*args, **kwargs):
        raise PermissionError("starting processes is disabled for executed code (evaluation/code_execution.py)")

    class NoNetworkSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            no_network()

    socket.socket = _socket.socket = NoNetworkSocket
    for name in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo", "gethostbyname",
                 "gethostbyname_ex", "gethostbyaddr"):
        setattr(socket, name, no_network)
    for name in ("fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "spawnv", "spawnve",
                 "spawnvp", "spawnvpe", "execv", "execve", "execvp", "execvpe"):
        if hasattr(os, name):
            setattr(os, name, no_process)
    subprocess.Popen = no_process

program, done_marker = sys.argv[1], sys.argv[2]
_limits(*map(int, sys.argv[3:6]))
_guards()
del _limits, _guards
sys.argv = [program]
try:
    runpy.run_path(program, run_name="__main__")
except SystemExit as early_exit:
    sys.stderr.write(f"SystemExit: the program exited before its end (code {early_exit.code!r})\\n")
    raise SystemExit(1)
open(done_marker, "w").close()
"""


def _last_line(path: Path) -> str:
    """The last non-empty line of a (possibly large) text file, cut to DETAIL_CHARS."""
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 8192))
        lines = [line.strip() for line in handle.read().decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1][:DETAIL_CHARS] if lines else ""


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the child's process group (the child and anything it started), then reap the child."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def run_python(program: str, timeout_s: float, limits: ResourceLimits = ResourceLimits()) -> ExecutionResult:
    """Run ``program`` (Python source) in a child process under the guards of this module's docstring.

    Args:
        program: the whole program; it runs as ``__main__`` from a file in its own temporary directory.
        timeout_s: wall-clock seconds before the child's process group is killed (start-up included).
        limits: address space, file size and the CPU-time margin set in the child.
    """
    if not timeout_s > 0:
        raise ConfigError(f"the code execution timeout must be a positive number of seconds, got {timeout_s!r}")
    with tempfile.TemporaryDirectory(prefix="code_execution_", ignore_cleanup_errors=True) as root:
        work = Path(root) / "work"
        work.mkdir()
        program_path = work / "program.py"
        program_path.write_text(program, encoding="utf-8")
        done_marker, stderr_path = Path(root) / "done", Path(root) / "stderr.txt"
        cpu_s = math.ceil(timeout_s) + limits.cpu_margin_s
        arguments = [str(program_path), str(done_marker), str(limits.address_space_bytes), str(cpu_s),
                     str(limits.file_size_bytes)]
        environment = {"PATH": os.defpath, "HOME": str(work), "TMPDIR": str(work), "LC_ALL": "C.UTF-8"}
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-I", "-c", _BOOTSTRAP, *arguments],
                cwd=work,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # its own process group: one killpg ends everything it started
            )
            try:
                returncode = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                return ExecutionResult("timeout", f"timed out after {timeout_s:g} s (wall clock)")
            finally:
                _kill_group(process)
        if returncode == 0 and done_marker.exists():
            return ExecutionResult("passed", "")
        if returncode == -signal.SIGXCPU:
            return ExecutionResult("timeout", f"CPU time limit of {cpu_s} s reached")
        detail = _last_line(stderr_path)
        if not detail and returncode < 0:
            detail = f"killed by signal {-returncode} ({signal.strsignal(-returncode)})"
        if not detail and returncode == 0:
            detail = "exit status 0 before the program's end (os._exit?)"
        return ExecutionResult("failed", detail or f"exit status {returncode}")


def code_eval_outcome(candidate: str, test_case: str, timeout_s: float) -> ExecutionResult:
    """One candidate against one test case, assembled as lm-eval's ``code_eval`` does: candidate, newline, test."""
    return run_python(candidate + "\n" + test_case, timeout_s)


def humaneval_outcome(completion_program: str, test: str, entry_point: str, timeout_s: float) -> ExecutionResult:
    """A HumanEval problem's tests on a program (the prompt followed by the model's completion).

    The test case is the task's ``doc_to_target`` in lm-eval's ``humaneval`` task: the problem's ``test``
    (which defines ``check(candidate)``), a newline and ``check(<entry_point>)``.
    """
    return code_eval_outcome(completion_program, f"{test}\ncheck({entry_point})", timeout_s)


def code_timeout_s(environ: Mapping[str, str] | None = None) -> float:
    """The wall-clock limit per executed program: :data:`CODE_TIMEOUT_ENV` in seconds, or the default.

    Args:
        environ: Where to read the variable; the process environment when None.
    """
    raw = os.environ.get(CODE_TIMEOUT_ENV, "") if environ is None else environ.get(CODE_TIMEOUT_ENV, "")
    value = raw.strip()
    if not value:
        return DEFAULT_CODE_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(f"{CODE_TIMEOUT_ENV}={value!r}: set it to a positive number of seconds, e.g. 10")
    return seconds
