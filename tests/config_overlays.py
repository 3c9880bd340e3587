"""Which configs are overlays, and the config each is read on top of (imported by the config tests)."""

from __future__ import annotations

from pathlib import Path

import yaml

OVERLAY_DIRS = {"methods": "dpo.yaml", "fsdp": None, "qlora": None}
"""Folders of overlays, each read on top of a config of the folder above: the methods-study overlays
(``configs/<set>/methods/M.yaml``) on the set's DPO config, as the pipeline reads them; the sharding overlay
(``configs/fsdp/sft.yaml``) and the QLoRA overlays (``configs/qlora/{sft,dpo,evaluate}.yaml``) on the stage of
their own name, as their comments say to run them."""


def is_training_config(config: Path) -> bool:
    """Whether ``config`` (or, for an overlay, the config it is read on top of) is read by ``train.py fit``."""
    return "trainer" in yaml.safe_load((overlay_base(config) or config).read_text())


def overlay_base(config: Path) -> Path | None:
    """The config ``config`` is read on top of, or ``None`` when it is a whole config."""
    if config.parent.name not in OVERLAY_DIRS:
        return None
    return config.parent.parent / (OVERLAY_DIRS[config.parent.name] or config.name)
