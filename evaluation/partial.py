"""Each variant's outputs kept as soon as it is done, so an interrupted evaluation resumes where it stopped.

An evaluation loads, generates and scores one variant after the other (on the study's GPU, tens of minutes each);
a SIGTERM or SIGKILL in the third variant used to lose the first two. Now each finished variant's outputs are
written atomically to ``<results_dir>/partial/<variant>.json`` with a key of everything they depend on (the
evaluation settings, the variant's exports, the prompts and held-out rows); a rerun takes a variant whose key
matches from there, computes the others, and writes the same results as an uninterrupted run. The folder is removed
once ``evaluation_results.json`` is written: it resumes an interrupted evaluation and is not a cache across runs
(a code change would not change its key).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_text
from common.hashing import content_hash
from evaluation.harness import TaskOutcomes
from evaluation.scoring import VariantOutput
from evaluation.variants import VariantBuild, VariantSources
from lightning_modules.loading import read_export_info

PARTIAL_DIR = "partial"
NOT_IN_KEY = ("results_dir", "variants", "methods", "judge", "targeted_categories")
"""Config fields that change no variant's own outputs (which variants run, the judge after them, the statistics)."""


def variant_key(name: str, sources: VariantSources, settings: dict[str, Any], inputs: dict[str, Any]) -> str:
    """What variant ``name``'s outputs depend on, hashed: the evaluation settings that reach it (``settings``: the
    config as a dict, resolved template, device, precision, load), where its weights come from (each export's
    ``export_info.json``) and the rows it is asked and scored on (``inputs``)."""
    exports = [sources.sft] if name != "base" else []
    exports += [sources.export_of(name)] if name not in ("base", "sft") else []
    weights = {
        "base": (sources.base, sources.base_revision),
        "exports": {str(path): read_export_info(path) for path in exports if path is not None},
    }
    kept = {key: value for key, value in settings.items() if key not in NOT_IN_KEY}
    return content_hash(name, kept, weights, inputs)


def path_of(results_dir: str | Path, name: str) -> Path:
    return Path(results_dir) / PARTIAL_DIR / f"{name}.json"


def save(results_dir: str | Path, name: str, key: str, output: VariantOutput, build: VariantBuild) -> None:
    """Keep variant ``name``'s outputs and build under ``key``, atomically."""
    record = {"key": key, "output": asdict(output), "build": asdict(build)}
    atomic_write_text(path_of(results_dir, name), json.dumps(record))


def load(results_dir: str | Path, name: str, key: str) -> tuple[VariantOutput, VariantBuild] | None:
    """Variant ``name``'s kept outputs and build, if kept under ``key`` (another key or an unreadable file:
    ``None``, so it is computed again)."""
    path = path_of(results_dir, name)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("key") != key:
        return None
    output = record["output"]
    pair_logps = output["pair_logps"]
    restored = VariantOutput(
        responses=output["responses"],
        pair_logps=None if pair_logps is None else (pair_logps[0], pair_logps[1]),
        nll=None if output["nll"] is None else [tuple(item) for item in output["nll"]],
        seconds=output["seconds"],
        answered=output["answered"],
        harness={task: TaskOutcomes(**outcomes) for task, outcomes in output["harness"].items()},
    )
    return restored, VariantBuild(**record["build"])


def clear(results_dir: str | Path) -> None:
    """Remove the kept outputs (the evaluation is complete)."""
    shutil.rmtree(Path(results_dir) / PARTIAL_DIR, ignore_errors=True)
