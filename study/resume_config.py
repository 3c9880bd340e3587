"""A resume (``--ckpt_path last``) must continue the run its checkpoint belongs to: the same model, data, loss,
optimiser and batch. The run's own resolved config (``<run.dir>/tensorboard/config.yaml``, written at its start)
is compared with the new one, before anything loads; what would change the training is refused, listed key by key,
unless ``run.allow_config_change: true`` says the change is meant.

What does not change the training is left out of the comparison: the ``run:`` section (paths, checkpoint interval),
the callbacks and logger, progress and logging options, validation's own settings, and the data loading that only
changes speed (workers, caches).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from common.errors import ConfigError

TRAINER_KEYS = (
    "precision",
    "max_epochs",
    "max_steps",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "devices",
    "num_nodes",
    "limit_train_batches",
)
"""The trainer settings that change what is trained (the rest: logging, validation, progress)."""
IGNORED = (
    "model.init_args.reference_cache_dir",
    "data.init_args.cache_dir",
    "data.init_args.num_workers",
    "data.init_args.eval_batch_size",
    "data.init_args.reference_batch_size",
)
"""Keys under ``model`` and ``data`` that change only where things are cached or how fast they load."""
LINKS = {"data.init_args.tokenizer_name_or_path": "model.init_args.model_name_or_path"}
"""The CLI's linked arguments, target -> source: unset, the target is the source's value (the saved config holds
the target as given, the parsed one sometimes with the link applied)."""


def plain(value: Any) -> Any:
    """``value`` as YAML gives it back: tuples as lists (the parsed config holds ``betas: (0.9, 0.999)``, the saved
    file ``[0.9, 0.999]``)."""
    if isinstance(value, tuple | list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model.init_args.optimizer.lr": 1e-3, ...}``: every leaf of a nested mapping by its dotted key."""
    if not isinstance(tree, dict):
        return {prefix: plain(tree)}
    leaves: dict[str, Any] = {}
    for key, value in tree.items():
        leaves |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return leaves


def training_settings(config: dict) -> dict[str, Any]:
    """The leaves of a run's config that change its training: ``seed_everything``, ``model.*``, ``data.*`` but
    :data:`IGNORED`, and ``trainer.<TRAINER_KEYS>``."""
    leaves = flatten({key: config.get(key) for key in ("seed_everything", "model", "data")})
    kept = {key: value for key, value in leaves.items() if not key.startswith(IGNORED)}
    for target, source in LINKS.items():
        if kept.get(target) is None and source in kept:
            kept[target] = kept[source]
    trainer = config.get("trainer") or {}
    return kept | {f"trainer.{key}": trainer.get(key) for key in TRAINER_KEYS}


def differences(saved: dict, current: dict) -> list[str]:
    """``key: saved -> current`` for each training setting that differs, in key order."""
    before, after = training_settings(saved), training_settings(current)
    changed = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
    return [f"{key}: {before.get(key)!r} -> {after.get(key)!r}" for key in changed]


def check_resume(saved_config: Path, current: dict) -> None:
    """Refuse a resume whose training settings differ from the run's saved config (none saved: nothing to check).

    Raises:
        ConfigError: the differing keys, and the two ways on (the flag, or a fresh run).
    """
    if not saved_config.is_file():
        return
    saved = yaml.safe_load(saved_config.read_text(encoding="utf-8")) or {}
    changed = differences(saved, current)
    if changed:
        shown = "; ".join(changed[:8]) + (f"; and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise ConfigError(
            f"--ckpt_path resumes a run trained with other settings ({saved_config}): {shown}. A resumed run must "
            "continue the one its checkpoint belongs to: restore those settings, or start afresh in another "
            "run.dir, or set run.allow_config_change: true if the change is meant."
        )
