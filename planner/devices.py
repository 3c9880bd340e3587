"""The accelerators a plan is made for: dense bf16 peak, memory, and what the framework adds on top of tensors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.precision import Hardware, detect_hardware

GiB = 2**30
GB = 10**9


@dataclass(frozen=True)
class Device:
    """One accelerator of a run.

    Attributes:
        name: e.g. ``H100 SXM 80GB``.
        hardware: what the precision rule (``common.precision``) sees, to resolve ``precision: auto``.
        peak_flops: dense bf16 peak in FLOP/s (no sparsity); ``None`` on a CPU (time not predicted).
        memory_bytes: the memory a run must fit in.
        fixed_overhead_bytes: memory the framework holds outside tensors (CUDA context, library workspaces).
        fragmentation: share of the activation and logits memory that the allocator holds on top (freed
            blocks it keeps for reuse, blocks split to odd sizes).
        dropout_mask_bytes: bytes per element of a dropout mask saved for backward: CUDA's fused dropout
            keeps a bool mask; on a CPU torch multiplies by a mask in the input's own dtype.
        memory_bandwidth: peak memory bandwidth in bytes/s (what a decode step, reading every weight once, is
            bound by); ``None`` on a CPU.
    """

    name: str
    hardware: Hardware
    peak_flops: float | None
    memory_bytes: int
    fixed_overhead_bytes: int
    fragmentation: float
    dropout_mask_bytes: int | None  # None: the input's dtype
    memory_bandwidth: float | None = None

    @property
    def is_cuda(self) -> bool:
        return self.hardware.device == "cuda"


# Dense bf16 tensor-core peaks and HBM bandwidths from the vendors' data sheets (the sparse FLOP figures are
# twice these): name, FLOP/s, GB, compute capability, bytes/s.
GPU_SPECS = {
    "A100": ("A100 SXM 80GB", 312e12, 80, (8, 0), 2.039e12),
    "H100": ("H100 SXM 80GB", 989e12, 80, (9, 0), 3.35e12),
    "H200": ("H200 SXM 141GB", 989e12, 141, (9, 0), 4.8e12),
}
CUDA_FIXED_OVERHEAD = 1 * GiB
"""The CUDA context with torch's kernels loaded (about 0.5-0.6 GiB on an A100/H100) plus the cuBLAS and
cuDNN workspaces: memory that ``nvidia-smi`` shows and ``torch.cuda.max_memory_allocated`` does not."""
CUDA_FRAGMENTATION = 0.10
"""torch's caching allocator reserves more than it hands out; 10 % of the short-lived memory (activations,
logits) is a typical reserved/allocated gap for training steps of varying length (packed batches)."""


def gpu(name: str, memory_gb: float | None = None) -> Device:
    """A100, H100 or H200 (SXM), optionally with another memory size (``--gpu-memory-gb``)."""
    label, peak, memory, capability, bandwidth = GPU_SPECS[name]
    if memory_gb is not None:
        label = f"{label.rsplit(' ', 1)[0]} limited to {memory_gb:g} GB"
        memory = memory_gb
    hardware = Hardware(device="cuda", name=label, cuda_bf16=True, cuda_capability=capability)
    return Device(label, hardware, peak, int(memory * GB), CUDA_FIXED_OVERHEAD, CUDA_FRAGMENTATION, 1, bandwidth)


def this_cpu(memory_gb: float | None = None) -> Device:
    """This machine's CPU and RAM: the precision rule decides bf16 or fp32 from its instructions."""
    hardware = detect_hardware("cpu")
    memory = int(memory_gb * GB) if memory_gb is not None else _ram_bytes()
    return Device(f"CPU ({hardware.name})", hardware, None, memory, 0, 0.0, None)


def _ram_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise OSError("no MemTotal in /proc/meminfo")
