"""The worker process: one implementation of one case, stepped by the parent (``bench_vs_trl.py --worker SPEC``)."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

from benchmarks.vs_trl.held_out import held_out_loss
from benchmarks.vs_trl.protocol import Gate


def own_peak_rss() -> int:
    """Bytes: this process's own resident high-water mark (Linux ``VmHWM``).

    Not ``ru_maxrss``: Linux carries it over from the parent through fork and exec, so every worker would read at
    least the benchmark parent's resident memory at spawn time (2,007 MiB in a 2026-12-02 run, which floored
    seven rows at that same figure). ``ru_maxrss`` only where ``/proc`` is missing.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(spec_path: str) -> None:
    """One implementation of one case, in its own process."""
    import psutil
    import torch

    # Protocol lines go to the real stdout; everything libraries print goes to stderr.
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    # Only the side's own libraries are imported before the baseline RSS: TRL's process never loads Lightning.
    if spec["impl"].startswith("ours"):
        import lightning  # noqa: F401

        import lightning_modules.causal_lm  # noqa: F401
        from benchmarks.vs_trl.ours import run_ours as runner
    else:
        # `import trl` alone loads nothing (its modules load lazily: ~20 MiB); the trainers bring in transformers,
        # datasets and accelerate (~470 MiB with torch, against ours' ~445 MiB), so they are imported here, or the
        # "RSS over imports" column would charge TRL's imports to its training.
        from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer  # noqa: F401

        from benchmarks.vs_trl.trl_runner import run_trl as runner
    baseline_rss = psutil.Process().memory_info().rss
    if sys.stdin.readline().strip() != "start":
        raise SystemExit("benchmark parent went away")
    gate = Gate(proto, spec["total_steps"])
    start = time.perf_counter()
    model, extra = runner(spec, gate)
    total = time.perf_counter() - start
    peak_rss = own_peak_rss()
    result = {
        "case": spec["case"],
        "impl": spec["impl"],
        "step_seconds": gate.log.seconds,
        "step_tokens": gate.log.tokens,
        "step_loss_tokens": gate.log.loss_tokens,
        "step_row_lengths": gate.log.row_lengths,
        "step_others_cores": gate.log.others_cores,
        "losses": gate.log.losses,
        "peak_rss_bytes": peak_rss,
        "baseline_rss_bytes": baseline_rss,
        "rss_at_first_step_bytes": gate.rss_at_first_step,
        "wall_s": total,
        **extra,
    }
    result["held_out_loss"] = held_out_loss(model, spec)
    Path(spec["result_path"]).write_text(json.dumps(result))
    proto.write("finished\n")
    proto.flush()
