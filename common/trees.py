"""Reading nested dicts: configs as LightningCLI saved them, the evaluation's results file."""

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
