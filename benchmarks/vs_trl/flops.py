"""Model FLOPs of a step, the matmul peak they are measured against, and throughput over a set of steps."""

from __future__ import annotations

import time


def compute_dtype(precision: str):
    """The matmul dtype of a Lightning precision name (``bf16-mixed`` -> bfloat16, ``32-true`` -> float32)."""
    import torch

    from common.precision import COMPUTE_DTYPES

    return getattr(torch, COMPUTE_DTYPES[precision])


def matmul_peak_gflops(threads: int, precision: str, size: int = 2048, repeats: int = 20) -> float:
    """``size``-cubed matmul throughput in the run's compute dtype, the MFU denominator: the 80th percentile of
    ``repeats`` timings.

    Taken after waiting for idle CPUs, before the first case, between cases and after the last; the run keeps
    the highest (a busy machine halves it, which would inflate the MFU).
    """
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(size, size, dtype=compute_dtype(precision))
    b = torch.randn(size, size, dtype=compute_dtype(precision))
    for _ in range(3):
        a @ b
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
    return sorted(rates)[int(0.8 * (repeats - 1))]


def step_flops(result: dict, setup: dict, task: str, lora: bool, step: int) -> float:
    """Model FLOPs of one training step (see the package docstring, ``benchmarks.vs_trl``)."""
    n_body = setup["decoder_parameters"]
    head = setup["vocab_size"] * setup["hidden"]
    tokens = result["step_tokens"][step]
    loss_tokens = result["step_loss_tokens"][step]
    per_token, per_head_token = (4 * n_body, 4 * head) if lora else (6 * n_body, 6 * head)
    flops = per_token * tokens + per_head_token * loss_tokens
    if lora:
        flops += 6 * setup["lora_parameters"] * tokens
    attention = sum(6 * n * n * setup["query_width"] * setup["layers"] for n in result["step_row_lengths"][step])
    return flops + attention


def throughput(result: dict, steps: list[int], setup: dict, task: str, lora: bool, peak: float) -> dict:
    seconds = sum(result["step_seconds"][i] for i in steps)
    tokens = sum(result["step_tokens"][i] for i in steps)
    flops = sum(step_flops(result, setup, task, lora, i) for i in steps)
    return {
        "steps": len(steps),
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "s_per_step": seconds / len(steps),
        "mfu": flops / seconds / (peak * 1e9),
    }
