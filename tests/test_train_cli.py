"""The tiny SFT config end to end through ``python train.py fit``: logs, checkpoint and export land
where the config says, relative to the working directory."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]
STEPS = 5


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """Five steps of configs/tiny/sft.yaml on the tiny base, run in an empty folder."""
    cwd = tmp_path_factory.mktemp("cli")
    data = REPO / "data" / "tiny"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "fit",
            "--config",
            str(REPO / "configs" / "tiny" / "sft.yaml"),
            "--trainer.max_steps",
            str(STEPS),
            "--trainer.val_check_interval",
            str(STEPS),  # one validation, at the last step
            "--trainer.limit_val_batches",
            "2",
            "--model.init_args.model_name_or_path",
            str(tiny_model_dir),
            "--data.init_args.train_files",
            str(data / "sft_train.jsonl"),
            "--data.init_args.val_files",
            str(data / "sft_val.jsonl"),
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    (cwd / "stdout.txt").write_text(result.stdout)
    return cwd


def test_tensorboard_events_hold_the_training_loss(run_dir):
    events = list((run_dir / "runs" / "tiny" / "sft" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(events[0]))
    accumulator.Reload()
    assert "train/loss" in accumulator.Tags()["scalars"]
    losses = accumulator.Scalars("train/loss")
    assert losses and all(0 < event.value < 20 for event in losses)
    # The resolved config is saved beside the events, so the run can be repeated.
    assert (run_dir / "runs" / "tiny" / "sft" / "tensorboard" / "config.yaml").is_file()


def test_last_checkpoint_is_written_and_lean(run_dir):
    checkpoint = torch.load(
        run_dir / "runs" / "tiny" / "sft" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert checkpoint["global_step"] == STEPS
    assert checkpoint["state_dict"] and all("lora_" in key for key in checkpoint["state_dict"])
    # One resume point (no last-v1.ckpt beside it) and the best by val/loss, from the config's run: section.
    names = sorted(p.name for p in (run_dir / "runs" / "tiny" / "sft" / "checkpoints").iterdir())
    assert names == [f"epoch=0-step={STEPS}.ckpt", "last.ckpt"]


@pytest.fixture(scope="module")
def stopped_early(tmp_path_factory, cli_batch) -> dict:
    """Two commands that stop before any model loads, in one process (tests/cli_batch.py) and an empty folder,
    where the tiny DPO config's model (outputs/tiny/sft) does not exist."""
    config, folder = str(REPO / "configs" / "tiny" / "dpo.yaml"), tmp_path_factory.mktemp("stopped_early")
    commands = {
        "print_paths": [REPO / "train.py", "fit", "--config", config, "--run.dir", "elsewhere/dpo", "--print_paths"],
        "bad run value": [REPO / "train.py", "fit", "--config", config, "--run.checkpoint_every_n_steps", "0"],
        "mistyped option": [REPO / "train.py", "fit", "--config", config, "--model.init_args.bta", "0.2"],
        "mistyped dataclass option": [REPO / "train.py", "fit", "--config", config, "--model.init_args.lora.rr", "3"],
        # argparse's default would take this for --trainer.max_steps and train
        "abbreviated option": [REPO / "train.py", "fit", "--config", config, "--trainer.max_step", "3"],
    }
    ran = cli_batch(commands, folder, {"HF_HOME": str(folder / "hf")})
    return {name: (result, folder) for name, result in ran.items()}


def test_print_paths_says_where_the_run_writes_and_loads_nothing(stopped_early):
    result, folder = stopped_early["print_paths"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "dir": "elsewhere/dpo", "checkpoints": "elsewhere/dpo/checkpoints",
        "last": "elsewhere/dpo/checkpoints/last.ckpt", "tensorboard": "elsewhere/dpo/tensorboard",
        "export": "outputs/tiny/dpo", "model": "outputs/tiny/sft",
    }  # fmt: skip
    assert list(folder.iterdir()) == [folder / "hf"] or not (folder / "elsewhere").exists()


def test_a_bad_run_value_fails_before_the_model_loads(stopped_early):
    """Had the model been loaded first, the error would name the model path instead."""
    result, folder = stopped_early["bad run value"]
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == ("error: run.checkpoint_every_n_steps must be at least 1, got 0.")
    assert not (folder / "runs").exists()


def test_a_mistyped_option_is_one_error_line_with_the_closest_accepted_one(stopped_early):
    """Not jsonargparse's usage and every Union branch it tried (70 lines for one typo): the key's full path,
    what it could have been, and where the options are listed."""
    expected = {
        "mistyped option": "error: model.init_args: no option 'bta' (in lightning_modules.dpo.DPOModule); did you "
        "mean 'beta'? accepted: model_name_or_path, from_base, revision, lora, reference, beta,",
        "mistyped dataclass option": "error: model.init_args.lora: no option 'rr' (in common.settings.LoraSettings); "
        "did you mean 'r'? accepted: r, alpha, dropout, target_modules",
    }
    for name, start in expected.items():
        result, folder = stopped_early[name]
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, result.stderr[-3000:]
        assert lines[-2].startswith(start), lines[-2:]
        assert lines[-1] == "(every option: train.py fit --help)"
        assert "usage:" not in result.stderr and not (folder / "runs").exists()
    result, folder = stopped_early["abbreviated option"]
    assert result.returncode == 2 and not (folder / "runs").exists(), result.stderr[-3000:]
    assert "error: unrecognized arguments: --trainer.max_step 3" in result.stderr


