"""benchmarks/gpu_check.py: the pieces checked by hand, the import chain without the packages the GPU machine
lacks, the carried wheels' sizes, and the whole driver at small sizes on the CPU (slow)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import MistralConfig

REPO = Path(__file__).resolve().parents[2]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_check = load_gpu_check()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA H200", ("H200", 989.4e12)),
        ("NVIDIA H100 80GB HBM3", ("H100", 989.4e12)),
        ("NVIDIA H100 PCIe", ("H100 PCIe", 756.0e12)),
        ("NVIDIA A100-SXM4-80GB", ("A100", 312.0e12)),
        ("Tesla T4", None),
    ],
)
def test_dense_bf16_peak_of_the_detected_gpu(name, expected):
    assert gpu_check.dense_bf16_peak(name) == expected


def test_cases_take_the_study_configs_batch_and_lora():
    sft, dpo = gpu_check.study_case("sft-qlora"), gpu_check.study_case("dpo-lora")
    assert (sft.stage, sft.four_bit, sft.batch_size) == ("sft", True, 4)  # configs/sft.yaml: 4 rows
    assert (dpo.stage, dpo.four_bit, dpo.batch_size) == ("dpo", False, 2)  # configs/dpo.yaml: 2 pairs
    assert sft.lora.r == dpo.lora.r == 16
    # bf16 LoRA as configured for one 80 GB GPU (checkpointing off); QLoRA as run on a 24 GB one (on)
    assert sft.gradient_checkpointing and not dpo.gradient_checkpointing


def test_packed_dpo_batch_layout():
    case = gpu_check.study_case("dpo-lora")  # 2 pairs -> 4 rows
    batch = gpu_check.packed_batch(case, max_length=6, vocab_size=50, seed=0)
    assert batch["input_ids"].shape == (1, 24)
    # [[0 1 2 3 4 5 | 0 1 2 3 4 5 | ...]]: a new example wherever the position restarts
    assert batch["position_ids"][0, :8].tolist() == [0, 1, 2, 3, 4, 5, 0, 1]
    # the first 3 tokens of each row are prompt (-100), the last 3 response
    assert (batch["labels"][0, :6] == -100).tolist() == [True] * 3 + [False] * 3
    assert int(batch["num_loss_tokens"]) == 4 * 3
    assert batch["reference_chosen_logps"].shape == batch["reference_rejected_logps"].shape == (2,)


def test_placeholder_tokenizer_has_the_models_vocabulary():
    tokenizer = gpu_check.placeholder_tokenizer(32000)  # Mistral-7B's vocab_size
    assert len(tokenizer) == 32000
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)  # as Mistral's
    assert tokenizer.convert_tokens_to_ids(["t3", "t31999"]) == [3, 31999]


def test_prepared_batches_bring_their_own_reference():
    case = gpu_check.study_case("dpo-lora")
    batch = gpu_check.packed_batch(case, max_length=6, vocab_size=50, seed=0)
    data = gpu_check.PreparedBatches(batch, steps=3)
    # DPOModule.setup computes no reference cache for a data module that says this (see its docstring)
    assert data.reference_attached
    served = list(data.train_dataloader())
    assert len(served) == 3 and served[0]["input_ids"].shape == (1, 24)
    assert "reference_chosen_logps" in served[0]


def test_model_flops_by_hand():
    config = MistralConfig(hidden_size=8, num_hidden_layers=2)
    case = gpu_check.study_case("sft-lora")  # 4 rows
    batch = gpu_check.packed_batch(case, max_length=6, vocab_size=50, seed=0)
    # 24 tokens through 100 layer weights, 4 x 3 response positions through 10 head weights (labels[:, 1:]
    # of the first row lose nothing: its first label is prompt), attention 12 * 2 layers * 8 * 6 per token.
    expected = 6 * (100 * 24 + 10 * 12) + 12 * 2 * 8 * 6 * 24
    assert gpu_check.model_flops_per_step(config, 100, 10, batch) == expected


def test_weight_counts_of_the_7b_shape():
    config = gpu_check.AutoConfig.from_pretrained(gpu_check.MODEL_CONFIG)
    layers, head = gpu_check.weight_counts(config)
    # per layer: q, o 4096^2; k, v 1024 x 4096; gate, up, down 14336 x 4096; two norms of 4096
    per_layer = 2 * 4096**2 + 2 * 1024 * 4096 + 3 * 14336 * 4096 + 2 * 4096
    assert layers == 32 * per_layer and head == 32000 * 4096
    assert layers + head + 32000 * 4096 + 4096 == 7_241_732_096  # Mistral-7B-v0.1's published count


def test_dpo_qlora_starts_from_the_lora_sft_export_when_no_qlora_one_was_written(tmp_path):
    (tmp_path / "sft-lora").mkdir()
    case = gpu_check.study_case("dpo-qlora")
    # no load: the other kind's export is found first (the same LoRA on the same base)
    assert gpu_check.sft_export_of(case, tmp_path / "no-base", "float32", tmp_path) == tmp_path / "sft-lora"


def test_comparison_rows_packed_and_padded_as_the_collator_builds_them():
    inputs, labels = gpu_check.comparison_rows(rows=2, max_length=6, vocab_size=50, seed=0)
    assert [len(row) for row in inputs] == [6, 5]  # 6 - 0, 6 - 1 * (6 // 4)
    assert labels[0][:3] == [-100] * 3 and labels[0][3:] == inputs[0][3:]  # half of each row is prompt
    assert labels[1][:2] == [-100] * 2 and labels[1][2:] == inputs[1][2:]
    packed, padded = gpu_check.packed_and_padded([[5, 6, 7], [8, 9]], [[-100, 6, 7], [-100, 9]], pad_token_id=0)
    torch.testing.assert_close(packed["input_ids"], torch.tensor([[5, 6, 7, 8, 9]]))  # (1, N): end to end
    torch.testing.assert_close(packed["position_ids"], torch.tensor([[0, 1, 2, 0, 1]]))  # restarts: a new row
    torch.testing.assert_close(packed["labels"], torch.tensor([[-100, 6, 7, -100, 9]]))
    assert "attention_mask" not in packed
    torch.testing.assert_close(padded["input_ids"], torch.tensor([[5, 6, 7], [8, 9, 0]]))  # (B, T): right-padded
    torch.testing.assert_close(padded["attention_mask"], torch.tensor([[1, 1, 1], [1, 1, 0]]))
    torch.testing.assert_close(padded["labels"], torch.tensor([[-100, 6, 7], [-100, 9, -100]]))  # pad: no loss
    assert "position_ids" not in padded


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention"], ["flash"]),
        (["aten::_scaled_dot_product_flash_attention_for_cpu"], ["flash (CPU)"]),  # not also "flash"
        (["aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_cudnn_attention"],
         ["cudnn", "efficient"]),
        (["aten::_scaled_dot_product_attention_math", "aten::bmm", "aten::softmax"], ["math"]),
        (["aten::mm", "aten::scaled_dot_product_attention"], []),  # the dispatcher alone names no backend
    ],
)  # fmt: skip
def test_sdpa_backends_from_profiler_event_names(names, expected):
    assert gpu_check.sdpa_backends(names) == expected


def test_attention_kernel_names_are_device_kernels_only():
    names = [
        "aten::_scaled_dot_product_flash_attention",  # an op, not a kernel
        "void pytorch_flash::flash_fwd_kernel<...>",
        "fmha_cutlassF_bf16_aligned_64x64_rf_sm80",
        "ampere_bf16_s16816gemm",  # a matmul
        "cudnn_generated_fort_native_sdpa",
    ]
    assert gpu_check.attention_kernel_names(names) == sorted(names[1:3] + names[4:])


def test_summary_lines_of_every_section():
    results = {
        "versions": {"python": "3.12.3", "bitsandbytes": "absent"}, "device": "NVIDIA H100 80GB HBM3",
        "settings": "32 layers", "elapsed_s": 300.0, "skipped": [{"phase": "dpo-qlora", "reason": "no bitsandbytes"}],
        "base": {"build_s": 9.0, "write_s": 30.0, "bytes": 14.5e9, "sha256_bytes_per_s": 1e9, "sha256_s": 14.5},
        "cases": [{"case": "dpo-lora", "rows_per_step": 4, "tokens_per_step": 4096, "tokens_per_s": 9000.0,
                   "peak_bytes": 40 * 2**30, "mfu": 0.4, "planner": "planner peak 41.0 GiB", "load_s": 30.0,
                   "fit_s": 12.0}],
        "packed_vs_padded": {"rows": 4, "row_lengths": [8, 7], "max_abs_difference": 0.25,
                             "max_relative_difference": 0.001},
        "attention_kernels": {"packed": {"backends": ["flash"], "kernels": ["flash_fwd_kernel"]}},
        "shared_prompt": {"pairs": 4, "tokens": {"unshared": 900, "shared": 700}, "max_abs_difference": 0.125,
                          "max_relative_difference": 0.0005, "forward_s": {"unshared": 0.2, "shared": 0.16},
                          "forward_speedup": 1.25, "attention": {"backends": ["efficient", "flash"], "kernels": []}},
        "merge": {"update_scale": 100.0, "max_abs_merged_vs_stacked": 0.5, "max_abs_update_stacked": 0.6,
                  "max_abs_update_merged": 0.1,
                  "retention": {"dtype": "bfloat16", "modules": 224, "retained_median": 0.2, "retained_min": 0.1}},
    }  # fmt: skip
    lines = gpu_check.summary_lines(results)
    assert lines[0] == "python 3.12.3 | bitsandbytes absent"
    assert "SHA-256 at 1.00 GB/s: ~14 s per module load" in lines[2]
    assert "9000 tokens/s  peak 40.0 GiB  MFU 40.0%  | planner peak 41.0 GiB  (load 30.0 s, fit 12.0 s)" in lines[3]
    assert lines[4].endswith("largest difference 0.25 (0.001 relative)")
    assert lines[5] == "attention (packed): SDPA flash; kernels ['flash_fwd_kernel']"
    assert lines[6] == (
        "shared prompt vs unshared, 4 pairs (700 tokens, not 900): largest log-prob difference 0.125 "
        "(0.0005 relative); forward 1.25x faster; SDPA efficient, flash"
    )
    assert lines[7].endswith("the bfloat16 merge keeps 0.200 of the weight update (median of 224 modules, min 0.100)")
    assert lines[8:] == ["skipped dpo-qlora: no bitsandbytes", "elapsed 300 s"]


# ---- the wheels carried to the GPU machine ----------------------------------------------------------------------


def test_the_listed_wheels_fit_the_carry_limit_and_match_the_folder_when_built():
    wheels = gpu_check.read_wheel_list(gpu_check.WHEEL_LIST.read_text())
    assert {wheel.requirement.split("==")[0] for wheel in wheels} == {"bitsandbytes", "jsonargparse"}
    assert sum(wheel.size for wheel in wheels) <= 64 * 2**20
    folder = REPO / "benchmarks" / "wheels"  # `make gpu-wheels` (ignored by git; carried by the device tool)
    assert gpu_check.wheel_problems(wheels, folder if folder.is_dir() else None) == []


def test_wheel_problems_name_each_mismatch(tmp_path):
    wheels = gpu_check.read_wheel_list("# comment\na==1  a-1-py3-none-any.whl  3\nb==2  b-2-py3-none-any.whl  5\n")
    assert [w.size for w in wheels] == [3, 5]
    (tmp_path / "a-1-py3-none-any.whl").write_bytes(b"abcd")  # 4 bytes, listed 3
    (tmp_path / "c-3-py3-none-any.whl").write_bytes(b"")  # not listed
    problems = gpu_check.wheel_problems(wheels, tmp_path, limit=7)
    assert problems == [
        "the wheels total 0.0 MiB, over the 0 MiB carry limit",
        f"{tmp_path / 'a-1-py3-none-any.whl'}: 4 bytes, gpu_wheels.txt says 3",
        f"{tmp_path / 'b-2-py3-none-any.whl'}: missing (run `make gpu-wheels`)",
        f"{tmp_path / 'c-3-py3-none-any.whl'}: not in gpu_wheels.txt",
    ]


def test_make_gpu_wheels_downloads_the_list_for_python_3_12_and_checks_it():
    makefile = (REPO / "Makefile").read_text()
    assert "GPU_PYTHON_VERSION ?= 3.12" in makefile
    target = makefile.split("\ngpu-wheels:")[1].split("\n\n")[0]
    assert "--no-deps" in target and "--check-wheels benchmarks/wheels" in target
    assert "benchmarks/gpu_wheels.txt" in makefile.split("\ngpu-wheels:")[0].rsplit("GPU_WHEELS =", 1)[1]


# ---- the GPU machine's environment: no datasets, jsonargparse or bitsandbytes ------------------------------------

WITHOUT_MISSING_PACKAGES = """
import sys
for name in ("datasets", "jsonargparse", "bitsandbytes"):
    sys.modules[name] = None  # what the GPU machine lacks: importing any of them fails
