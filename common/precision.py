"""Precision that fits the hardware: one rule, used by every entry point.

``precision: auto`` (the default of every config) resolves, from what torch reports about the machine:

=====================================================  ==============  ======================
hardware                                               precision       compute / weight dtype
=====================================================  ==============  ======================
CUDA GPU with bf16 (compute capability 8.0+)           ``bf16-mixed``  bfloat16
CUDA GPU without bf16 (T4, V100)                       ``16-mixed``    float16 (grad scaler)
CPU with native bf16 matmuls (AVX512_BF16, AMX, BF16)  ``bf16-mixed``  bfloat16
  ... where bf16 matmuls measured slower (see below)   ``32-true``     float32
any other CPU (AVX2, plain AVX512, ...)                ``32-true``     float32
=====================================================  ==============  ======================

Why a rule and not a constant: on a CPU without native bf16 instructions torch emulates bf16, and a
1024x1024 matmul ran at 0.9 GFLOP/s in bf16 against 129 GFLOP/s in fp32 (AMD EPYC Zen 3, AVX2, torch
2.13), while on a CPU with AMX bf16 is several times *faster* than fp32. Note that torch's
``get_cpu_capability()`` says ``AVX512`` for CPUs with and without bf16, so it cannot decide this alone.

The flag is not enough either: on an Intel Xeon with AVX512_BF16 but no AMX, torch 2.13's bf16 matmuls ran
at 0.49-0.60x fp32 (127-152 against 249-257 GFLOP/s, 2 threads), and the demo took 863 s in bf16 against
380 s in fp32. So on a CPU that has a bf16 flag the rule times one 1024x1024 matmul in each dtype (about
0.2 s, once per process; :func:`cpu_bf16_speedup`) and takes bf16 only when it is faster
(``BF16_MIN_SPEEDUP``). The classes seen so far sit far from the line (the Xeon above 0.53-0.59x in five
processes; AMX Xeons several times faster), so the answer does not change from one process to the next.

An explicit request (``bf16-mixed`` on such a CPU, ``16-mixed`` on any CPU without fp16 units) is
honoured after one warning line that says how much slower it will be and how to switch.
"""

from __future__ import annotations

import functools
import logging
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from common.errors import PrecisionError
from common.onednn import cap_primitive_cache

log = logging.getLogger(__name__)

