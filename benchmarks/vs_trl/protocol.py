"""The lock-step between the parent and its worker processes, and the CPU-load readings it rests on.

Parent -> worker on the worker's stdin: ``start`` (set up), then ``go`` before each step, ``release`` after the
last step of every implementation. Worker -> parent on its real stdout: ``ready`` (about to step), ``done`` (step
timed), ``finished`` (result written). Only one process computes at a time, and each step records how many cores
other processes kept busy meanwhile.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

QUIET_CORES = 0.25
"""A step is quiet when other processes kept fewer than this many cores busy on average during it."""


@dataclass
class StepLog:
    """What a worker records per training step."""

    seconds: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    loss_tokens: list[int] = field(default_factory=list)
    row_lengths: list[list[int]] = field(default_factory=list)
    others_cores: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def busy_cpu_seconds() -> float:
    """CPU time spent by every process on the machine so far (``/proc/stat``: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuWindow:
    """A stretch of this process's work, from creation to :meth:`close`: its wall time, and how many cores other
    processes kept busy on average meanwhile (all the machine's busy CPU time but this process's)."""

    def __init__(self) -> None:
        self._start = (time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds())

    def close(self) -> tuple[float, float]:
        """``(wall seconds, others' cores)`` since creation."""
        wall = time.perf_counter() - self._start[0]
        others = (busy_cpu_seconds() - self._start[1]) - (own_cpu_seconds() - self._start[2])
        return wall, max(0.0, others) / wall


class Gate:
    """Lock-step with the parent: announce the step, wait for ``go``, time it, report ``done``.

    Also measures how many cores other processes kept busy during the step: the machine is shared, and a
    step that ran beside someone else's job is reported apart from the quiet ones. After its last step
    (``total_steps``) the worker waits for ``release``: the parent lets the workers finish (tear down, compute
    the held-out loss) one at a time after every implementation's last step, so that work never overlaps
    another implementation's timed step (it did: at 117M the last step of the later rows ran beside it).
    """

    def __init__(self, proto, total_steps: int | None = None) -> None:
        self.proto = proto
        self.total_steps = total_steps
        self.log = StepLog()
        self._window: CpuWindow | None = None
        self.rss_at_first_step: int | None = None

    def begin(self) -> None:
        if self.rss_at_first_step is None:
            import psutil

            self.rss_at_first_step = psutil.Process().memory_info().rss
        self.proto.write("ready\n")
        self.proto.flush()
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("benchmark parent went away")
        self._window = CpuWindow()

    def end(self, tokens: int, loss_tokens: int, row_lengths: list[int]) -> None:
        wall, others_cores = self._window.close()
        self.log.seconds.append(wall)
        self.log.others_cores.append(others_cores)
        self.log.tokens.append(tokens)
        self.log.loss_tokens.append(loss_tokens)
        self.log.row_lengths.append(row_lengths)
        self.proto.write("done\n")
        self.proto.flush()
        if len(self.log.seconds) == self.total_steps and sys.stdin.readline().strip() != "release":
            raise SystemExit("benchmark parent went away")


def read_line(process: subprocess.Popen, expected: str, name: str, log_path: Path) -> None:
    line = process.stdout.readline().strip()
    if line != expected:
        process.kill()
        tail = log_path.read_text()[-4000:] if log_path.exists() else ""
        code = process.wait(timeout=60)
        # The processes of a case are alive together: at ~120M parameters five of them outgrew 24 GiB once.
        hint = " (killed: out of memory? the processes of a case run side by side)" if code == -9 and not line else ""
        raise RuntimeError(f"{name}: expected {expected!r}, got {line!r} (exit {code}){hint}.\n{tail}")


class QuietWait:
    """Before a timed step, wait (within a budget) until other processes leave the CPUs idle.

    The machine may be shared: a step that starts while another job computes runs several times slower, as
    two busy threads then share cores with it. Waiting costs at most ``per_step`` seconds a step and
    ``budget`` seconds in all; steps that still overlap other work are reported apart (``QUIET_CORES``).
    """

    def __init__(self, per_step: float, budget: float, window: float = 0.2) -> None:
        self.per_step, self.budget, self.window = per_step, budget, window
        self.waited = 0.0

    def wait(self) -> None:
        start = time.perf_counter()
        limit = min(self.per_step, self.budget - self.waited)
        while time.perf_counter() - start < limit:
            busy, tick = busy_cpu_seconds(), time.perf_counter()
            time.sleep(self.window)
            if (busy_cpu_seconds() - busy) / (time.perf_counter() - tick) < QUIET_CORES:
                break
        self.waited += time.perf_counter() - start
