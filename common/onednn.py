"""A cap on oneDNN's primitive cache for bf16 on a CPU, where its default lets the resident memory grow.

oneDNN (torch's CPU kernels for bf16 matmuls) keeps each primitive it builds, keyed by shape, up to 1,024 of
them. A packed or padded batch has a new length nearly every step, so in bf16 each step adds primitives that keep
their memory, and a run's resident set climbs step after step (fp32 matmuls do not go through that cache). 64
entries hold one step's primitives (forward and backward of every layer shape). The benchmark's DPO lever case
``dpo_onednn_cache_levers`` measured it (figures in benchmarks/README.md). oneDNN reads the variable when it
builds its first primitive, so this runs before the first bf16 matmul of the process; a value the environment
already sets is kept.
"""

from __future__ import annotations

import os

CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY")
"""The variable and its older name; either set by the user wins."""
CPU_BF16_CACHE_CAPACITY = 64


def cap_primitive_cache(device_type: str, precision: str | None) -> bool:
    """Set ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` for a bf16 run on a CPU, unless the environment sets it already.

    Args:
        device_type: ``cpu``, ``cuda``, ... (only ``cpu`` is capped: a GPU's kernels do not use oneDNN).
        precision: the run's precision (``bf16-mixed``, ``bf16-true``, ``32-true``, ...); only bf16 is capped.

    Returns:
        Whether this call set the variable.
    """
    if device_type != "cpu" or not str(precision or "").startswith("bf16"):
        return False
    if any(name in os.environ for name in CACHE_VARIABLES):
        return False
    os.environ[CACHE_VARIABLES[0]] = str(CPU_BF16_CACHE_CAPACITY)
    return True
