"""The whole study, stage by stage: [tiny base -> reward model] -> SFT -> DPO -> evaluate -> report.

    python scripts/run_study.py [tiny|study] [--seeds S [S ...]] [--force] [--precision P]
                               [--overrides DIR [DIR ...]] [--methods M [M ...]]

    tiny   (default) the embedded CPU study: configs/tiny/{sft,dpo,reward,evaluate}.yaml, results in results/
    study  the real study on a GPU (Mistral-7B-v0.1): configs/{sft,dpo,evaluate}.yaml, results/study/
    --seeds S ...   train SFT and DPO once per training seed, each into its own folders (runs/<set>/seedS,
                    outputs/<set>/seedS, results[/study]/seedS), evaluate and report each, then report all
                    seeds together (mean +- sd across seeds) in <results>/seeds/report.md
    --precision P   train (and pre-train the tiny base) in P, e.g. 32-true, instead of the configs'
                    `auto` (bf16-mixed where the hardware computes bf16 natively, else 32-true / 16-mixed);
                    a complete stage recorded in another precision is redone
    --overrides DIR ...  run the set's configs with each DIR's {sft,dpo,evaluate,reward}.yaml merged on top and
                    the output folders its outputs.yaml names moved (study/pipeline_configs.py prints every
                    difference); `make study-dryrun` runs `study --overrides configs/dryrun [configs/dryrun/qlora]`
    --methods M ... the methods study: after DPO, train each other method M from the same SFT export
                    (configs/<set>/methods/M.yaml read on top of the DPO config: ipo, simpo, orpo, kto...; dpo
                    is the DPO stage itself; base_orpo is ORPO from the base model, as its paper trains it),
                    each into its own run and export folder, then evaluate them all
                    with base, SFT and SFT+DPO and report in <results>/methods/report.md (a table of the
                    methods, each tested against SFT and against DPO)

A stage is skipped when its output is complete (the tiny base's weights, an export's export_info.json,
evaluation_results.json, report.md), so a rerun after a crash continues where it stopped (and a rerun with
--seeds skips the seeds already complete): a training stage that left a last.ckpt resumes from it
(--ckpt_path last). A stage that runs makes the stages that read its output start afresh: their old outputs,
checkpoints and TensorBoard event files are removed first. --force redoes every stage from scratch.

Environment: PYTHON, the interpreter of the stages (default: the one running the pipeline).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import RunInUseError
from common.provenance import MODEL_FILE_SUFFIXES, files_sha256
from common.run_lock import lock_run_folder
from common.trees import merged
from study.pipeline_configs import read_config, stage_paths, write_overridden, write_seeded

SETS = {
    # name: (sft, dpo, evaluate, reward or None, offline by default)
    "tiny": ("configs/tiny/sft.yaml", "configs/tiny/dpo.yaml", "configs/tiny/evaluate.yaml",
             "configs/tiny/reward.yaml", True),  # the reward model judges the generated responses
    "study": ("configs/sft.yaml", "configs/dpo.yaml", "configs/evaluate.yaml", None, False),
}  # fmt: skip
METHODS_DIRS = {"tiny": "configs/tiny/methods", "study": "configs/methods"}
"""Each set's method overlays: ``<dir>/<method>.yaml`` is read on top of the set's DPO config."""


def method_overlays(set_name: str) -> dict[str, str]:
    """The methods a set can train, by name, with their overlay config (``dpo``, the DPO stage, has none)."""
    folder = Path(METHODS_DIRS[set_name])
    return {path.stem: str(path) for path in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


class UsageError(Exception):
    """A bad command line: printed as one ``error:`` line, exit status 2."""


@dataclass
class Options:
    """The command line."""

    set: str = "tiny"
    force: bool = False
    precision: str = ""
    seeds: list[int] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)


def values_after(argv: list[str], i: int) -> tuple[list[str], int]:
    """The values of the option at ``argv[i]``: the arguments up to the next option or set name, and the index of
    the last one read."""
    values = []
    while i + 1 < len(argv) and not argv[i + 1].startswith("-") and argv[i + 1] not in SETS:
        values.append(argv[i + 1])
        i += 1
    return values, i


def parse(argv: list[str]) -> Options:
    """The options of ``argv``; :class:`UsageError` names what is wrong."""
    options, i = Options(), 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            print(__doc__.split("\n\n", 2)[1])
            sys.exit(0)
        if arg == "--force":
            options.force = True
        elif arg == "--precision":
            if i + 1 >= len(argv) or not argv[i + 1]:
                raise UsageError("--precision needs a value, e.g. 32-true")
            options.precision, i = argv[i + 1], i + 1
        elif arg == "--seeds":
            while i + 1 < len(argv) and argv[i + 1].isdigit():
                options.seeds.append(int(argv[i + 1]))
                i += 1
            if not options.seeds:
                raise UsageError("--seeds needs one or more integers, e.g. --seeds 0 1 2")
        elif arg == "--overrides":
            options.overrides, i = values_after(argv, i)
            if not options.overrides:
                raise UsageError("--overrides needs one or more folders, e.g. --overrides configs/dryrun")
        elif arg == "--methods":
            options.methods, i = values_after(argv, i)
            if not options.methods:
                raise UsageError("--methods needs one or more method names, e.g. --methods dpo ipo simpo orpo kto")
        elif arg in SETS:
            options.set = arg
        else:
            raise UsageError(
                f"unknown argument '{arg}'; expected tiny, study, --seeds S..., --force, --precision P, "
                "--overrides DIR... or --methods M..."
            )
        i += 1
    if len(set(options.seeds)) != len(options.seeds):
        raise UsageError(f"--seeds lists a seed twice: {' '.join(map(str, options.seeds))}")
    if options.methods:
        known = ["dpo", *method_overlays(options.set)]
        unknown = [name for name in options.methods if name not in known]
        if unknown:
            raise UsageError(f"--methods: unknown method {unknown[0]!r}; the {options.set} set has {', '.join(known)}")
        if len(set(options.methods)) != len(options.methods):
            raise UsageError(f"--methods lists a method twice: {' '.join(options.methods)}")
        if options.seeds:
            raise UsageError("--methods and --seeds together are not supported yet: run the methods study for one seed")
    return options


@dataclass
class StagePaths:
    """Where the stages of one training seed write (``study.pipeline_configs.stage_paths`` of each config)."""

    configs: dict[str, str]
    base: str
    sft_export: str
    sft_run: str
    sft_last: str
    dpo_export: str
    dpo_run: str
    dpo_last: str
    results: str
    reward: tuple[str, str, str] | None  # export, run, last.ckpt

    @classmethod
    def of(cls, configs: dict[str, str]) -> StagePaths:
        read = {name: read_config(path) for name, path in configs.items()}
        base, sft_export, sft_run, sft_last = stage_paths(read["sft"])
        _, dpo_export, dpo_run, dpo_last = stage_paths(read["dpo"])
        reward = stage_paths(read["reward"])[1:] if "reward" in read else None
        results = read["evaluate"].get("results_dir", "results")
        return cls(configs, base, sft_export, sft_run, sft_last, dpo_export, dpo_run, dpo_last, results, reward)


def recorded_precision(path: Path) -> str:
    """The precision name a complete stage recorded (``bf16-mixed (CPU with ...)`` -> ``bf16-mixed``)."""
    return (json.loads(path.read_text()).get("precision") or "?").split(" ")[0]


def base_changed(export_info: Path) -> bool:
    """Whether the local base model that ``export_info.json`` records has changed since (e.g. the tiny base rebuilt
    by another run: a seed's SFT adapter would sit on other weights)."""
    source = (json.loads(export_info.read_text()).get("provenance") or {}).get("model") or {}
    path, recorded = source.get("path"), source.get("sha256")
    return bool(path and recorded and Path(path).exists() and files_sha256(path, MODEL_FILE_SUFFIXES) != recorded)


class Pipeline:
    """Runs the stages in order, each skipped when complete, resumed when it left a checkpoint, or redone."""

    def __init__(self, options: Options, python: str, total_stages: int) -> None:
        self.options, self.python = options, python
        self.stage, self.total = 0, total_stages
        self.ran = False

    def run(self, name: str, outputs: str, done: str, clean: list[str], checkpoint: str | None, redo: bool,
            command: list[str]) -> bool:  # fmt: skip
        """Run one stage unless ``done`` exists (and ``redo`` is off); return whether it ran."""
        self.stage += 1
        tag = f"[stage {self.stage}/{self.total}] {name}"
        if not redo and Path(done).is_file():
            print(f"{tag}: skipped, already complete -> {outputs}", flush=True)
            return False
        start = time.monotonic()
        if not redo and checkpoint and Path(checkpoint).is_file():
            print(f"{tag}: resuming from {checkpoint} ... -> {outputs}", flush=True)
            command = [*command, "--ckpt_path", "last"]
        else:
            print(f"{tag}: running ... -> {outputs}", flush=True)
            for path in map(Path, clean):  # the stage's old outputs, checkpoints and event files
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        status = subprocess.run([self.python, *command]).returncode
        if status != 0:
            sys.exit(status)
        if not Path(done).is_file():
            sys.exit(f"error: stage '{name}' finished without writing {done}")
        print(f"{tag}: done in {round(time.monotonic() - start)}s -> {outputs}", flush=True)
        return True

    def stale_precision(self, record: str, name: str) -> bool:
        """With ``--precision P``: whether the complete stage's record says it ran in another precision."""
        if not self.options.precision or not Path(record).is_file():
            return False
        recorded = recorded_precision(Path(record))
        if recorded == self.options.precision:
            return False
        print(f"[pipeline] {name} was done in {recorded}, and --precision {self.options.precision} asks for another: "
              "redoing it", file=sys.stderr)  # fmt: skip
        return True

    @staticmethod
    def stale_base(record: str, name: str) -> bool:
        """Whether the complete stage was trained on an earlier version of its (local) base model."""
        if not Path(record).is_file():
            return False
        try:
            changed = base_changed(Path(record))
        except (OSError, ValueError):  # redoing a stage costs time; keeping one trained on other weights, the results
            print(f"[pipeline] could not compare {name}'s base model with the one recorded in {record}: redoing it",
                  file=sys.stderr)  # fmt: skip
            return True
        if changed:
            print(f"[pipeline] {name} was trained on an earlier version of its base model: redoing it", file=sys.stderr)
        return changed

    def training(self, name: str, export: str, run: str, last: str, redo: bool, config: str | list[str]) -> bool:
        """A ``train.py fit`` stage: done when its export has ``export_info.json``; resumes from ``last``.

        ``config``: one config, or several read in order, each on top of the ones before (LightningCLI's own
        merge of repeated ``--config``).
        """
        precision = ["--trainer.precision", self.options.precision] if self.options.precision else []
        configs = [item for path in ([config] if isinstance(config, str) else config) for item in ("--config", path)]
        return self.run(name, f"{export} (TensorBoard: {run}/tensorboard)", f"{export}/export_info.json",
                        [export, run, str(Path(last).parent)], last, redo,
                        ["train.py", "fit", *configs, *precision])  # fmt: skip

    def methods_stages(self, paths: StagePaths, judge_redone: bool) -> str:
        """The methods study after the DPO stage: each other method trained from the same SFT export, then all of
        them evaluated together and reported; returns the report's path.

        A method (and the evaluation) is redone when its SFT export (or any export it reads) is newer than its
        own output, so a retrained SFT model retrains every method.
        """
        overlays, dpo_config = method_overlays(self.options.set), paths.configs["dpo"]
        sft_info = Path(paths.sft_export) / "export_info.json"
        exports: dict[str, str] = {}
        for method in (name for name in self.options.methods if name != "dpo"):
            config = merged(read_config(dpo_config), read_config(overlays[method]))
            model, export, run, last = stage_paths(config)
            info = Path(export) / "export_info.json"
            # a method from the base model (ORPO's own setting) reads the base's weights, not the SFT export
            upstream = Path(model) / "model.safetensors" if config["model"]["init_args"].get("from_base") else sft_info
            redo = self.options.force or newer(upstream, info) or self.stale_precision(str(info), method)
            self.training(f"{method} (methods study)", export, run, last, redo, [dpo_config, overlays[method]])
            exports[method] = export
        results = f"{paths.results}/methods"
        evaluation = [f"{results}/evaluation_results.json", f"{results}/side_by_side_comparison.txt"]
        inputs = [sft_info, Path(paths.dpo_export) / "export_info.json"]
        inputs += [Path(export) / "export_info.json" for export in exports.values()]
        stale = any(newer(path, Path(evaluation[0])) for path in inputs)
        command = ["scripts/evaluate.py", "--config", paths.configs["evaluate"], "--methods", json.dumps(exports),
                   "--results_dir", results]  # fmt: skip
        redo = self.run("evaluate (methods study)", ", ".join(evaluation), evaluation[0], evaluation, None,
                        self.options.force or stale or judge_redone, command)  # fmt: skip
        report = f"{results}/report.md"
        command = ["scripts/report.py", "--results-dir", results, "--sft-run", paths.sft_run,
                   "--dpo-run", paths.dpo_run]  # fmt: skip
        self.run("report (methods study)", report, report, [report, f"{results}/plots"], None,
                 redo or self.options.force, command)  # fmt: skip
        return report

    def seed_stages(self, suffix: str, paths: StagePaths, redo: bool, judge_redone: bool) -> bool:
        """SFT -> DPO -> evaluate -> report of one training seed; whether the report was redone.

        ``redo``: an input changed, so every stage starts afresh; a stage that runs sets it for the ones after it.
        """
        sft, dpo = f"{paths.sft_export}/export_info.json", f"{paths.dpo_export}/export_info.json"
        results = paths.results
        redo = redo or self.stale_precision(sft, f"SFT{suffix}") or self.stale_base(sft, f"SFT{suffix}")
        sft_config, dpo_config = paths.configs["sft"], paths.configs["dpo"]
        redo = self.training(f"SFT{suffix}", paths.sft_export, paths.sft_run, paths.sft_last, redo, sft_config) or redo
        redo = redo or self.stale_precision(dpo, f"DPO{suffix}")
        redo = self.training(f"DPO{suffix}", paths.dpo_export, paths.dpo_run, paths.dpo_last, redo, dpo_config) or redo
        evaluation = [f"{results}/evaluation_results.json", f"{results}/side_by_side_comparison.txt"]
        command = ["scripts/evaluate.py", "--config", paths.configs["evaluate"]]
        redo = self.run(f"evaluate{suffix}", ", ".join(evaluation), evaluation[0], evaluation, None,
                        redo or judge_redone, command) or redo or judge_redone  # fmt: skip
        command = ["scripts/report.py", "--results-dir", results]
        command += ["--sft-run", paths.sft_run, "--dpo-run", paths.dpo_run]
        report = f"{results}/report.md"
        return self.run(f"report{suffix}", report, report, [report, f"{results}/plots"], None, redo, command)


def newer(first: Path, second: Path) -> bool:
    """Whether ``first`` exists and was written after ``second`` (or ``second`` does not exist)."""
    return first.is_file() and (not second.is_file() or first.stat().st_mtime_ns > second.stat().st_mtime_ns)


def main(argv: list[str] | None = None) -> int:
    """Run the pipeline; a bad command line is one ``error:`` line and status 2, a failed stage its status."""
    try:
        options = parse(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        print(__doc__.split("\n\n", 2)[1], file=sys.stderr)
        return 2
    python = os.environ.get("PYTHON") or sys.executable
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    sft, dpo, evaluate, reward, offline = SETS[options.set]
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # the tiny set has everything on disk
        os.environ[variable] = os.environ.get(variable) or ("1" if offline else "0")
    configs = {"sft": sft, "dpo": dpo, "evaluate": evaluate} | ({"reward": reward} if reward else {})
    if options.overrides:  # the same stages on merged copies of the configs, written beside their runs
        merged = write_overridden(configs, options.overrides)
        configs = {name: str(merged / f"{name}.yaml") for name in configs}
    paths, seeds = StagePaths.of(configs), options.seeds
    try:  # one pipeline per set: a second would delete and retrain what the first is writing
        lock_run_folder(Path(paths.sft_run).parent)
    except RunInUseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    total = (len(seeds) or 1) * 4 + bool(seeds) + (options.set == "tiny") + (reward is not None)
    total += (len([m for m in options.methods if m != "dpo"]) + 2) if options.methods else 0
    pipeline = Pipeline(options, python, total)
    started = time.monotonic()
    print(
        f"Pipeline '{options.set}' with {python}: {configs['sft']} -> {configs['dpo']} -> {configs['evaluate']}"
        + (" (--force)" if options.force else "")
        + (f" (precision {options.precision})" if options.precision else "")
        + (f" (training seeds {' '.join(map(str, seeds))})" if seeds else ""),
        flush=True,
    )

    redo = options.force  # set from here on: an input of the next stages changed
    if options.set == "tiny":
        base, precision = paths.base, ["--precision", options.precision] if options.precision else []
        stale = pipeline.stale_precision(f"{base}/build_args.json", "the tiny base")
        ran = pipeline.run("build tiny base", base, f"{base}/model.safetensors", [base], None, redo or stale,
                           ["scripts/build_tiny_model.py", "--out", base, *precision])  # fmt: skip
        redo = redo or ran
    judge_redone = False
    if paths.reward:
        export, run, last = paths.reward
        info = f"{export}/export_info.json"
        stale = pipeline.stale_precision(info, "the reward model") or pipeline.stale_base(info, "the reward model")
        judge_redone = pipeline.training("reward model", export, run, last, redo or stale, configs["reward"])

    if not seeds:
        pipeline.seed_stages("", paths, redo, judge_redone)
        methods = f" The methods study: {pipeline.methods_stages(paths, judge_redone)}." if options.methods else ""
        print(f"Pipeline '{options.set}' complete in {round(time.monotonic() - started)}s. Read "
              f"{paths.results}/report.md (side by side: {paths.results}/side_by_side_comparison.txt)."
              f"{methods}")  # fmt: skip
        return 0

    reported, per_seed = False, []
    for seed in seeds:
        folder = Path(paths.sft_run).parent / f"seed{seed}" / "configs"
        per_seed.append(StagePaths.of(write_seeded(configs, seed, folder)))
        reported = pipeline.seed_stages(f" (seed {seed})", per_seed[-1], redo, judge_redone) or reported
    summary, first = f"{paths.results}/seeds", per_seed[0]
    Path(summary).mkdir(parents=True, exist_ok=True)
    out = f"{summary}/report.md"
    report = ["scripts/report.py", "--results-dir", first.results, "--sft-run", first.sft_run, "--dpo-run",
              first.dpo_run, "--out", out, "--seed-results", *(p.results for p in per_seed)]  # fmt: skip
    pipeline.run("report across seeds", out, out, [out], None, options.force or reported, report)
    print(f"Pipeline '{options.set}' complete in {round(time.monotonic() - started)}s (training seeds "
          f"{' '.join(map(str, seeds))}). Read {out} (each seed: {paths.results}/seed<S>/report.md).")  # fmt: skip
    return 0
