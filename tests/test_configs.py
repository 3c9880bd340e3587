"""Every YAML in configs/ parses through the real CLI, and typos fail loudly.

Training configs (those with a ``trainer`` section) go through ``train.py fit``; evaluation configs
through ``scripts/evaluate.py``. ``--print_config`` must not load the model: the runs below happen
in an empty folder, offline, with an empty Hugging Face cache, where neither
``mistralai/Mistral-7B-v0.1`` nor the tiny configs' relative model paths could be loaded, so exit
status 0 shows nothing was loaded.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from config_overlays import is_training_config, overlay_base

from common.settings import OptimizerSettings

REPO = Path(__file__).resolve().parents[1]
# configs/dryrun/ holds override files (parts of configs), checked merged onto the study's below.
CONFIGS = sorted(c for c in REPO.glob("configs/**/*.yaml") if "dryrun" not in c.relative_to(REPO).parts)
OVERRIDES = sorted(REPO.glob("configs/dryrun/**/*.yaml"))


def dry_runs() -> dict[str, list[str]]:
    """The override folders of each of ``make study-dryrun``'s runs, read from the Makefile: ``{"lora": [...],
    "qlora": [...]}`` (the QLoRA run reads the study's QLoRA overlay, ``configs/qlora``)."""
    runs = {}
    for line in (REPO / "Makefile").read_text().splitlines():
        if "scripts/run_study.py study --overrides" in line:
            folders = line.split("--overrides", 1)[1].split()
            runs["qlora" if "configs/qlora" in folders else "lora"] = folders
    return runs


DRYRUNS = dry_runs()


def config_args(config: Path) -> list[str]:
    """The ``--config`` arguments that read ``config``: an overlay on top of the config it changes."""
    base = overlay_base(config)
    return ["--config", str(config)] if base is None else ["--config", str(base), "--config", str(config)]


def entry_point(config: Path) -> list[str]:
    """The command that reads ``config``; a new kind of config must be added here to be tested."""
    if is_training_config(config):
        return [str(REPO / "train.py"), "fit"]
    if (overlay_base(config) or config).name == "evaluate.yaml":
        return [str(REPO / "scripts" / "evaluate.py")]
    raise AssertionError(f"{config}: no known command reads this config; add it to entry_point()")


TYPOS = {  # name: (config, text in it, the mistyped text, the error's words)
    "typo": ("tiny/sft.yaml", "\n  max_epochs: ", "\n  max_epoch: ", "does not accept option 'max_epoch'"),
    # the loading keywords live under model.init_args.load: the old flat key is an error, not ignored
    "dtype-outside-load": (
        "sft.yaml",
        "\n    load:\n      dtype: auto",
        "\n    dtype: auto\n    load:",
        "model.init_args: no option 'dtype'",
    ),
}


@pytest.fixture(scope="module")
def printed(tmp_path_factory, cli_batch) -> dict:
    """``--print_config`` of every config (keyed by its path), and the mistakes below (keyed by name), in one
    process (each run on its own is mostly imports). HF_HOME is an empty cache: nothing can be loaded from it."""
    cwd = tmp_path_factory.mktemp("print_config")
    train = str(REPO / "train.py")
    commands: dict = {config: [*entry_point(config), *config_args(config), "--print_config"] for config in CONFIGS}
    commands["unknown precision"] = [train, "fit", "--config", str(REPO / "configs" / "tiny" / "sft.yaml"),
                                     "--trainer.precision", "bf17", "--trainer.max_steps", "1"]  # fmt: skip
    commands["mistyped command-line key"] = [train, "fit", "--config", str(REPO / "configs" / "sft.yaml"),
                                             "--model.init_args.lerning_rate", "1", "--print_config"]  # fmt: skip
    for name, (config, good, bad, _) in TYPOS.items():
        text = (REPO / "configs" / config).read_text()
        assert good in text
        (cwd / f"{name}.yaml").write_text(text.replace(good, bad, 1))
        commands[name] = [train, "fit", "--config", str(cwd / f"{name}.yaml"), "--print_config"]
    return cli_batch(commands, cwd, {"HF_HOME": str(cwd / "hf-home")})


def test_the_dry_runs_are_read_from_the_makefile():
    assert DRYRUNS == {
        "lora": ["configs/dryrun"], "qlora": ["configs/dryrun", "configs/qlora", "configs/dryrun/qlora"],
    }  # fmt: skip


def test_the_study_and_tiny_configs_are_all_found():
    names = {str(c.relative_to(REPO)) for c in CONFIGS}
    assert {"configs/sft.yaml", "configs/tiny/sft.yaml"} <= names
    assert [c for c in CONFIGS if "trainer" in yaml.safe_load(c.read_text())], "no training config found"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: str(c.relative_to(REPO)))
