"""The configs say only what differs from the classes' defaults (docs: README "Configs compose").

A key restated at its default is noise to a reader ("is 16 the study's choice or the class's?") and a second
place to change when the default moves. Read from the YAML files with the classes' signatures, as LightningCLI
reads them: ``model`` / ``data`` through their ``class_path`` (a ``**kwargs`` followed to the base class, nested
settings dataclasses field by field), ``trainer`` against Lightning's ``Trainer``, ``run`` against
``RunSettings`` and an evaluation config against ``EvaluationConfig``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import yaml
from config_overlays import overlay_base

from common.settings import RunSettings
from common.signatures import NO_DEFAULT, import_class, options, settings_class
from common.trees import merged
from evaluation.config import EvaluationConfig

REPO = Path(__file__).resolve().parents[1]
# configs/dryrun/ holds the dry run's changes, which restate on purpose what they change back.
CONFIGS = sorted(c for c in REPO.glob("configs/**/*.yaml") if "dryrun" not in c.relative_to(REPO).parts)


def restated(prefix: str, cls: type, values: dict | None) -> list[str]:
    """The keys of ``values`` (read into ``cls``) set to ``cls``'s default, as ``section.key = value``."""
    found = []
    accepted = options(cls)
    for key, value in (values or {}).items():
        if key not in accepted:
            continue
        annotation, default = accepted[key]
        nested = settings_class(annotation)
        if isinstance(value, dict) and nested is not None:
            found += restated(f"{prefix}.{key}", nested, value)
        elif default is not NO_DEFAULT and value == (list(default) if isinstance(default, tuple) else default):
            found.append(f"{prefix}.{key} = {value!r}")
    return found


CHAINED_PATHS = {".sft_adapter", ".dpo_adapter", ".results_dir"}
"""An evaluation config's paths that chain it to the training stages: written out even at their defaults, since
the pipeline moves them per seed and per ``--overrides`` folder reading them from the file
(``study/pipeline_configs.py``); a training config's are its ``run:`` section's, which has no defaults."""


def restated_defaults(config: dict) -> list[str]:
    """Every key of a training or evaluation config that restates its class's default."""
    if "trainer" not in config and "model" not in config:
        return [entry for entry in restated("", EvaluationConfig, config) if entry.split(" = ")[0] not in CHAINED_PATHS]
    found = restated("trainer", L.Trainer, config.get("trainer"))
    found += restated("run", RunSettings, config.get("run"))
    for section in ("model", "data"):
        block = config.get(section) or {}
        if "class_path" in block:
            found += restated(section, import_class(block["class_path"]), block.get("init_args"))
    return found


def restated_base_values(overlay: dict, base: dict, prefix: str = "") -> list[str]:
    """The keys of an overlay that set what its base config already has."""
    found = []
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            found += restated_base_values(value, base[key], f"{prefix}{key}.")
        elif key in base and base[key] == value:
            found.append(f"{prefix}{key} = {value!r}")
    return found


def novel_keys(overlay: dict, base: dict, prefix: str = "") -> set[str]:
    """The keys an overlay sets that its base config does not have, as :func:`restated` names them
    (``model.init_args.lora`` -> ``model.lora``). Only these can restate a class default needlessly: an overlay
    may set a default to undo the base's value (``losses: null`` for KTO on a config that lists DPO's loss)."""
    found = set()
    for key, value in overlay.items():
        name = prefix if key == "init_args" else f"{prefix}{'.' if prefix else ''}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            found |= novel_keys(value, base[key], name)
        elif key not in base:
            found.add(name)
    return found


def is_novel(entry: str, novel: set[str]) -> bool:
    """Whether a :func:`restated` entry (``model.lora.r = 16``) lies in a novel key (``model.lora.r``,
    ``model.lora``)."""
    parts = entry.split(" = ")[0].lstrip(".").split(".")
    return any(".".join(parts[:n]) in novel for n in range(1, len(parts) + 1))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: str(c.relative_to(REPO)))
def test_no_config_restates_a_default(config):
    """A whole config against the classes' defaults; an overlay against its base config, and, read on top of
    it, against the defaults for the keys it adds."""
    values = yaml.safe_load(config.read_text())
    base_path = overlay_base(config)
    if base_path is None:
        assert restated_defaults(values) == []
        return
    base = yaml.safe_load(base_path.read_text())
    assert restated_base_values(values, base) == []
    novel = novel_keys(values, base)
    assert [entry for entry in restated_defaults(merged(base, values)) if is_novel(entry, novel)] == []


def test_the_check_finds_restated_defaults_at_every_level():
    config = {
        "trainer": {"max_epochs": 3, "accumulate_grad_batches": 1},
        "model": {
            "class_path": "lightning_modules.sft.SFTModule",
            "init_args": {"model_name_or_path": "m", "lora": {"r": 16, "alpha": 64}, "packed_sdpa": True},
        },
        "data": {"class_path": "datamodules.InstructionDataModule", "init_args": {"pack": True, "batch_size": 4}},
    }
    assert restated_defaults(config) == [
        "trainer.accumulate_grad_batches = 1", "model.lora.r = 16", "model.packed_sdpa = True", "data.pack = True",
    ]  # fmt: skip
    assert restated_defaults({"seed": 0, "judge": {"batch_size": 4}}) == []


def test_an_overlay_may_undo_its_base_but_not_restate_it():
    base = {"model": {"init_args": {"losses": [{"name": "sigmoid"}], "beta": 0.2}}}
    overlay = {"model": {"init_args": {"losses": None, "beta": 0.2, "nll_weight": 0.0}}}
    assert restated_base_values(overlay, base) == ["model.init_args.beta = 0.2"]
    assert novel_keys(overlay, base) == {"model.nll_weight"}
    assert is_novel("model.nll_weight = 0.0", {"model.nll_weight"}) and not is_novel(
        "model.losses = None", {"model.nll_weight"}
    )
    assert is_novel("model.lora.r = 16", {"model.lora"})
