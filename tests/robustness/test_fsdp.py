"""FSDP2 (``lightning_modules.sharding.FSDP2Strategy``: ``fully_shard`` per decoder layer) with two CPU
processes (gloo) through ``train.py fit``.

Lightning's ``FSDPStrategy`` (FSDP1) cannot run on a CPU (``lightning_modules/sharding.py`` says where it
stops); FSDP2 can, so the sharded path of LoRA SFT is tested here as the DDP test does: the same seeded rows
per step (``group_by_length: false``), one process with batch 16 against two with batch 8 each. FSDP2
reduce-scatters the mean gradient over the ranks, as DDP all-reduces it, so the weights after one epoch (4
steps) and the rank-reduced validation loss match to float summation order.

Every run clips the gradient norm (``gradient_clip_val``, below the norms seen, so every step clips): Lightning's
FSDP1 plugin refuses clipping by norm; under FSDP2 the gradients are DTensor shards, whose norm torch reduces over
the ranks, so the clipped steps match one process's.

Five runs: one process; two sharded processes writing a full (rank-0, one file) checkpoint; two sharded
processes that write a sharded checkpoint (one file per rank) after two steps and are both killed (SIGKILL) as
the third starts, then resumed from it; and one step of two sharded processes in bf16-mixed over a bf16 frozen
base, to read the dtypes the strategy leaves (RoPE's ``inv_freq`` must stay fp32: FSDP1's bf16 plugin casts
buffers to bf16). (Killed, not sent SIGTERM: Lightning 2.6's SIGTERM handler broadcasts
from inside the signal handler, which raced with the ranks' collectives and hung one run of two here.) A few
minutes on two cores, hence ``slow``.
"""

from __future__ import annotations

import copy
import json
import signal
from pathlib import Path

import pytest
import torch
from fault_injection import add_callback, checkpoint_every, finish, read_log, start_fit, tiny_config
from peft import PeftModel
from safetensors.torch import load_file
from torch.distributed.checkpoint import FileSystemReader
from transformers import AutoModelForCausalLM

pytestmark = pytest.mark.slow

KILL_AT = 2  # both ranks killed as step 2 (0-based) starts: after the sharded last.ckpt of steps 0-1
CLIP = 0.05  # below every step's gradient norm in these runs (asserted), so every step is clipped


def fsdp(sharded_checkpoint: bool) -> dict:
    return {
        "strategy": {
            "class_path": "lightning_modules.sharding.FSDP2Strategy",
            "init_args": {"save_distributed_checkpoint": sharded_checkpoint},
        },
        "devices": 2,
        "use_distributed_sampler": False,
    }


