"""The precision rule as a table: each faked capability -> the expected precision and dtypes."""

from __future__ import annotations

import logging

import pytest
import torch

from common import precision as rule
from common.precision import BF16_MIN_SPEEDUP, Hardware, PrecisionError, resolve_dtype, resolve_precision

H100 = Hardware(device="cuda", name="NVIDIA H100", cuda_bf16=True, cuda_capability=(9, 0))
T4 = Hardware(device="cuda", name="Tesla T4", cuda_bf16=False, cuda_capability=(7, 5))
SAPPHIRE_RAPIDS = Hardware(device="cpu", cpu_capability="AVX512", cpu_avx512_bf16=True, cpu_amx=True)
ZEN4 = Hardware(device="cpu", cpu_capability="AVX512", cpu_avx512_bf16=True)
# bf16 flag, no AMX, bf16 matmuls measured at 0.55x fp32 (the Intel Xeon of the 2026-12-02 sessions)
XEON_NO_AMX = Hardware(device="cpu", cpu_capability="AVX512", cpu_avx512_bf16=True, cpu_bf16_speedup=0.55)
AMX_MEASURED = Hardware(
    device="cpu", cpu_capability="AVX512", cpu_avx512_bf16=True, cpu_amx=True, cpu_bf16_speedup=BF16_MIN_SPEEDUP
)
GRAVITON3 = Hardware(device="cpu", cpu_capability="SVE256", cpu_arm_bf16=True)
ZEN3 = Hardware(device="cpu", cpu_capability="AVX2")
SKYLAKE_X = Hardware(device="cpu", cpu_capability="AVX512")  # AVX512 without its BF16 extension
PLAIN = Hardware(device="cpu", cpu_capability="DEFAULT")

# hardware -> (precision, compute dtype, frozen weight dtype, trained weight dtype, reason)
TABLE = [
    (H100, "bf16-mixed", "bfloat16", "bfloat16", "float32", "CUDA GPU with bf16: NVIDIA H100, compute capability 9.0"),
    (T4, "16-mixed", "float16", "float16", "float32", "CUDA GPU without bf16: Tesla T4, compute capability 7.5"),
    (SAPPHIRE_RAPIDS, "bf16-mixed", "bfloat16", "bfloat16", "float32", "CPU with native bf16: AMX, AVX512_BF16"),
    (ZEN4, "bf16-mixed", "bfloat16", "bfloat16", "float32", "CPU with native bf16: AVX512_BF16"),
    (GRAVITON3, "bf16-mixed", "bfloat16", "bfloat16", "float32", "CPU with native bf16: BF16"),
    (AMX_MEASURED, "bf16-mixed", "bfloat16", "bfloat16", "float32", "CPU with native bf16: AMX, AVX512_BF16"),
    (
        XEON_NO_AMX,
        "32-true",
        "float32",
        "float32",
        "float32",
        "CPU with native bf16 (AVX512_BF16) but bf16 matmuls measured slower than fp32",
    ),
    (ZEN3, "32-true", "float32", "float32", "float32", "CPU without native bf16: AVX2"),
    (SKYLAKE_X, "32-true", "float32", "float32", "float32", "CPU without native bf16: AVX512"),
    (PLAIN, "32-true", "float32", "float32", "float32", "CPU without native bf16: DEFAULT"),
]


@pytest.mark.parametrize(("hardware", "precision", "compute", "frozen", "trained", "reason"), TABLE)
def test_auto_resolves_by_the_table(hardware, precision, compute, frozen, trained, reason):
    choice = resolve_precision("auto", hardware)
    assert (choice.precision, choice.compute_dtype, choice.reason) == (precision, compute, reason)
    assert choice.weight_dtype(frozen=True) == frozen
    assert choice.weight_dtype(frozen=False) == trained
    assert resolve_dtype("auto", choice, frozen=True) == frozen
    assert str(choice) == f"{precision} ({reason})"


@pytest.mark.parametrize(
    ("requested", "expected", "autocast"),
    [
        ("bf16", "bf16-mixed", torch.bfloat16),
        ("bf16-mixed", "bf16-mixed", torch.bfloat16),
        ("16", "16-mixed", torch.float16),
        (32, "32-true", None),
        ("32-true", "32-true", None),
        ("bf16-true", "bf16-true", None),
    ],
)
def test_an_explicit_precision_is_kept(requested, expected, autocast):
    choice = resolve_precision(requested, ZEN3)
    assert (choice.precision, choice.reason, choice.autocast_dtype) == (expected, "requested", autocast)


