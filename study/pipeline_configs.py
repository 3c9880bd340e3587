"""Where each stage of the pipeline (``study/pipeline.py``) writes; per-seed and overridden copies of the configs.

    python scripts/pipeline_configs.py SFT.yaml DPO.yaml EVALUATE.yaml [--reward R.yaml] --seed 1 --out DIR
        writes DIR/sft.yaml, DIR/dpo.yaml, DIR/evaluate.yaml: the same configs with ``seed_everything: 1``
        (the training configs) and every output path moved into a ``seed1/`` folder (runs/tiny/sft ->
        runs/tiny/seed1/sft, outputs/tiny/sft -> outputs/tiny/seed1/sft, results -> results/seed1), so each
        training seed has its own checkpoints, exports, TensorBoard run and results. Inputs shared by every
        seed (the base model, the data, the reward model that judges them) are left where they are.

    python scripts/pipeline_configs.py SFT.yaml DPO.yaml EVALUATE.yaml [--reward R.yaml] --overrides DIR [DIR ...]
        writes the configs with each DIR's ``sft.yaml`` / ``dpo.yaml`` / ``evaluate.yaml`` / ``reward.yaml``
        deep-merged on top (mappings merged key by key, lists and scalars replaced; later DIRs win) and every
        path under a folder named in DIR's ``outputs.yaml`` (``{old root: new root}``) moved, into
        ``<new SFT run's parent>/configs/``; prints every difference from the original configs on stderr and
        that folder on stdout. Paths are matched as strings, by whole folder names. The study dry run
        (``make study-dryrun``) runs ``configs/{sft,dpo,evaluate}.yaml`` this way with ``configs/dryrun/`` (and
        ``configs/qlora/`` + ``configs/dryrun/qlora/``), so anyone sees what differs from the GPU run. (Not
        LightningCLI's own merge of repeated ``--config``: the pipeline needs each stage's merged paths before it
        runs the stage.)

A stage's paths come from its ``run:`` section through ``RunSettings.paths``, as the trainer's own do
(``train.py fit --config C --print_paths`` prints them): the pipeline never repeats a path the configs hold.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from jsonargparse import ArgumentParser

from common.settings import RunSettings
from common.trees import merged


def stage_paths(config: dict) -> tuple[str, str, str, str]:
    """``(model, export dir, run dir, last.ckpt)`` of a training config, from its ``run:`` section.

    The paths are those the trainer uses (``RunSettings.paths``); ``train.py fit --config C --print_paths``
    prints the same, but costs the CLI's imports (seconds) per call.
    """
    paths = RunSettings(**config["run"]).paths()
    if paths["dir"] is None or paths["export"] is None:
        raise KeyError("run.dir and run.export_dir")
    return config["model"]["init_args"]["model_name_or_path"], paths["export"], paths["dir"], paths["last"]


def output_roots(sft: dict, dpo: dict, evaluate: dict) -> list[str]:
    """The folders the seeded stages write under: the run folders' and exports' parents, the results dir."""
    roots = {evaluate.get("results_dir", "results")}
    for config in (sft, dpo):
        _, export, run, _ = stage_paths(config)
        roots.update({str(PurePosixPath(export).parent), str(PurePosixPath(run).parent)})
    return sorted((_clean(root) for root in roots if _clean(root) not in ("", ".")), key=len, reverse=True)


def seeded(value: Any, seed: int, roots: list[str], shared: list[str]) -> Any:
    """``value`` (a config tree) with each path under one of ``roots`` moved into ``<root>/seed<seed>``.

    A path under one of ``shared`` (outputs every seed reads, such as the reward model) is kept.
    """
    return moved(value, {root: f"{root}/seed{seed}" for root in roots}, keep=shared)


def moved(value: Any, roots: dict[str, str], keep: Sequence[str] = ()) -> Any:
    """``value`` (a config tree) with each path under a key of ``roots`` moved under its value (the longest,
    most specific key wins); a path under one of ``keep`` stays where it is."""
    if isinstance(value, dict):
        return {key: moved(item, roots, keep) for key, item in value.items()}
    if isinstance(value, list):
        return [moved(item, roots, keep) for item in value]
    if not isinstance(value, str):
        return value
    path = _clean(value)
    if any(_under(path, kept) for kept in keep):
        return value
    for old in sorted(roots, key=len, reverse=True):
        if _under(path, _clean(old)):
            return str(PurePosixPath(roots[old]) / path[len(_clean(old)) :].lstrip("/"))
    return value


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs (dotted keys, ``[i]`` for list items)."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for key in [*old, *(key for key in new if key not in old)]:
            lines += differences(
                old.get(key, "(unset)"), new.get(key, "(removed)"), f"{prefix}{'.' if prefix else ''}{key}"
            )
        return lines
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            line for i, (a, b) in enumerate(zip(old, new, strict=True)) for line in differences(a, b, f"{prefix}[{i}]")
        ]
    return [] if old == new else [f"{prefix}: {old} -> {new}"]


def write_overridden(sources: dict[str, str], directories: list[str]) -> Path:
    """Merge each of ``directories``' override files onto the configs in ``sources``; return the folder written."""
    roots: dict[str, str] = {}
    overrides: dict[str, dict] = {name: {} for name in sources}
    for directory in directories:
        if not Path(directory).is_dir():
            raise SystemExit(f"error: --overrides {directory}: no such folder")
        if (Path(directory) / "outputs.yaml").is_file():
            roots.update({str(k): str(v) for k, v in read_config(str(Path(directory) / "outputs.yaml")).items()})
        for name in sources:
            if (Path(directory) / f"{name}.yaml").is_file():
                overrides[name] = merged(overrides[name], read_config(str(Path(directory) / f"{name}.yaml")))
    originals = {name: read_config(path) for name, path in sources.items()}
    configs = {name: moved(merged(originals[name], overrides[name]), roots) for name in sources}
    try:
        out = Path(stage_paths(configs["sft"])[2]).parent / "configs"
    except (KeyError, StopIteration, TypeError) as exc:
        raise SystemExit(f"error: the SFT config lacks {exc} (its run: section)") from None
    out.mkdir(parents=True, exist_ok=True)
    print(f"[overrides] {', '.join(directories)} on {', '.join(sources.values())} -> {out}/", file=sys.stderr)
    for old, new in roots.items():
        print(f"[overrides]   every path under {old}/ -> {new}/", file=sys.stderr)
    for name, path in sources.items():
        for line in differences(originals[name], merged(originals[name], overrides[name])):
            print(f"[overrides]   {name}: {line}", file=sys.stderr)
        header = f"# {path} with the overrides of {', '.join(directories)}, written by scripts/pipeline_configs.py\n"
        (out / f"{name}.yaml").write_text(header + yaml.safe_dump(configs[name], sort_keys=False))
    return out