def config(out: Path, model: Path, batch_size: int, **trainer) -> dict:
    trainer = {"precision": "32", "max_epochs": 1, "gradient_clip_val": CLIP, **trainer}
    cfg = tiny_config("sft", out, model, **trainer)
    cfg["data"]["init_args"].update(batch_size=batch_size, eval_batch_size=10, group_by_length=False, num_examples=64)
    cfg["model"]["init_args"]["lora"]["dropout"] = 0.0  # the ranks would draw other masks than one process
    cfg["model"]["init_args"]["optimizer"]["lr"] = 2e-3  # as the DDP test: pinned, not the demo's tuned rate
    add_callback(cfg, "fault_injection.GradNormLog", path=str(out / "grad_norms.jsonl"))
    return add_callback(cfg, "fault_injection.StepLog", path=str(out / "steps.jsonl"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fsdp")
    folders = {name: root / name for name in ("single", "fsdp", "killed", "bf16")}
    for folder in folders.values():
        folder.mkdir()
    configs = {
        "single": config(folders["single"], tiny_model_dir, 16),
        "fsdp": config(folders["fsdp"], tiny_model_dir, 8, **fsdp(sharded_checkpoint=False)),
        "killed": config(folders["killed"], tiny_model_dir, 8, **fsdp(sharded_checkpoint=True)),
        "bf16": config(folders["bf16"], tiny_model_dir, 8, precision="bf16-mixed", max_steps=1, **fsdp(True)),
    }
    configs["bf16"]["model"]["init_args"]["load"] = {"dtype": "bfloat16"}  # the frozen base as on a GPU
    add_callback(configs["bf16"], "fault_injection.BufferDtypes", path=str(folders["bf16"] / "dtypes.json"))
    checkpoint_every(configs["killed"], KILL_AT)
    killed = add_callback(copy.deepcopy(configs["killed"]), "fault_injection.KillAtStep", step=KILL_AT, group=True)
    killed["trainer"]["callbacks"][-2]["init_args"]["path"] = str(folders["killed"] / "steps_before_kill.jsonl")
    first = {
        "single": start_fit(configs["single"], folders["single"] / "config.yaml"),
        "fsdp": start_fit(configs["fsdp"], folders["fsdp"] / "config.yaml"),
    }
    for name, process in first.items():
        result = finish(process, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        (folders[name] / "fit.log").write_text(result.stdout + result.stderr)
    # One distributed run at a time: two would race for the rendezvous port.
    result = finish(start_fit(configs["bf16"], folders["bf16"] / "config.yaml"), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    interrupted = finish(start_fit(killed, folders["killed"] / "interrupted.yaml"), timeout=600)
    assert interrupted.returncode == -signal.SIGKILL, interrupted.stderr[-3000:]
    (folders["killed"] / "interrupted.log").write_text(interrupted.stdout + interrupted.stderr)
    resumed = finish(start_fit(configs["killed"], folders["killed"] / "config.yaml", "--ckpt_path", "last"), 600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (folders["killed"] / "fit.log").write_text(resumed.stdout + resumed.stderr)
    return folders


def grad_norms(folder: Path) -> dict[int, float]:
    """``{step: norm of the gradients after clipping}``."""
    lines = (folder / "grad_norms.jsonl").read_text().splitlines()
    return {record["step"]: record["grad_norm"] for record in map(json.loads, lines)}


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "outputs" / "sft" / "adapter_model.safetensors")


def test_two_sharded_processes_match_one_with_the_same_global_batch(runs):
    single, sharded = runs["single"], runs["fsdp"]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (sharded / "fit.log").read_text()  # two processes ran
    train_single, val_single = read_log(single / "steps.jsonl")
    train_sharded, val_sharded = read_log(sharded / "steps.jsonl")
    assert sorted(train_single) == sorted(train_sharded) == [0, 1, 2, 3]
    assert val_sharded[4] == pytest.approx(val_single[4], rel=1e-5)  # validation split over the ranks, reduced
    weights_single, weights_sharded = adapter(single), adapter(sharded)
    assert weights_single.keys() == weights_sharded.keys()
    moved = 0.0
    for key in weights_single:
        torch.testing.assert_close(weights_sharded[key], weights_single[key], rtol=1e-4, atol=1e-5)
        if "lora_B" in key:  # starts at zero: how far training moved it
            moved = max(moved, float(weights_single[key].abs().max()))
    assert moved > 1e-3  # the comparison is not of untrained weights


def test_full_checkpoint_is_one_lean_file_with_the_exported_weights(runs):
    checkpoint = runs["fsdp"] / "runs" / "sft" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()  # save_distributed_checkpoint: false gathers onto rank 0
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert state and all("lora_" in name for name in state)  # the trainable weights only, as without FSDP
    exported = adapter(runs["fsdp"])
    for name, value in state.items():
        # model.base_model.model.X.lora_A.default.weight -> base_model.model.X.lora_A.weight (PEFT's file names)
        key = name.removeprefix("model.").replace(".default.", ".")
        torch.testing.assert_close(value, exported[key], rtol=0, atol=0)


def test_sharded_checkpoint_resumes_the_same_loss_curve(runs):
    checkpoint = runs["killed"] / "runs" / "sft" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_dir()  # one shard file per rank, written by both
    assert sorted(p.name for p in checkpoint.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    saved = FileSystemReader(checkpoint).read_metadata().state_dict_metadata
    weights = [name for name in saved if name.startswith("state_dict.")]
    assert weights and all("lora_" in name for name in weights)  # lean: no frozen base in the shards
    train_full, val_full = read_log(runs["fsdp"] / "steps.jsonl")
    train_before, val_before = read_log(runs["killed"] / "steps_before_kill.jsonl")
    train_resumed, val_resumed = read_log(runs["killed"] / "steps.jsonl")
    assert (sorted(train_before), val_before, sorted(train_resumed)) == ([0, 1], {}, [2, 3])
    for step, loss in {**train_before, **train_resumed}.items():
        assert loss == pytest.approx(train_full[step], rel=1e-6), step
    assert val_resumed[4] == pytest.approx(val_full[4], rel=1e-6)
    for key, value in adapter(runs["fsdp"]).items():
        torch.testing.assert_close(adapter(runs["killed"])[key], value, rtol=1e-5, atol=1e-7)


def test_export_is_a_plain_peft_folder_with_the_trained_logits(runs, tiny_model_dir):
    exports = {name: runs[name] / "outputs" / "sft" for name in ("single", "fsdp")}
    for export in exports.values():
        assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {
            p.name for p in export.iterdir()
        }
        assert json.loads((export / "export_info.json").read_text())["kind"] == "lora_adapter"
    input_ids = torch.tensor([[1, 5, 9, 42, 7, 300, 2]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        base_logits = base(input_ids=input_ids).logits
        logits = {
            name: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), export)
            .eval()(input_ids=input_ids)
            .logits
            for name, export in exports.items()
        }
    torch.testing.assert_close(logits["fsdp"], logits["single"], rtol=1e-4, atol=1e-4)
    assert float((logits["fsdp"] - base_logits).abs().max()) > 1e-2  # the adapter was applied and trained


def test_clipping_by_norm_works_and_clips_as_one_process_does(runs):
    """Clipping only scales down, so a norm of CLIP after it means the step was clipped; under FSDP2 the
    whole gradient, gathered over the ranks, is at CLIP: every shard was scaled by the one global factor (a rank
    clipping by its own shard's norm would leave the whole at another norm)."""
    single, sharded = grad_norms(runs["single"]), grad_norms(runs["fsdp"])
    assert sorted(single) == sorted(sharded) == [0, 1, 2, 3]
    for step in single:
        assert single[step] == pytest.approx(CLIP, rel=1e-4), step
        assert sharded[step] == pytest.approx(CLIP, rel=1e-4), step


def test_bf16_mixed_keeps_buffers_and_trained_weights_in_fp32(runs):
    dtypes = json.loads((runs["bf16"] / "dtypes.json").read_text())
    assert dtypes["precision"] == "bf16-mixed"
    inv_freq = {name: dtype for name, dtype in dtypes["buffers"].items() if name.endswith("inv_freq")}
    assert inv_freq and set(inv_freq.values()) == {"torch.float32"}  # RoPE phases stay exact
    assert dtypes["trained"] == ["torch.float32"]  # LoRA weights, their gradients reduced in fp32
    assert dtypes["frozen"] == ["torch.bfloat16"]  # FSDP2 shards a layer of mixed dtypes (no flat parameter)
