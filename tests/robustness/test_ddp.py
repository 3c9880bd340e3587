"""``strategy: ddp`` with two CPU processes (gloo) through ``train.py fit``, against one process with
the same global batch, for SFT and DPO.

With ``group_by_length: false`` the rows of one step are the same in both runs: one process takes
rows ``perm[2sB : 2(s+1)B]`` of the seeded permutation at step ``s``, and the two ranks take the even
and the odd ones of them (``DistributedSampler``). SFT divides the summed NLL by the response tokens
of all ranks (``SFTModule.on_before_optimizer_step``) and DPO averages equal numbers of pairs per
rank, so the gradients are the same up to float summation order: the weights after one epoch and
the rank-reduced validation loss match to 1e-5. LoRA dropout is 0 (the ranks draw other masks).

Four runs of two to three processes each: a few minutes on two cores, hence ``slow``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fault_injection import add_callback, finish, read_log, start_fit, tiny_config
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

DDP = {"strategy": "ddp", "devices": 2, "use_distributed_sampler": False}


def config(stage: str, out: Path, model: Path, batch_size: int, **trainer) -> dict:
    cfg = tiny_config(stage, out, model, precision="32", max_epochs=1, **trainer)
    data = cfg["data"]["init_args"]
    data.update(batch_size=batch_size, eval_batch_size=10, group_by_length=False)
    data["num_examples"] = 64 if stage == "sft" else 32  # 4 optimiser steps of 16 rows / 8 pairs
    cfg["model"]["init_args"]["lora"]["dropout"] = 0.0
    # Pinned, not the demo's tuned rates: Adam magnifies summation-order noise in tiny gradients with the rate.
    cfg["model"]["init_args"]["optimizer"]["lr"] = 2e-3 if stage == "sft" else 1e-3
    if stage == "dpo":  # plain DPO: an sft (RPO) term is normalised per rank under DDP (DPOModule's losses)
        cfg["model"]["init_args"]["losses"] = [{"name": "sigmoid"}]
    return add_callback(cfg, "fault_injection.StepLog", path=str(out / "steps.jsonl"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, tiny_sft_export) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("ddp")
    folders = {}
    for stage, model, rows in (("sft", tiny_model_dir, 16), ("dpo", tiny_sft_export, 8)):
        processes = {}
        for mode in ("single", "ddp"):
            out = folders[stage, mode] = root / f"{stage}-{mode}"
            out.mkdir()
            settings = DDP if mode == "ddp" else {}
            cfg = config(stage, out, model, rows // 2 if mode == "ddp" else rows, **settings)
            processes[mode] = start_fit(cfg, out / "config.yaml")
        for mode, process in processes.items():
            result = finish(process, timeout=600)
            assert result.returncode == 0, result.stderr[-3000:]
            (folders[stage, mode] / "fit.log").write_text(result.stdout + result.stderr)
    return folders


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_two_processes_match_one_with_the_same_global_batch(runs, stage):
    single, ddp = runs[stage, "single"], runs[stage, "ddp"]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (ddp / "fit.log").read_text()  # two processes ran
    train_single, val_single = read_log(single / "steps.jsonl")
    train_ddp, val_ddp = read_log(ddp / "steps.jsonl")
    assert sorted(train_single) == sorted(train_ddp) == [0, 1, 2, 3]
    assert sorted(val_single) == sorted(val_ddp) == [4]
    # Validation is split between the ranks and its metric reduced over them.
    assert val_ddp[4] == pytest.approx(val_single[4], rel=1e-5)
    adapter_single = load_file(single / "outputs" / stage / "adapter_model.safetensors")
    adapter_ddp = load_file(ddp / "outputs" / stage / "adapter_model.safetensors")
    assert adapter_single.keys() == adapter_ddp.keys()
    moved = 0.0
    for key in adapter_single:
        torch.testing.assert_close(adapter_ddp[key], adapter_single[key], rtol=1e-4, atol=1e-5)
        if "lora_B" in key:  # starts at zero: how far training moved it
            moved = max(moved, float(adapter_single[key].abs().max()))
    assert moved > 1e-3  # the comparison is not of untrained weights


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_only_rank_zero_writes_the_export_and_the_reference_cache(runs, stage):
    ddp = runs[stage, "ddp"]
    assert sorted(p.name for p in (ddp / "outputs").iterdir()) == [stage]  # no second or half export
    if stage == "dpo":
        cache = sorted(p.name for p in (ddp / "runs" / "reference_cache").iterdir())
        assert len(cache) == 2 and all(name.startswith("reference-logps-") for name in cache), cache
        log = (ddp / "fit.log").read_text()
        assert log.count("computing reference log-probs") == 2  # train and val, once each, printed by rank 0
        assert log.count("(2 processes, one share each)") == 2  # both ranks computed a share of each


def test_two_processes_write_the_reference_cache_of_one(runs):
    """Each rank computes every other pair and the shares are summed: the same file name (same reference, data,
    precision) and the same log-probs as the single process's pass, up to fp32 summation order in batches of
    other rows."""
    caches = {mode: runs["dpo", mode] / "runs" / "reference_cache" for mode in ("single", "ddp")}
    names = {mode: sorted(p.name for p in folder.iterdir()) for mode, folder in caches.items()}
    assert names["single"] == names["ddp"] and len(names["ddp"]) == 2
    for name in names["ddp"]:
        single = torch.load(caches["single"] / name, weights_only=True)
        ddp = torch.load(caches["ddp"] / name, weights_only=True)
        for side in ("chosen", "rejected"):
            assert (single[side] < 0).all()  # every pair computed (an empty share would leave zeros)
            torch.testing.assert_close(ddp[side], single[side], rtol=1e-5, atol=1e-4)


def test_forgetting_use_distributed_sampler_false_is_a_clear_error(tmp_path, tiny_model_dir):
    cfg = config("sft", tmp_path, tiny_model_dir, 8, strategy="ddp", devices=2)  # use_distributed_sampler left on
    result = finish(start_fit(cfg, tmp_path / "config.yaml"), timeout=600)
    assert result.returncode != 0
    assert "2 processes with trainer.use_distributed_sampler: true" in result.stderr
    assert "set trainer.use_distributed_sampler: false" in result.stderr
