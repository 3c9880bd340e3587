"""Mistakes in a config or its data, through ``train.py fit``: the run stops before training with one
readable line (``error: ...``) naming what is wrong and where, not a bare traceback.

Mistyped keys are LightningCLI's own check, tested in tests/test_configs.py. The runs go one after the other in
one process (tests/cli_batch.py), the 4-bit one beside them in its own; each stops within seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from fault_injection import HERE, REPO, finish, start_fit, tiny_config

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"


def mistakes(root: Path, model: Path, sft_export: Path) -> dict[str, tuple[dict, list[str]]]:
    """name: (config, fragments the error line must hold)."""
    empty = root / "not-a-model"
    empty.mkdir()
    incomplete = root / "incomplete-export"
    incomplete.mkdir()
    (incomplete / "adapter_config.json").write_text((sft_export / "adapter_config.json").read_text())

    bad_row = tiny_config("sft", root / "bad_row", model)
    bad_row["data"]["init_args"].update(train_files=str(BAD / "sft_missing_output.jsonl"), val_files=None)
    not_a_model = tiny_config("sft", root / "not_a_model", empty)
    no_export = tiny_config("dpo", root / "no_export", root / "outputs" / "sft")
    half_export = tiny_config("dpo", root / "half_export", incomplete)
    four_bit = tiny_config("sft", root / "four_bit", model)
    four_bit["model"]["init_args"]["load"] = {"load_in_4bit": True}
    # 4-bit runs on the CPU now; what still stops it is a bitsandbytes too old for that (see old_bitsandbytes).
    # Constructor checks (a data module's, a module's, a settings dataclass's) that jsonargparse would otherwise
    # wrap in a 40-line traceback.
    prompt_length = tiny_config("dpo", root / "prompt_length", sft_export)
    prompt_length["data"]["init_args"].update(max_length=256, max_prompt_length=300)
    lora_rank = tiny_config("sft", root / "lora_rank", model)
    lora_rank["model"]["init_args"]["lora"]["r"] = 0
    qlora_without_lora = tiny_config("sft", root / "qlora_without_lora", model)
    qlora_without_lora["model"]["init_args"].update(load={"load_in_4bit": True}, lora=None)
    dpo_loss = tiny_config("dpo", root / "dpo_loss", sft_export)
    dpo_loss["model"]["init_args"]["losses"][0]["label_smoothing"] = 0.7
    fsdp_on_cpu = tiny_config("sft", root / "fsdp_on_cpu", model, strategy="fsdp", devices=2)
    # Lightning's own ModelParallelStrategy: tensor parallelism, and no resume of a LoRA's sharded checkpoint.
    tensor_parallel = tiny_config(
        "sft",
        root / "tensor_parallel",
        model,
        strategy={"class_path": "lightning.pytorch.strategies.ModelParallelStrategy"},
        devices=2,
        use_distributed_sampler=False,
    )
    return {
        "bad_row": (
            bad_row,
            [f"error: {BAD / 'sft_missing_output.jsonl'}: row 2: field 'output': missing field", "on_bad_row: skip"],
        ),
        "not_a_model": (not_a_model, [f"error: {empty}: not a model folder (no config.json)"]),
        "no_export": (no_export, [f"error: {root / 'outputs' / 'sft'}: SFT export not found", "Run the SFT stage"]),
        "half_export": (half_export, [f"error: {incomplete}: incomplete SFT export", "adapter_model.safetensors"]),
        "four_bit": (
            four_bit,
            [
                "error: load.load_in_4bit: true needs bitsandbytes>=0.46.1",
                "found 0.45.5",
                "set load.load_in_4bit: false",
            ],
        ),
        "prompt_length": (
            prompt_length,
            ["error: data: max_prompt_length (300) must be below max_length (256)", "lower max_prompt_length"],
        ),
        "lora_rank": (lora_rank, ["error: lora.r must be a positive integer", "got 0"]),
        "qlora_without_lora": (
            qlora_without_lora,
            ["error: load.load_in_4bit (QLoRA) trains a LoRA", "set model.lora"],
        ),
        "dpo_loss": (dpo_loss, ["error: model.losses[0] (sigmoid): label_smoothing must be in [0.0, 0.5], got 0.7"]),
        "fsdp_on_cpu": (
            fsdp_on_cpu,
            [
                "error: trainer.strategy: fsdp is Lightning's FSDPStrategy (FSDP1), which is not supported here",
                "cpu",
                "strategy: {class_path: lightning_modules.sharding.FSDP2Strategy}",
            ],
        ),
        "tensor_parallel": (
            tensor_parallel,
            [
                "error: trainer.strategy: ModelParallelStrategy is not implemented here",
                "strategy: {class_path: lightning_modules.sharding.FSDP2Strategy}",
            ],
        ),
    }


def old_bitsandbytes(root: Path) -> dict[str, str]:
    """An environment in which the installed bitsandbytes reads as 0.45.5: a package record ahead of the real one
    on the path (importlib.metadata finds it first)."""
    record = root / "old_bitsandbytes" / "bitsandbytes-0.45.5.dist-info"
    record.mkdir(parents=True)
    (record / "METADATA").write_text("Metadata-Version: 2.1\nName: bitsandbytes\nVersion: 0.45.5\n")
    return {"PYTHONPATH": os.pathsep.join([str(record.parent), str(REPO), str(HERE)])}


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny_model_dir, tiny_sft_export, cli_batch) -> dict:
    """Each mistake's ``train.py fit``: the 4-bit one in its own process (its environment shows an old
    bitsandbytes), beside all the others in one process (tests/cli_batch.py: the imports once, not 10 times)."""
    root = tmp_path_factory.mktemp("config_errors")
    cases = mistakes(root, tiny_model_dir, tiny_sft_export)
    four_bit = start_fit(cases["four_bit"][0], root / "four_bit.yaml", env=old_bitsandbytes(root))
    commands = {}
    for name, (config, _) in cases.items():
        if name != "four_bit":
            (root / f"{name}.yaml").write_text(yaml.safe_dump(config))
            commands[name] = [REPO / "train.py", "fit", "--config", root / f"{name}.yaml"]
    finished = cli_batch(commands, root) | {"four_bit": finish(four_bit)}
    return {name: (finished[name], cases[name][1], root) for name in cases}


@pytest.mark.parametrize(
    "name",
    [
        "bad_row", "not_a_model", "no_export", "half_export", "four_bit",
        "prompt_length", "lora_rank", "qlora_without_lora", "dpo_loss", "fsdp_on_cpu", "tensor_parallel",
    ],
)  # fmt: skip
def test_mistake_stops_with_one_readable_error_line(results, name):
    result, fragments, root = results[name]
    assert result.returncode == 1, result.stderr[-3000:]
    last_line = result.stderr.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in last_line
    assert "Traceback" not in result.stderr
    assert not (root / name / "runs" / "sft" / "checkpoints").exists()  # stopped before training