AUTO = "auto"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Lightning's short names and their canonical form.
ALIASES = {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed", "half": "16-mixed"}
COMPUTE_DTYPES = {
    "32-true": "float32",
    "64-true": "float32",
    "bf16-mixed": "bfloat16",
    "bf16-true": "bfloat16",
    "16-mixed": "float16",
    "16-true": "float16",
}
# bf16 must beat fp32 by this much on a CPU for `auto` to pick it. Not higher: on an AMD Zen 4 (AVX512_BF16,
# no AMX) bf16 won by only 1.19x in training and 8 % on the whole demo, and it still saves memory.
BF16_MIN_SPEEDUP = 1.0
# The measurement behind the warning (issue 9): bf16 emulated on a CPU without native bf16.
EMULATION_NOTE = "about 100x slower than fp32 (measured: 0.9 vs 129 GFLOP/s for a 1024x1024 matmul on an AVX2 CPU)"


@dataclass(frozen=True)
class Hardware:
    """What the precision rule needs to know about the device a run computes on.

    Attributes:
        device: ``cuda``, ``cpu`` or ``mps``.
        name: the GPU's name, or the CPU's model name.
        cuda_bf16: the GPU computes in bf16 (compute capability 8.0 or newer).
        cuda_capability: the GPU's compute capability, e.g. ``(9, 0)``.
        cpu_capability: torch's ``get_cpu_capability()``: ``AVX2``, ``AVX512``, ``DEFAULT``...
        cpu_avx512_bf16: the CPU has the AVX512_BF16 instructions.
        cpu_amx: the CPU has AMX tiles (bf16 matmuls on Sapphire Rapids and newer).
        cpu_arm_bf16: an Arm CPU with the BF16 extension.
        cpu_fp16: the CPU has native fp16 matmuls (AMX-FP16).
        cpu_bf16_speedup: bf16 matmul throughput over fp32, measured on this CPU (:func:`cpu_bf16_speedup`);
            ``None``: not measured (no bf16 flag, a GPU, or hardware described by hand), the flags decide.
    """

    device: str
    name: str = ""
    cuda_bf16: bool = False
    cuda_capability: tuple[int, int] | None = None
    cpu_capability: str = ""
    cpu_avx512_bf16: bool = False
    cpu_amx: bool = False
    cpu_arm_bf16: bool = False
    cpu_fp16: bool = False
    cpu_bf16_speedup: float | None = None

    @property
    def native_bf16(self) -> bool:
        """The device has bf16 instructions (it does not emulate bf16; it may still be slower than fp32)."""
        if self.device == "cuda":
            return self.cuda_bf16
        return self.device == "cpu" and (self.cpu_avx512_bf16 or self.cpu_amx or self.cpu_arm_bf16)

    @property
    def bf16_pays(self) -> bool:
        """bf16 is the faster precision here: native, and on a CPU not measured slower than the margin."""
        if not self.native_bf16:
            return False
        return self.device != "cpu" or self.cpu_bf16_speedup is None or self.cpu_bf16_speedup >= BF16_MIN_SPEEDUP

    @property
    def native_fp16(self) -> bool:
        return self.device in ("cuda", "mps") or (self.device == "cpu" and self.cpu_fp16)

    def precision_reason(self) -> str:
        """Why this hardware gets the precision it gets, in a few words."""
        if self.device == "cuda":
            major, minor = self.cuda_capability or (0, 0)
            support = "with bf16" if self.cuda_bf16 else "without bf16"
            return f"CUDA GPU {support}: {self.name}, compute capability {major}.{minor}"
        if self.device == "mps":
            return "Apple MPS: mixed precision is not chosen automatically"
        features = [
            label
            for label, present in (
                ("AMX", self.cpu_amx),
                ("AVX512_BF16", self.cpu_avx512_bf16),
                ("BF16", self.cpu_arm_bf16),
            )
            if present
        ]
        if features and not self.bf16_pays:
            # No figure in the reason: it is recorded and compared across processes, and the timing jitters.
            return f"CPU with native bf16 ({', '.join(features)}) but bf16 matmuls measured slower than fp32"
        if features:
            return f"CPU with native bf16: {', '.join(features)}"
        return f"CPU without native bf16: {self.cpu_capability or 'unknown'}"


def _arm_bf16() -> bool:
    """An Arm CPU whose ``/proc/cpuinfo`` lists the BF16 extension (torch has no query for it)."""
    if platform.machine().lower() not in ("aarch64", "arm64"):
        return False
    try:
        return " bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup(size: int = 1024, repeats: int = 3) -> float:
    """bf16 over fp32 matmul throughput on this CPU: the best of ``repeats`` timings each, interleaved.

    About 0.2 s on a 2-core CPU with native bf16 (after one warm-up of each); cached for the process. Only
    called where a bf16 flag is set: on a CPU that emulates bf16 the bf16 matmul alone would take seconds.
    """
    cap_primitive_cache("cpu", "bf16-mixed")  # before this process's first bf16 matmul (common/onednn.py)
    generator = torch.Generator().manual_seed(0)
    operands = {
        dtype: [torch.randn(size, size, generator=generator).to(dtype) for _ in range(2)]
        for dtype in (torch.float32, torch.bfloat16)
    }
    best = dict.fromkeys(operands, float("inf"))
    for attempt in range(repeats + 1):  # the first round warms up (oneDNN picks and caches its kernels)
        for dtype, (a, b) in operands.items():
            start = time.perf_counter()
            torch.mm(a, b)
            seconds = time.perf_counter() - start
            if attempt:
                best[dtype] = min(best[dtype], seconds)
    return best[torch.float32] / best[torch.bfloat16]


def detect_hardware(accelerator: str | None = "auto") -> Hardware:
    """Read the device a run with ``accelerator`` (Lightning's name) would compute on.

    ``auto`` means CUDA when a GPU is visible, else Apple MPS when present, else the CPU (Lightning's order).
    """
    accelerator = (accelerator or "auto").lower()
    use_cuda = accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available())
    if use_cuda and torch.cuda.is_available():
        index = torch.cuda.current_device()
        return Hardware(
            device="cuda",
            name=torch.cuda.get_device_name(index),
            cuda_bf16=torch.cuda.is_bf16_supported(),
            cuda_capability=torch.cuda.get_device_capability(index),
        )
    mps = getattr(torch.backends, "mps", None)
    if accelerator in ("mps", "gpu", "auto") and mps is not None and mps.is_available():
        return Hardware(device="mps", name="Apple MPS")
    hardware = Hardware(
        device="cpu",
        name=_cpu_name(),
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        cpu_avx512_bf16=torch.cpu._is_avx512_bf16_supported(),
        cpu_amx=torch.cpu._is_amx_tile_supported(),
        cpu_arm_bf16=_arm_bf16(),
        cpu_fp16=torch.cpu._is_amx_fp16_supported(),
    )
    if hardware.native_bf16:
        return replace(hardware, cpu_bf16_speedup=round(cpu_bf16_speedup(), 2))
    return hardware


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses, and why.

    Attributes:
        precision: Lightning's precision name (``bf16-mixed``, ``16-mixed``, ``32-true``...).
        requested: what the config asked for (``auto`` or an explicit name).
        reason: why, in a few words: the hardware for ``auto``, ``requested`` otherwise.
        hardware: the device it was decided for.
    """

    precision: str
    requested: str
    reason: str
    hardware: Hardware

    def __str__(self) -> str:
        return f"{self.precision} ({self.reason})"

    @property
    def compute_dtype(self) -> str:
        """The dtype the matmuls run in: ``bfloat16``, ``float16`` or ``float32``."""
        return COMPUTE_DTYPES.get(self.precision, "float32")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype for ``torch.autocast`` in hand-written loops (``None``: no autocast)."""
        return DTYPES[self.compute_dtype] if self.precision.endswith("-mixed") else None

    def weight_dtype(self, frozen: bool) -> str:
        """The dtype to load weights in.

        Frozen weights (a LoRA's base, a reference model, evaluation) take the compute dtype: half the
        memory of fp32, and autocast would cast them to it for every matmul anyway. Trained weights stay
        fp32 under mixed precision (the optimiser updates fp32 master weights; fp16 ones cannot even be
        unscaled), and take the compute dtype under ``-true`` precision.
        """
        if frozen or self.precision.endswith("-true"):
            return self.compute_dtype
        return "float32"

    def slowdown_warning(self) -> str | None:
        """One line when the precision is emulated on this CPU (much slower), else ``None``."""
        hardware = self.hardware
        if hardware.device != "cpu":
            return None
        if self.compute_dtype == "bfloat16" and not hardware.native_bf16:
            return (
                f"warning: precision {self.precision} on a CPU without native bf16 ({hardware.cpu_capability}): "
                f"torch emulates bf16 here, {EMULATION_NOTE}. Set trainer.precision: auto (or 32-true) to run "
                "in fp32."
            )
        if self.compute_dtype == "float16" and not hardware.native_fp16:
            return (
                f"warning: precision {self.precision} on a CPU without native fp16 ({hardware.cpu_capability}): "
                "torch emulates fp16 here, far slower than fp32. Set trainer.precision: auto (or 32-true) to "
                "run in fp32."
            )
        return None


