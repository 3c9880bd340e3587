"""The whole study, stage by stage: [tiny base -> reward model] -> SFT -> DPO -> evaluate -> report.

    python scripts/run_study.py [tiny|study] [--seeds S [S ...]] [--force] [--precision P]
                               [--overrides DIR [DIR ...]] [--methods M [M ...]] [--list]

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
    --list          print the stages these options run, in order, each with its command and whether it is
                    complete, and run nothing

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
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
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
    list: bool = False


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
        elif arg == "--list":
            options.list = True
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


def never_stale() -> bool:
    return False


@dataclass
class Stage:
    """One step of the study: a script to run, and what says it is complete, out of date or to redo.

    Attributes:
        name: what the progress lines call it (unique within a run).
        command: the script and its arguments, run with the stages' interpreter.
        outputs: where it writes, as the progress lines print it.
        done: the file whose presence says the stage is complete.
        clean: what a fresh run removes first (old outputs, checkpoints, TensorBoard event files).
        checkpoint: a training stage's ``last.ckpt``, resumed from when present and the stage is not redone.
        after: the stages whose rerun makes this one start afresh (its inputs).
        stale: asked when the stage comes up: whether its complete output is out of date anyway (trained in
            another precision, on an earlier base model, before one of its inputs was rewritten).
    """

    name: str
    command: list[str]
    outputs: str
    done: str
    clean: list[str]
    checkpoint: str | None = None
    after: tuple[str, ...] = ()
    stale: Callable[[], bool] = never_stale


def recorded_precision(path: Path) -> str:
    """The precision name a complete stage recorded (``bf16-mixed (CPU with ...)`` -> ``bf16-mixed``)."""
    return (json.loads(path.read_text()).get("precision") or "?").split(" ")[0]


def base_changed(export_info: Path) -> bool:
    """Whether the local base model that ``export_info.json`` records has changed since (e.g. the tiny base rebuilt
    by another run: a seed's SFT adapter would sit on other weights)."""
    source = (json.loads(export_info.read_text()).get("provenance") or {}).get("model") or {}
    path, recorded = source.get("path"), source.get("sha256")
    return bool(path and recorded and Path(path).exists() and files_sha256(path, MODEL_FILE_SUFFIXES) != recorded)


def stale_precision(precision: str, record: str, name: str) -> bool:
    """With ``--precision P``: whether the complete stage's record says it ran in another precision."""
    if not precision or not Path(record).is_file():
        return False
    recorded = recorded_precision(Path(record))
    if recorded == precision:
        return False
    print(f"[pipeline] {name} was done in {recorded}, and --precision {precision} asks for another: redoing it",
          file=sys.stderr)  # fmt: skip
    return True


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


def newer(first: Path, second: Path) -> bool:
    """Whether ``first`` exists and was written after ``second`` (or ``second`` does not exist)."""
    return first.is_file() and (not second.is_file() or first.stat().st_mtime_ns > second.stat().st_mtime_ns)


# The stages, one builder each; `study_stages` lists them in the order they run.

BASE, REWARD = "build tiny base", "reward model"


def tiny_base(paths: StagePaths, options: Options) -> Stage:
    """The tiny set's base model, pre-trained from scratch on the embedded corpus."""
    base, precision = paths.base, ["--precision", options.precision] if options.precision else []
    record = f"{base}/build_args.json"
    return Stage(BASE, ["scripts/build_tiny_model.py", "--out", base, *precision], base, f"{base}/model.safetensors",
                 [base], stale=lambda: stale_precision(options.precision, record, "the tiny base"))  # fmt: skip


def training(name: str, export: str, run: str, last: str, configs: list[str], options: Options,
             after: tuple[str, ...], stale: Callable[[], bool] = never_stale) -> Stage:  # fmt: skip
    """A ``train.py fit`` stage: done when its export has ``export_info.json``; resumes from ``last``.

    ``configs``: read in order, each on top of the ones before (LightningCLI's own merge of repeated ``--config``).
    """
    precision = ["--trainer.precision", options.precision] if options.precision else []
    arguments = [item for path in configs for item in ("--config", path)]
    return Stage(name, ["train.py", "fit", *arguments, *precision], f"{export} (TensorBoard: {run}/tensorboard)",
                 f"{export}/export_info.json", [export, run, str(Path(last).parent)], last, after, stale)  # fmt: skip


def reward_model(paths: StagePaths, options: Options) -> Stage:
    """The tiny set's judge: a reward model trained on the preference pairs, read by every evaluation."""
    assert paths.reward is not None, "only a set with a reward config has this stage"
    export, run, last = paths.reward
    info = f"{export}/export_info.json"

    def stale() -> bool:
        return stale_precision(options.precision, info, REWARD) or stale_base(info, REWARD)

    return training(REWARD, export, run, last, [paths.configs["reward"]], options, (BASE,), stale)


def evaluate_and_report(name: str, paths: StagePaths, results: str, evaluate_arguments: list[str],
                        after: tuple[str, ...], stale: Callable[[], bool] = never_stale) -> list[Stage]:  # fmt: skip
    """``scripts/evaluate.py`` into ``results``, then ``scripts/report.py`` on what it wrote."""
    evaluation = [f"{results}/evaluation_results.json", f"{results}/side_by_side_comparison.txt"]
    evaluate = Stage(f"evaluate{name}", ["scripts/evaluate.py", "--config", paths.configs["evaluate"],
                                         *evaluate_arguments],
                     ", ".join(evaluation), evaluation[0], evaluation, after=after, stale=stale)  # fmt: skip
    report = f"{results}/report.md"
    command = ["scripts/report.py", "--results-dir", results, "--sft-run", paths.sft_run, "--dpo-run", paths.dpo_run]
    return [evaluate, Stage(f"report{name}", command, report, report, [report, f"{results}/plots"],
                            after=(evaluate.name,))]  # fmt: skip


def sft_to_report(suffix: str, paths: StagePaths, options: Options) -> list[Stage]:
    """SFT -> DPO -> evaluate -> report of one training seed (``suffix``: `` (seed S)``, or empty)."""
    sft_info, dpo_info = f"{paths.sft_export}/export_info.json", f"{paths.dpo_export}/export_info.json"
    sft, dpo = f"SFT{suffix}", f"DPO{suffix}"

    def sft_stale() -> bool:
        return stale_precision(options.precision, sft_info, sft) or stale_base(sft_info, sft)

    return [
        training(sft, paths.sft_export, paths.sft_run, paths.sft_last, [paths.configs["sft"]], options, (BASE,),
                 sft_stale),
        training(dpo, paths.dpo_export, paths.dpo_run, paths.dpo_last, [paths.configs["dpo"]], options, (sft,),
                 lambda: stale_precision(options.precision, dpo_info, dpo)),
        *evaluate_and_report(suffix, paths, paths.results, [], (dpo, REWARD)),
    ]  # fmt: skip


def methods_study(paths: StagePaths, options: Options) -> list[Stage]:
    """After the DPO stage: each other method trained from the same SFT export, then all of them evaluated with
    base, SFT and SFT+DPO, and reported.

    A method (and the evaluation) is redone when an export it reads is newer than its own output, so a
    retrained SFT model retrains every method.
    """
    overlays, dpo_config = method_overlays(options.set), paths.configs["dpo"]
    sft_info = Path(paths.sft_export) / "export_info.json"
    stages, exports = [], {}
    for method in (name for name in options.methods if name != "dpo"):
        config = merged(read_config(dpo_config), read_config(overlays[method]))
        model, export, run, last = stage_paths(config)
        info = Path(export) / "export_info.json"
        # a method from the base model (ORPO's own setting) reads the base's weights, not the SFT export
        upstream = Path(model) / "model.safetensors" if config["model"]["init_args"].get("from_base") else sft_info

        def stale(upstream: Path = upstream, info: Path = info, method: str = method) -> bool:
            return newer(upstream, info) or stale_precision(options.precision, str(info), method)

        stages.append(training(f"{method} (methods study)", export, run, last, [dpo_config, overlays[method]],
                               options, (), stale))  # fmt: skip
        exports[method] = export
    results = f"{paths.results}/methods"
    inputs = [sft_info, Path(paths.dpo_export) / "export_info.json"]
    inputs += [Path(export) / "export_info.json" for export in exports.values()]

    def evaluation_stale() -> bool:
        return any(newer(path, Path(f"{results}/evaluation_results.json")) for path in inputs)

    arguments = ["--methods", json.dumps(exports), "--results_dir", results]
    return stages + evaluate_and_report(" (methods study)", paths, results, arguments, (REWARD,), evaluation_stale)


def report_across_seeds(paths: StagePaths, per_seed: list[StagePaths], seeds: list[int]) -> Stage:
    """Every seed's results together (mean +- sd across seeds) in ``<results>/seeds/report.md``."""
    out, first = f"{paths.results}/seeds/report.md", per_seed[0]
    command = ["scripts/report.py", "--results-dir", first.results, "--sft-run", first.sft_run, "--dpo-run",
               first.dpo_run, "--out", out, "--seed-results", *(seed.results for seed in per_seed)]  # fmt: skip
    return Stage("report across seeds", command, out, out, [out], after=tuple(f"report (seed {s})" for s in seeds))


def study_stages(options: Options, paths: StagePaths, per_seed: list[StagePaths]) -> list[Stage]:
    """Every stage of the run, in the order they run (``per_seed``: each ``--seeds`` seed's paths, or none)."""
    stages = [tiny_base(paths, options)] if options.set == "tiny" else []
    if paths.reward:
        stages.append(reward_model(paths, options))
    if not per_seed:
        stages += sft_to_report("", paths, options)
    for seed, seed_paths in zip(options.seeds, per_seed, strict=True):
        stages += sft_to_report(f" (seed {seed})", seed_paths, options)
    if options.methods:
        stages += methods_study(paths, options)
    if per_seed:
        stages.append(report_across_seeds(paths, per_seed, options.seeds))
    return stages


def seeded_paths(configs: dict[str, str], paths: StagePaths, seeds: list[int]) -> list[StagePaths]:
    """Each training seed's paths, from its copy of the configs (written to ``<runs>/seed<S>/configs``)."""
    folder = Path(paths.sft_run).parent
    return [StagePaths.of(write_seeded(configs, seed, folder / f"seed{seed}" / "configs")) for seed in seeds]


class Runner:
    """Runs the stages in order, each skipped when complete, resumed when it left a checkpoint, or redone."""

    def __init__(self, python: str, stages: list[Stage], force: bool) -> None:
        self.python, self.stages, self.force = python, stages, force

    def run_all(self) -> None:
        """Every stage in turn; one is redone with ``--force``, after a stage it reads ran, or when stale."""
        ran: set[str] = set()
        for number, stage in enumerate(self.stages, start=1):
            redo = self.force or any(name in ran for name in stage.after) or stage.stale()
            if self.run(f"[stage {number}/{len(self.stages)}] {stage.name}", stage, redo):
                ran.add(stage.name)

    def run(self, tag: str, stage: Stage, redo: bool) -> bool:
        """Run one stage unless its ``done`` file exists (and ``redo`` is off); return whether it ran."""
        if not redo and Path(stage.done).is_file():
            print(f"{tag}: skipped, already complete -> {stage.outputs}", flush=True)
            return False
        start, command = time.monotonic(), stage.command
        if not redo and stage.checkpoint and Path(stage.checkpoint).is_file():
            print(f"{tag}: resuming from {stage.checkpoint} ... -> {stage.outputs}", flush=True)
            command = [*command, "--ckpt_path", "last"]
        else:
            print(f"{tag}: running ... -> {stage.outputs}", flush=True)
            for path in map(Path, stage.clean):  # the stage's old outputs, checkpoints and event files
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        status = subprocess.run([self.python, *command]).returncode
        if status != 0:
            sys.exit(status)
        if not Path(stage.done).is_file():
            sys.exit(f"error: stage '{stage.name}' finished without writing {stage.done}")
        print(f"{tag}: done in {round(time.monotonic() - start)}s -> {stage.outputs}", flush=True)
        return True


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
        folder = write_overridden(configs, options.overrides)
        configs = {name: str(folder / f"{name}.yaml") for name in configs}
    paths, seeds = StagePaths.of(configs), options.seeds
    if options.list:
        for number, stage in enumerate(stages := study_stages(options, paths, seeded_paths(configs, paths, seeds)), 1):
            state = "complete" if Path(stage.done).is_file() else "to run"
            print(f"[stage {number}/{len(stages)}] {stage.name} ({state}): {shlex.join([python, *stage.command])}")
        return 0
    try:  # one pipeline per set: a second would delete and retrain what the first is writing
        lock_run_folder(Path(paths.sft_run).parent)
    except RunInUseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    stages = study_stages(options, paths, seeded_paths(configs, paths, seeds))
    started = time.monotonic()
    print(
        f"Pipeline '{options.set}' with {python}: {configs['sft']} -> {configs['dpo']} -> {configs['evaluate']}"
        + (" (--force)" if options.force else "")
        + (f" (precision {options.precision})" if options.precision else "")
        + (f" (training seeds {' '.join(map(str, seeds))})" if seeds else ""),
        flush=True,
    )
    Runner(python, stages, options.force).run_all()
    took = f"Pipeline '{options.set}' complete in {round(time.monotonic() - started)}s"
    if seeds:
        print(f"{took} (training seeds {' '.join(map(str, seeds))}). Read {stages[-1].done} (each seed: "
              f"{paths.results}/seed<S>/report.md).")  # fmt: skip
    else:
        methods = f" The methods study: {stages[-1].done}." if options.methods else ""
        print(f"{took}. Read {paths.results}/report.md (side by side: {paths.results}/side_by_side_comparison.txt)."
              f"{methods}")  # fmt: skip
    return 0
