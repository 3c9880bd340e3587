"""The precomputed-reference cache: reference log-probs of every pair, computed once, kept on disk.

With ``reference: precomputed`` the DPO module runs the frozen SFT model over the train and val
pairs once before the first step and stores the per-pair log-probs in a file keyed by a hash of
(reference model, data, template, max lengths). Training then reads them from the batch: no
reference forward pass per step and no reference weights in memory during training.
"""

from __future__ import annotations

from pathlib import Path

import torch

from common.hashing import content_hash


def reference_identity(model_name_or_path: str) -> list:
    """What identifies the reference weights: the path plus name, size and mtime of each file.

    Cheap to compute even for a 14 GB checkpoint; a re-exported SFT model (new mtime) invalidates
    the cache, which errs on the safe side.
    """
    folder = Path(model_name_or_path)
    if not folder.is_dir():
        return [model_name_or_path]
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return [str(folder.resolve())] + [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def cache_path(cache_dir: str, model_name_or_path: str, data_fingerprint: str, precision: str) -> Path:
    """The cache file for one split: the key covers the reference, the tokenised data and the precision."""
    key = content_hash(reference_identity(model_name_or_path), data_fingerprint, precision)
    return Path(cache_dir) / f"reference-logps-{key}.pt"


def load_cache(path: Path) -> dict[str, torch.Tensor]:
    """Load a cache file (tensors only, ``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)
