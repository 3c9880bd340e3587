"""benchmarks/gpu_check.py: the pieces checked by hand, and the whole driver at small sizes on the CPU (slow)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
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


@pytest.mark.slow
def test_driver_runs_every_case_on_the_cpu_at_small_sizes(tmp_path, capsys):
    """One 7B-shaped layer (~1.9 GB of fp32 weights written to a temporary folder, then loaded by each case through
    the modules' own loading; QLoRA by bitsandbytes on the CPU), 128 tokens, 1 + 1 steps."""
    results = gpu_check.main(
        ["--device", "cpu", "--num-layers", "1", "--max-length", "128", "--warmup", "1", "--steps", "1",
         "--json", str(tmp_path / "results.json")]
    )  # fmt: skip
    assert [r["case"] for r in results] == list(gpu_check.CASES)
    for result in results:
        assert result["tokens_per_s"] > 0
        assert result["peak_bytes"] is None and result["mfu"] is None  # GPU-only figures: skipped on the CPU
        assert result["planner"].startswith(("planner peak", "planner: not available", "planner: failed"))
        assert result["load_s"] > 0
    assert [r["tokens_per_step"] for r in results] == [4 * 128, 4 * 128, 4 * 128, 4 * 128]
    out = capsys.readouterr().out
    assert "1 layers of mistral-7b-v0.1.json; max_length 128" in out
    assert out.count("peak n/a (no CUDA)") == 4
    assert "[gpu_check] base: built in" in out and out.count(": loaded in") == 4
    # each DPO case starts from the export the SFT case of its kind wrote
    assert out.count("from the sft-lora export") == out.count("from the sft-qlora export") == 1
    assert (tmp_path / "results.json").is_file()
