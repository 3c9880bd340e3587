"""Ours against TRL on the same machine: the same model, data, batch size, optimiser, precision and threads.

The entry point of ``benchmarks.vs_trl`` (what is measured and how: that package's docstring), and of each of its
worker processes, which the parent starts as this script with ``--worker SPEC``::

    python benchmarks/bench_vs_trl.py                  # every case, 15-25 minutes on a 2-core CPU
    python benchmarks/bench_vs_trl.py --cases sft_full --steps 6
    python benchmarks/bench_vs_trl.py --cases sft_full_levers dpo_full_levers   # each optimisation undone
"""

from __future__ import annotations

from benchmarks.vs_trl.run import main

if __name__ == "__main__":
    main()