def test_true_precision_loads_even_trained_weights_in_its_dtype():
    assert resolve_precision("bf16-true", H100).weight_dtype(frozen=False) == "bfloat16"


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(PrecisionError, match="'bf17'.*auto, 32-true"):
        resolve_precision("bf17", ZEN3)
    with pytest.raises(PrecisionError, match="'half'.*auto, float32"):
        resolve_dtype("half")
    assert resolve_dtype("float16") == "float16"  # an explicit dtype is never changed


@pytest.mark.parametrize(
    ("requested", "hardware", "warned"),
    [
        ("bf16-mixed", ZEN3, True),
        ("bf16-true", SKYLAKE_X, True),
        ("16-mixed", ZEN4, True),  # fp16 matmuls need AMX-FP16 on a CPU
        ("bf16-mixed", ZEN4, False),
        ("bf16-mixed", SAPPHIRE_RAPIDS, False),
        ("16-mixed", T4, False),
        ("auto", ZEN3, False),
        ("32-true", ZEN3, False),
    ],
)
def test_an_emulated_precision_warns_once_with_the_way_out(requested, hardware, warned, caplog, capsys):
    choice = resolve_precision(requested, hardware)
    with caplog.at_level(logging.WARNING, logger=rule.__name__):
        rule.announce(choice, "test")
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert capsys.readouterr().out == f"[test] precision: {choice}\n"
    if warned:
        assert len(warnings) == 1
        assert "slower" in warnings[0] and "precision: auto" in warnings[0] and "32-true" in warnings[0]
        assert "\n" not in warnings[0]
    else:
        assert warnings == []


def test_the_cpu_is_read_from_torchs_flags(monkeypatch):
    """``get_cpu_capability`` says AVX512 with and without bf16: the bf16 and AMX queries decide."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(rule, "_arm_bf16", lambda: False)
    monkeypatch.setattr(rule, "cpu_bf16_speedup", lambda: 3.0)
    cases = [(False, False, "32-true"), (True, False, "bf16-mixed"), (False, True, "bf16-mixed")]
    for avx512_bf16, amx, expected in cases:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        hardware = rule.detect_hardware("auto")
        assert hardware.device == "cpu"
        assert resolve_precision("auto", hardware).precision == expected


@pytest.mark.parametrize(
    ("speedup", "expected"),
    [(0.55, "32-true"), (BF16_MIN_SPEEDUP - 0.01, "32-true"), (BF16_MIN_SPEEDUP, "bf16-mixed"), (3.9, "bf16-mixed")],
)
def test_a_bf16_flag_is_trusted_only_where_bf16_measured_faster(monkeypatch, speedup, expected):
    """An Intel Xeon with AVX512_BF16 and no AMX ran bf16 matmuls at 0.49-0.60x fp32: the timing decides."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(rule, "cpu_bf16_speedup", lambda: speedup)
    hardware = rule.detect_hardware("cpu")
    assert hardware.cpu_bf16_speedup == speedup
    assert resolve_precision("auto", hardware).precision == expected
    # Asked for explicitly, bf16 is honoured without the emulation warning: the CPU does have the instructions.
    assert resolve_precision("bf16-mixed", hardware).slowdown_warning() is None


def test_the_timing_runs_only_where_a_bf16_flag_is_set(monkeypatch):
    """Where bf16 is emulated its matmul alone would take seconds: no flag, no timing."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(rule, "_arm_bf16", lambda: False)

    def refuse() -> float:
        raise AssertionError("timed bf16 on a CPU without a bf16 flag")

    monkeypatch.setattr(rule, "cpu_bf16_speedup", refuse)
    hardware = rule.detect_hardware("cpu")
    assert hardware.cpu_bf16_speedup is None
    assert resolve_precision("auto", hardware).precision == "32-true"


def test_the_bf16_timing_is_a_ratio_of_real_matmuls():
    """The uncached measurement at a small size, on any CPU: a finite positive ratio (AMX ~4, the Xeon without
    AMX ~0.5, emulated bf16 on AVX2 ~0.01; at 256x256 the emulated matmul takes ~40 ms)."""
    ratio = rule.cpu_bf16_speedup.__wrapped__(size=256, repeats=2)
    assert 0.001 < ratio < 50


def test_a_gpu_is_read_from_torchs_cuda_queries(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "Tesla V100")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (7, 0))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    hardware = rule.detect_hardware("gpu")
    assert resolve_precision("auto", hardware).precision == "16-mixed"
    # accelerator: cpu looks at the CPU even when a GPU is present
    assert rule.detect_hardware("cpu").device == "cpu"
