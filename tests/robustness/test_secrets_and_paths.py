"""Security and hygiene of a run: a planted Hub token appears in nothing a run writes or prints,
nothing is written outside the configured folders, remote code stays off, and every training
config carries the guards (NaN guard, SIGTERM checkpoint, RNG states, atomic weights-only IO,
gradient clipping).

One tiny SFT fit and one DPO fit from its export run with ``HF_TOKEN`` set to a fake token, from
an empty working folder, with every output path in the configs pointing under ``out/``.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import yaml
from config_overlays import is_training_config, overlay_base
from fault_injection import REPO, finish, run_fit, start_fit, tiny_config

FAKE_TOKEN = "hf_FAKEtokenPlantedByTheRobustnessTest0123"
TOKEN_ENV = {"HF_TOKEN": FAKE_TOKEN, "HUGGING_FACE_HUB_TOKEN": FAKE_TOKEN}
# configs/dryrun/ holds override files, parts of the study's configs (tests/test_configs.py checks them merged);
# a methods overlay (configs/<set>/methods/M.yaml) is read on top of its set's DPO config, and checked so.
TRAINING_CONFIGS = sorted(
    p for p in REPO.glob("configs/**/*.yaml") if "dryrun" not in p.relative_to(REPO).parts and is_training_config(p)
)


def read_training_config(path: Path) -> dict:
    """The config a run reads from ``path``: an overlay merged on the config it is read on top of."""
    from common.trees import merged

    base = overlay_base(path)
    overlay = yaml.safe_load(path.read_text())
    return overlay if base is None else merged(yaml.safe_load(base.read_text()), overlay)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir) -> dict:
    root = tmp_path_factory.mktemp("secrets")
    out, cwd, configs, hf_home = root / "out", root / "cwd", root / "configs", root / "hf-home"
    for folder in (cwd, configs):
        folder.mkdir()
    env = {**TOKEN_ENV, "HF_HOME": str(hf_home)}
    outputs = []
    short = {"max_steps": 3, "limit_val_batches": 1, "precision": "32"}
    sft = tiny_config("sft", out, tiny_model_dir, **short)
    sft["data"]["init_args"]["num_examples"] = 48
    result = run_fit(sft, configs / "sft.yaml", env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs.append(result)
    dpo = tiny_config("dpo", out, out / "outputs" / "sft", **short)
    dpo["data"]["init_args"]["num_examples"] = 24
    result = run_fit(dpo, configs / "dpo.yaml", env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs.append(result)
    printed = finish(start_fit(dpo, configs / "dpo-print.yaml", "--print_config", env=env, cwd=cwd))
    assert printed.returncode == 0, printed.stderr[-3000:]
    outputs.append(printed)
    return {"root": root, "out": out, "cwd": cwd, "hf_home": hf_home, "outputs": outputs}


def written_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_planted_token_is_in_no_file_and_no_output(run):
    files = written_files(run["out"]) + written_files(run["cwd"]) + written_files(run["hf_home"])
    names = {p.name for p in files}
    # The search covers what matters: resolved configs, hparams, TensorBoard events, checkpoints,
    # exports, the reference cache.
    assert {
        "config.yaml",
        "hparams.yaml",
        "last.ckpt",
        "adapter_model.safetensors",
        "export_info.json",
        "training_config.yaml",
    } <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    assert any(n.startswith("reference-logps-") for n in names)
    token = FAKE_TOKEN.encode()
    leaks = [str(p) for p in files if token in p.read_bytes()]
    assert leaks == []
    for result in run["outputs"]:
        assert FAKE_TOKEN not in result.stdout + result.stderr


def test_nothing_is_written_outside_the_configured_folders(run):
    assert written_files(run["cwd"]) == []  # the working folder stays empty
    assert sorted(p.name for p in run["root"].iterdir()) == ["configs", "cwd", "out"]  # no cache folder appeared
    assert sorted(p.name for p in run["out"].iterdir()) == ["outputs", "runs"]  # the configs' two roots
    assert sorted(p.name for p in (run["out"] / "outputs").iterdir()) == ["dpo", "sft"]


def test_no_code_of_ours_reads_the_whole_environment():
    """Only named variables may be read (``os.environ[...]``, ``.get(...)``): never the mapping itself,
    which is how a token ends up in a log or a saved config."""
    sources = [REPO / "train.py"] + [
        p
        for folder in ("lightning_modules", "datamodules", "callbacks", "evaluation", "scripts")
        for p in (REPO / folder).rglob("*.py")
    ]
    whole = re.compile(r"os\.environ(?!\s*(\[|\.get\(|\.setdefault\())|os\.environ\.(items|copy|keys|values)\(")
    offenders = [
        f"{p}:{n}" for p in sources for n, line in enumerate(p.read_text().splitlines(), 1) if whole.search(line)
    ]
    assert offenders == []


def test_remote_code_is_off_unless_set():
    from common.settings import LoadSettings
    from datamodules.base import TokenizedDataModule
    from datamodules.instruction import InstructionDataModule
    from datamodules.preference import PreferenceDataModule
    from datamodules.tokenizer import load_tokenizer
    from lightning_modules import loading
    from lightning_modules.dpo import DPOModule
    from lightning_modules.reward import RewardModule
    from lightning_modules.sft import SFTModule

    for thing in (
        TokenizedDataModule,  # the data modules take it through **kwargs
        load_tokenizer,
        loading.load_causal_lm,
        loading.load_sft_model,
    ):
        assert inspect.signature(thing).parameters["trust_remote_code"].default is False, thing
    # The training modules take it in `load`: off in a load: section, and off without one.
    assert LoadSettings().trust_remote_code is False
    for module in (SFTModule, DPOModule, RewardModule):
        assert inspect.signature(module).parameters["load"].default is None, module
    assert loading.training_load_settings(None, None).trust_remote_code is False
    for data_module in (InstructionDataModule, PreferenceDataModule):  # built without loading anything
        assert data_module("any/tokenizer").trust_remote_code is False, data_module
    for config in TRAINING_CONFIGS:
        parsed = read_training_config(config)
        assert not (parsed["model"]["init_args"].get("load") or {}).get("trust_remote_code", False), config
        for section in ("model", "data"):
            assert not parsed[section]["init_args"].get("trust_remote_code", False), config


@pytest.mark.parametrize("config", TRAINING_CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_training_config_carries_the_guards(config):
    """The guards come from the config's ``run:`` section (``callbacks.run``), not from a list each YAML repeats."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from callbacks.checkpoint_io import AtomicCheckpointIO
    from callbacks.checkpoints import ResumeCheckpoint
    from callbacks.nan_guard import NaNGuard
    from callbacks.resume import RandomStateCheckpoint
    from callbacks.run import run_callbacks, run_plugins
    from callbacks.signals import SigtermCheckpoint
    from common.settings import RunSettings

    parsed = read_training_config(config)
    trainer = parsed["trainer"]
    assert trainer.get("gradient_clip_val"), "gradient clipping must be on"
    assert not {"callbacks", "logger", "plugins"} & set(trainer), "the run: section adds these"
    run = RunSettings(**parsed["run"])
    assert run.dir and run.export_dir
    callbacks = run_callbacks(run)
    for needed in (NaNGuard, SigtermCheckpoint, RandomStateCheckpoint):
        assert sum(isinstance(c, needed) for c in callbacks) == 1, needed
    writers_of_last = [c for c in callbacks if isinstance(c, ModelCheckpoint) and c.save_last]
    assert len(writers_of_last) == 1 and isinstance(writers_of_last[0], ResumeCheckpoint)  # no last-v1.ckpt
    assert writers_of_last[0]._every_n_train_steps == run.checkpoint_every_n_steps  # a mid-epoch resume point
    assert [type(p) for p in run_plugins()] == [AtomicCheckpointIO]
    if trainer.get("devices", 1) not in (1, "1") or "strategy" in trainer:
        assert trainer.get("use_distributed_sampler") is False  # the DataModule shards by rank itself