import importlib.util
from pathlib import Path

from transformers import MistralConfig

spec = importlib.util.spec_from_file_location("gpu_check", "benchmarks/gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = gpu_check
spec.loader.exec_module(gpu_check)
import datamodules

assert "InstructionDataModule" in dir(datamodules)  # imported on first use only (it needs datasets)
assert gpu_check.bitsandbytes_version() is None and gpu_check.versions()["bitsandbytes"] == "absent"
tmp = Path(sys.argv[1])
config = MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=4, num_key_value_heads=2)
gpu_check.write_base(config, tmp / "base", gpu_check.torch.device("cpu"), gpu_check.torch.float32)
sft = gpu_check.study_case("sft-lora")
gpu_check.packed_batch(sft, max_length=8, vocab_size=64, seed=0)
gpu_check.packed_and_padded(*gpu_check.comparison_rows(4, 8, 64, seed=1), pad_token_id=0)
module = gpu_check.make_module(sft, tmp / "base", "float32", tmp / "exports")
gpu_check.export_module(module, tmp / "exports" / "sft-lora")
dpo = gpu_check.make_module(gpu_check.study_case("dpo-lora"), tmp / "base", "float32", tmp / "exports")
print("planner:", gpu_check.planner_prediction(sft, tmp / "base" / "config.json", 8, None))
leaked = sorted(name for name in ("datasets", "jsonargparse", "bitsandbytes") if sys.modules[name] is not None)
print("ok", type(dpo).__name__, leaked)
"""


def test_the_lora_cases_build_without_datasets_jsonargparse_or_bitsandbytes(tmp_path):
    """In a fresh interpreter that cannot import them, as on the GPU machine: gpu_check imports, and a 1-layer tiny
    base goes through the SFT and DPO modules' construction, the SFT export, the batch builders."""
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_MISSING_PACKAGES, str(tmp_path)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok DPOModule []" in result.stdout
    assert "planner: not available (its CLI needs jsonargparse" in result.stdout  # said, not a traceback