def test_adapter_is_exported_in_hugging_face_format(run_dir, tiny_model_dir):
    out = run_dir / "outputs" / "tiny" / "sft"
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "export_info.json",
        "training_config.yaml",
    ):
        assert (out / name).is_file(), name
    info = json.loads((out / "export_info.json").read_text())
    assert info["kind"] == "lora_adapter"
    assert info["source_model"] == str(tiny_model_dir)
    assert info["global_step"] == STEPS
    assert info["template"] == "alpaca"
    cost = info["cost"]  # the run's own cost, for the methods study's table
    assert 0 < cost["fit_seconds"] < 600 and cost["peak_rss_bytes"] > 100 * 2**20 and cost["peak_gpu_bytes"] is None
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_model_dir)
    assert (adapter["r"], adapter["lora_alpha"]) == (16, 32)  # from the config
    # Nothing is left half-written beside the export.
    assert [p.name for p in out.parent.iterdir()] == ["sft"]


def test_auto_precision_is_resolved_printed_once_and_recorded(run_dir):
    """The rule's choice for this machine lands in the saved config, the hparams and export_info.json."""
    from common.precision import detect_hardware, resolve_precision

    choice = resolve_precision("auto", detect_hardware("cpu"))
    assert (run_dir / "stdout.txt").read_text().count("precision: ") == 1
    assert f"[trainer] precision: {choice}" in (run_dir / "stdout.txt").read_text()
    text = (run_dir / "runs" / "tiny" / "sft" / "tensorboard" / "config.yaml").read_text()
    assert text.startswith(f"# precision: auto -> {choice}\n")
    import yaml

    saved = yaml.safe_load(text)
    assert saved["trainer"]["precision"] == choice.precision
    assert saved["model"]["init_args"]["load"] is None  # no load: section: the modules' float32, nothing resolved
    hparams = yaml.safe_load((run_dir / "runs" / "tiny" / "sft" / "tensorboard" / "hparams.yaml").read_text())
    assert (hparams["precision"], hparams["precision_reason"]) == (choice.precision, choice.reason)
    info = json.loads((run_dir / "outputs" / "tiny" / "sft" / "export_info.json").read_text())
    assert info["precision"] == str(choice)


def test_tensorboard_hparams_carry_the_final_metrics_and_no_placeholder(run_dir):
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = list((run_dir / "runs" / "tiny" / "sft" / "tensorboard").glob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(events[0]))
    accumulator.Reload()
    assert "hp_metric" not in accumulator.Tags()["scalars"]  # Lightning's -1 placeholder
    content = accumulator.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {info.name.tag for info in experiment.metric_infos} == {"val/loss", "val/perplexity"}
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    logged = session.session_start_info.hparams
    assert logged["model_name_or_path"].string_value.endswith("base")
    assert logged["precision"].string_value in ("32-true", "bf16-mixed")
    # The metric values are the run's real final ones: the last val/loss and its exponential.
    losses = accumulator.Scalars("val/loss")
    perplexities = accumulator.Scalars("val/perplexity")
    assert losses[-1].step == STEPS and 0 < losses[-1].value < 20
    assert perplexities[-1].value == pytest.approx(math.exp(losses[-1].value), rel=1e-4)


def test_the_progress_bar_names_the_run_instead_of_a_truncated_version():
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import TQDMProgressBar

    from lightning_modules.trainer import RunNameInProgressBar

    class Base(TQDMProgressBar):
        def get_metrics(self, trainer, pl_module):
            return {"v_num": "oard", "train/loss": 1.5}

    class Named(RunNameInProgressBar, Base):
        pass

    trainer = SimpleNamespace(logger=SimpleNamespace(name="sft"))
    assert Named().get_metrics(trainer, None) == {"run": "sft", "train/loss": 1.5}


@pytest.mark.parametrize(
    ("precision", "lora", "expected"),
    [
        ("32-true", True, torch.float32),
        ("bf16-true", True, torch.bfloat16),
        ("bf16-mixed", True, torch.bfloat16),  # a LoRA's frozen base takes the compute dtype
        ("bf16-mixed", False, torch.float32),  # trained weights stay fp32 master weights under mixed precision
    ],
)
def test_model_dtype_auto_follows_the_trainer_precision(
    tiny_model_dir, tmp_path, monkeypatch, precision, lora, expected
):
    from lightning_modules.trainer import StudyTrainer
    from study.cli import StudyCLI

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])  # the arguments come from `args`, not pytest's command line
    data = REPO / "data" / "tiny"
    cli = StudyCLI(
        trainer_class=StudyTrainer,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=None,
        run=False,
        args=[
            "--config",
            str(REPO / "configs" / "tiny" / "sft.yaml"),
            "--trainer.precision",
            precision,
            "--trainer.logger",
            "false",
            "--model.init_args.model_name_or_path",
            str(tiny_model_dir),
            "--model.init_args.load.dtype",
            "auto",
            *([] if lora else ["--model.init_args.lora", "null"]),
            "--data.init_args.train_files",
            str(data / "sft_train.jsonl"),
            "--data.init_args.val_files",
            str(data / "sft_val.jsonl"),
        ],
    )
    assert cli.trainer.precision == precision
    base = cli.model.model.get_base_model() if lora else cli.model.model
    assert base.model.layers[0].mlp.up_proj.weight.dtype == expected