def auto_precision(hardware: Hardware) -> str:
    """The rule itself: the precision ``auto`` stands for on ``hardware``."""
    if hardware.device == "cuda":
        return "bf16-mixed" if hardware.cuda_bf16 else "16-mixed"
    if hardware.device == "cpu" and hardware.bf16_pays:
        return "bf16-mixed"
    return "32-true"


def resolve_precision(requested: str | int | None = AUTO, hardware: Hardware | None = None) -> PrecisionChoice:
    """Turn a config's precision (``auto``, a Lightning name or alias, or ``None``) into a choice.

    Args:
        requested: ``auto`` (or ``None``) applies the rule; anything else is kept (aliases such as
            ``bf16`` or ``32`` become Lightning's full names).
        hardware: the device to decide for; read with :func:`detect_hardware` when not given.
    """
    hardware = hardware or detect_hardware()
    name = AUTO if requested is None else str(requested)
    if name == AUTO:
        return PrecisionChoice(auto_precision(hardware), AUTO, hardware.precision_reason(), hardware)
    precision = ALIASES.get(name, name)
    if precision not in COMPUTE_DTYPES:
        choices = ", ".join([AUTO, *COMPUTE_DTYPES])
        raise PrecisionError(f"precision: unknown value {requested!r}; choose one of {choices}")
    return PrecisionChoice(precision, name, "requested", hardware)


def resolve_dtype(dtype: str, choice: PrecisionChoice | None = None, *, frozen: bool = True) -> str:
    """A weight dtype name, with ``auto`` resolved by the precision rule.

    Args:
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        choice: the run's precision; ``None`` resolves ``auto`` precision on this machine.
        frozen: the weights are not trained (LoRA base, reference, evaluation).
    """
    if dtype != AUTO:
        if dtype not in DTYPES:
            raise PrecisionError(f"dtype: unknown value {dtype!r}; choose one of auto, {', '.join(DTYPES)}")
        return dtype
    return (choice or resolve_precision(AUTO)).weight_dtype(frozen)


def announce(choice: PrecisionChoice, who: str = "precision") -> None:
    """Print the choice once, and the slowdown warning when there is one (one line each)."""
    print(f"[{who}] precision: {choice}", flush=True)
    warning = choice.slowdown_warning()
    if warning:
        log.warning(warning)
