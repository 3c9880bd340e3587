"""Which configs are overlays, and the config each is read on top of (imported by the config tests)."""

from __future__ import annotations

from pathlib import Path

OVERLAY_DIRS = {"methods": "dpo.yaml", "fsdp": None}
"""Folders of overlays, each read on top of a config of the folder above: the methods-study overlays
(``configs/<set>/methods/M.yaml``) on the set's DPO config, as the pipeline reads them; the sharding overlay
(``configs/fsdp/sft.yaml``) on the stage of its own name, as its comment says to run it."""


def overlay_base(config: Path) -> Path | None:
    """The config ``config`` is read on top of, or ``None`` when it is a whole config."""
    if config.parent.name not in OVERLAY_DIRS:
        return None
    return config.parent.parent / (OVERLAY_DIRS[config.parent.name] or config.name)
