"""Nested dicts: configs as LightningCLI saved them (read and composed), the evaluation's results file."""

from __future__ import annotations

from typing import Any


def dig(tree: dict | None, *keys: str) -> Any:
    """``tree[k1][k2]...``, or ``None`` where a level is missing, ``None`` or not a dict
    (``dig(config, "model", "init_args", "beta")``)."""
    for key in keys:
        if not isinstance(tree, dict) or tree.get(key) is None:
            return None
        tree = tree[key]
    return tree


def merged(base: Any, override: Any) -> Any:
    """``override`` deep-merged onto ``base``: mappings key by key; lists, scalars and ``null`` replace (how
    LightningCLI reads a second ``--config`` on top of the first; where an overlay changes a ``class_path``, as the
    KTO overlays do, LightningCLI also checks the carried ``init_args`` against the new class and this does not)."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{key: merged(base.get(key), item) for key, item in override.items()}}
    return override
