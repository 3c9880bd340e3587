"""LightningDataModules for instruction (SFT), preference (DPO) and unpaired preference (KTO) data.

The two DataModules are imported on first use (PEP 562), not with the package: they need ``datasets``, and the
pieces below them (``datamodules.tokenizer``, ``.collate``, ``.templates``) are used where it is not installed
(``benchmarks/gpu_check.py`` on a GPU image without it). ``from datamodules import InstructionDataModule`` and a
config's ``class_path: datamodules.InstructionDataModule`` work as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datamodules.instruction import InstructionDataModule
    from datamodules.preference import PreferenceDataModule
    from datamodules.unpaired import UnpairedDataModule

_LAZY = {
    "InstructionDataModule": "datamodules.instruction",
    "PreferenceDataModule": "datamodules.preference",
    "UnpairedDataModule": "datamodules.unpaired",
}

__all__ = ["InstructionDataModule", "PreferenceDataModule", "UnpairedDataModule"]


def __getattr__(name: str) -> type:
    if name not in _LAZY:
        raise AttributeError(f"module 'datamodules' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