def _clean(path: str) -> str:
    return str(PurePosixPath(path)) if path else path


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def read_config(path: str) -> dict:
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"error: cannot read the config {path}: {exc}") from None
    if not isinstance(config, dict):
        raise SystemExit(f"error: {path} is not a YAML mapping")
    return config


def write_seeded(sources: dict[str, str], seed: int, out: Path) -> dict[str, str]:
    """Per-seed copies of the ``sft`` / ``dpo`` / ``evaluate`` configs in ``out``; returns the configs to run.

    The copies have ``seed_everything: seed`` (training configs) and every output path moved into a
    ``seed<seed>/`` folder; what every seed shares (the base model, the data, the reward model that judges them:
    ``sources["reward"]``, returned unchanged) stays where it is.
    """
    configs = {name: read_config(sources[name]) for name in ("sft", "dpo", "evaluate")}
    try:
        reward = stage_paths(read_config(sources["reward"])) if "reward" in sources else None
        roots = output_roots(configs["sft"], configs["dpo"], configs["evaluate"])
    except (KeyError, StopIteration, TypeError) as exc:
        raise SystemExit(f"error: a stage config lacks {exc} (its run: section)") from None
    shared = [_clean(path) for path in (reward[1], reward[2]) if path] if reward else []
    out.mkdir(parents=True, exist_ok=True)
    written = dict(sources)
    for name, config in configs.items():
        copy = seeded(config, seed, roots, shared)
        if "trainer" in copy:  # a training config (the evaluation has no seed: it decodes greedily)
            copy["seed_everything"] = seed
        header = (
            f"# {sources[name]} for training seed {seed}, written by study/pipeline_configs.py:\n"
            f"# seed_everything: {seed}; outputs under {', '.join(roots)} moved into seed{seed}/.\n"
        )
        (out / f"{name}.yaml").write_text(header + yaml.safe_dump(copy, sort_keys=False))
        written[name] = str(out / f"{name}.yaml")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sft")
    parser.add_argument("dpo")
    parser.add_argument("evaluate")
    parser.add_argument("--reward", help="the reward-model stage's config (its export judges the responses)")
    parser.add_argument("--seed", type=int, help="write per-seed copies of the configs (needs --out)")
    parser.add_argument("--out", help="folder for the per-seed copies")
    parser.add_argument("--overrides", nargs="+", metavar="DIR", help="merge these folders' override files")
    args = parser.parse_args(argv)
    if (args.seed is None) != (args.out is None) or (args.seed is None) == (args.overrides is None):
        parser.error("give either --overrides DIR... or --seed S --out DIR")
    sources = {"sft": args.sft, "dpo": args.dpo, "evaluate": args.evaluate} | (
        {"reward": args.reward} if args.reward else {}
    )
    if args.overrides:
        print(write_overridden(sources, args.overrides))
    else:
        write_seeded(sources, args.seed, Path(args.out))
        print(args.out)


if __name__ == "__main__":
    sys.exit(main())