def test_datamodules_still_export_their_data_modules_by_name():
    import datamodules
    from datamodules.instruction import InstructionDataModule

    # `from datamodules import InstructionDataModule` and a config's class_path datamodules.InstructionDataModule
    assert datamodules.InstructionDataModule is InstructionDataModule
    assert importlib.import_module("datamodules").PreferenceDataModule.__name__ == "PreferenceDataModule"
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        datamodules.Nothing  # noqa: B018


@pytest.mark.slow
def test_driver_runs_every_case_on_the_cpu_at_small_sizes(tmp_path, capsys):
    """One 7B-shaped layer (~1.9 GB of fp32 weights written to a temporary folder, then loaded by each case through
    the modules' own loading; QLoRA by bitsandbytes on the CPU), 128 tokens, 1 + 1 steps, and the three checks.

    The GPU run's default cases (sft-qlora, the same module on a 4-bit base, is left out for CI time: the study dry
    run trains a QLoRA SFT on the real configs)."""
    results = gpu_check.main(
        ["--device", "cpu", "--num-layers", "1", "--max-length", "128", "--warmup", "1", "--steps", "1",
         "--cases", *gpu_check.DEFAULT_CASES, "--json", str(tmp_path / "results.json")]
    )  # fmt: skip
    cases = results["cases"]
    assert [r["case"] for r in cases] == list(gpu_check.DEFAULT_CASES) and results["skipped"] == []
    for result in cases:
        assert result["tokens_per_s"] > 0
        assert result["peak_bytes"] is None and result["mfu"] is None  # GPU-only figures: skipped on the CPU
        assert result["planner"].startswith(("planner peak", "planner: not available", "planner: failed"))
        assert result["load_s"] > 0 and result["fit_s"] > 0
    assert [r["tokens_per_step"] for r in cases] == [4 * 128, 4 * 128, 4 * 128]
    # fp32 on the CPU: packing changes nothing, the CPU's flash op ran, the merge keeps the whole update
    assert results["packed_vs_padded"]["max_abs_difference"] < 1e-3
    assert results["attention_kernels"]["packed"]["backends"] == ["flash (CPU)"]
    shared = results["shared_prompt"]  # each prompt once: fewer tokens, the same log-probs (fp32)
    assert shared["tokens"]["shared"] < shared["tokens"]["unshared"] and shared["max_abs_difference"] < 1e-3
    assert shared["forward_s"]["shared"] > 0 and shared["attention"]["backends"]
    merge = results["merge"]
    assert merge["retention"]["dtype"] == "float32" and merge["retention"]["retained_min"] > 0.999
    assert merge["max_abs_merged_vs_stacked"] < 1e-2 * merge["max_abs_update_stacked"]
    assert results["versions"]["bitsandbytes"] != "absent"
    out = capsys.readouterr().out
    assert "1 layers of mistral-7b-v0.1.json; max_length 128" in out
    assert out.count("peak n/a (no CUDA)") == 3
    assert "[gpu_check] base: built in" in out and out.count(": loaded in") == 3
    # without sft-qlora, both DPO cases start from the export sft-lora wrote (the same LoRA on the same base)
    assert out.count("from the sft-lora export") == 2 and "from the sft-qlora export" not in out
    assert json.loads((tmp_path / "results.json").read_text())["cases"] == cases
    summary = (tmp_path / "results.txt").read_text()
    assert "packed vs padded log-probs" in summary and "merge (DPO update x100" in summary
    assert "shared prompt vs unshared" in summary