def test_config_parses_without_loading_the_model(printed, config):
    result = printed[config]
    assert result.returncode == 0, result.stderr[-3000:]
    parsed = yaml.safe_load(result.stdout)
    assert set(yaml.safe_load(config.read_text())) <= set(parsed)  # every section of the file was read
    if "trainer" in parsed:
        assert {"model", "data"} <= set(parsed)
        assert parsed["model"]["init_args"]["model_name_or_path"]


@pytest.fixture(scope="module")
def dryrun_printed(tmp_path_factory, cli_batch) -> dict[tuple[str, str], subprocess.CompletedProcess]:
    """``--print_config`` of the study configs merged with each dry run's override folders."""
    cwd = tmp_path_factory.mktemp("dryrun")
    commands: dict = {}
    for name, folders in DRYRUNS.items():
        merged = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "pipeline_configs.py"),
             *(str(REPO / "configs" / f"{stage}.yaml") for stage in ("sft", "dpo", "evaluate")),
             "--overrides", *(str(REPO / folder) for folder in folders)],
            cwd=cwd, capture_output=True, text=True, check=True,
        )  # fmt: skip
        folder = cwd / merged.stdout.strip()
        for stage in ("sft", "dpo", "evaluate"):
            config = folder / f"{stage}.yaml"
            commands[name, stage] = [*entry_point(config), "--config", str(config), "--print_config"]
    return cli_batch(commands, cwd, {"HF_HOME": str(cwd / "hf-home")})


@pytest.mark.parametrize("name", DRYRUNS)
def test_the_dry_run_configs_parse_and_keep_the_studys_setup(dryrun_printed, name):
    parsed = {}
    for stage in ("sft", "dpo", "evaluate"):
        result = dryrun_printed[name, stage]
        assert result.returncode == 0, result.stderr[-3000:]
        parsed[stage] = yaml.safe_load(result.stdout)
    sft, dpo = parsed["sft"], parsed["dpo"]
    assert sft["trainer"]["accelerator"] == dpo["trainer"]["accelerator"] == "cpu"
    assert sft["model"]["init_args"]["lora"]["r"] == 16 and dpo["model"]["init_args"]["beta"] == 0.1
    sft_4bit, dpo_4bit = (stage["model"]["init_args"]["load"]["load_in_4bit"] for stage in (sft, dpo))
    assert sft_4bit is dpo_4bit is (name == "qlora")
    assert parsed["evaluate"]["load"]["merge_adapters"] is False  # stacked: a bf16 merge rounds DPO's update away
    assert dpo["model"]["init_args"]["model_name_or_path"] == f"outputs/dryrun/{name}/sft"


def test_the_dry_run_overrides_hard_code_no_precision():
    for config in OVERRIDES:
        text = "\n".join(line.split("#")[0] for line in config.read_text().splitlines())
        assert "precision" not in text and "bf16" not in text and "float" not in text, config


def test_study_sft_config_is_the_studys_setup(printed):
    result = printed[REPO / "configs" / "sft.yaml"]
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    for expected in (
        "mistralai/Mistral-7B-v0.1",
        "r: 16",
        "alpha: 32",
        "max_epochs: 3",
        "num_examples: 10000",
        "precision: auto",
    ):
        assert expected in text, expected
    parsed = yaml.safe_load(text)
    model = parsed["model"]["init_args"]
    assert model["model_name_or_path"] == "mistralai/Mistral-7B-v0.1"
    assert (model["lora"]["r"], model["lora"]["alpha"]) == (16, 32)
    # the study's AdamW settings are OptimizerSettings' defaults (lr 2e-5, warmup 3 %, cosine): the file leaves them out
    assert model["optimizer"] is None and OptimizerSettings().lr == pytest.approx(2e-5)
    assert parsed["trainer"]["max_epochs"] == 3
    assert parsed["trainer"]["precision"] == "auto"  # resolved at run time, by the hardware
    assert model["load"]["dtype"] == "auto"
    assert parsed["data"]["init_args"]["num_examples"] == 10000


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: str(c.relative_to(REPO)))
def test_no_config_hard_codes_a_precision(printed, config):
    """Precision and weight dtypes come from the rule (``auto``); print_config shows ``auto``, unresolved."""
    parsed = yaml.safe_load(printed[config].stdout)
    if "trainer" in parsed:
        assert parsed["trainer"]["precision"] == "auto"
    text = "\n".join(line.split("#")[0] for line in config.read_text().splitlines())  # comments may explain
    assert "bf16" not in text and "bfloat16" not in text and "float16" not in text


def test_an_unknown_precision_is_one_error_line(printed):
    result = printed["unknown precision"]
    assert result.returncode != 0
    assert "error: precision: unknown value 'bf17'" in result.stderr
    assert "Traceback" not in result.stderr


def test_mistyped_command_line_key_is_rejected_by_name(printed):
    result = printed["mistyped command-line key"]
    assert result.returncode != 0
    # one line naming the key by its full path (study/cli_errors.py), not jsonargparse's usage
    assert "error: model.init_args: no option 'lerning_rate' (in lightning_modules.sft.SFTModule)" in result.stderr
    assert "usage:" not in result.stderr


@pytest.mark.parametrize("name", TYPOS)
def test_mistyped_yaml_key_is_rejected_by_name(printed, name):
    result = printed[name]
    assert result.returncode != 0
    assert TYPOS[name][3] in result.stderr


def test_the_fsdp_overlay_changes_only_the_sharding_of_the_sft_stage(printed):
    """LightningCLI's merge of ``--config configs/sft.yaml --config configs/fsdp/sft.yaml`` is the planner's
    ``configs/sft.yaml+configs/fsdp/sft.yaml``: four GPUs under FSDP2, the study's LoRA, data and optimiser kept."""
    from planner.settings import read_yaml

    result = printed[REPO / "configs" / "fsdp" / "sft.yaml"]
    assert result.returncode == 0, result.stderr[-3000:]
    parsed = yaml.safe_load(result.stdout)
    composed = read_yaml(f"{REPO / 'configs/sft.yaml'}+{REPO / 'configs/fsdp/sft.yaml'}")
    for section in (parsed, composed):
        assert section["trainer"]["devices"] == 4 and section["trainer"]["accumulate_grad_batches"] == 1
        assert section["trainer"]["strategy"]["class_path"] == "lightning_modules.sharding.FSDP2Strategy"
        assert section["model"]["init_args"]["gradient_checkpointing"] is True
        assert section["run"]["dir"] == "runs/study/sft_fsdp"
    study = yaml.safe_load((REPO / "configs" / "sft.yaml").read_text())
    for key in ("lora", "optimizer", "load"):
        kept = parsed["model"]["init_args"][key] or {}
        assert kept | (study["model"]["init_args"].get(key) or {}) == kept
    assert composed["data"] == study["data"]
    assert parsed["data"]["init_args"]["train_files"] == "vicgalle/alpaca-gpt4"  # InstructionDataModule's default
