"""The study pipeline (study/pipeline.py, run through scripts/run_study.py): stages skipped when
complete, resumed after a deletion, --force.

The heavy commands are replaced by a stand-in interpreter (``PYTHON``) that records each call and
writes the outputs the real stage would (an export's ``export_info.json``, the results files). The
pipeline itself runs for real on a copy of the script and the real configs.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

FAKE_PYTHON = f"""#!{sys.executable}
# Stand-in for the project's python: records the call, writes what the stage would write.
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
if not args or args[0] in ("-", "-c", "-m") or args[0].endswith("pipeline_configs.py"):  # the pipeline itself: real
    os.execv({sys.executable!r}, [{sys.executable!r}, *args])
import yaml

with open("calls.log", "a") as log:
    log.write(" ".join(args) + "\\n")


def merged(base, override):  # repeated --config files, each read on top of the ones before (as LightningCLI does)
    if isinstance(base, dict) and isinstance(override, dict):
        return {{**base, **{{key: merged(base.get(key), item) for key, item in override.items()}}}}
    return override


def config_of(args):
    config = {{}}
    for i, arg in enumerate(args):
        if arg == "--config":
            config = merged(config, yaml.safe_load(Path(args[i + 1]).read_text()))
    return config


failing = bool(os.environ.get("FAIL_ON")) and os.environ["FAIL_ON"] in " ".join(args)
script = args[0]
if failing and script != "train.py":
    sys.exit("stage failed on purpose")
if script.endswith("build_tiny_model.py"):
    out = Path(args[args.index("--out") + 1])
    out.mkdir(parents=True)
    (out / "model.safetensors").write_text("weights")
    precision = args[args.index("--precision") + 1] if "--precision" in args else "bf16-mixed (as auto chose)"
    (out / "build_args.json").write_text(json.dumps({{"precision": precision}}))
elif script == "train.py":
    config = config_of(args)
    run = Path(config["run"]["dir"]) / "tensorboard"
    run.mkdir(parents=True, exist_ok=True)
    (run / f"events.out.tfevents.{{len(list(run.iterdir()))}}").write_text("event")
    checkpoints = Path(config["run"]["dir"]) / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / "last.ckpt").write_text("checkpoint")
    if failing:  # a crash mid-training: the checkpoint is there, the export is not
        sys.exit("stage failed on purpose")
    export = config["run"]["export_dir"]
    Path(export).mkdir(parents=True, exist_ok=True)
    precision = args[args.index("--trainer.precision") + 1] if "--trainer.precision" in args else "bf16-mixed (auto)"
    (Path(export) / "export_info.json").write_text(json.dumps({{"precision": precision}}))
elif script.endswith("evaluate.py"):
    config = config_of(args)
    results = Path(args[args.index("--results_dir") + 1] if "--results_dir" in args else config["results_dir"])
    results.mkdir(parents=True, exist_ok=True)
    (results / "side_by_side_comparison.txt").write_text("side by side")
    (results / "evaluation_results.json").write_text("{{}}")
elif script.endswith("report.py"):
    results = Path(args[args.index("--results-dir") + 1])
    out = Path(args[args.index("--out") + 1]) if "--out" in args else results / "report.md"
    out.parent.mkdir(parents=True, exist_ok=True)  # as the real one does (its plots/ folder beside the report)
    out.write_text("# report")
else:
    sys.exit("unexpected command: " + " ".join(args))
"""

TINY_STAGES = ["build tiny base", "reward model", "SFT", "DPO", "evaluate", "report"]


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the pipeline script and the configs, and the stand-in python."""
    (tmp_path / "scripts").mkdir()
    for script in ("run_study.py", "pipeline_configs.py", "installed.py"):
        shutil.copy(REPO / "scripts" / script, tmp_path / "scripts")
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return tmp_path


def pipeline(project: Path, *args: str, fail_on: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": str(project / "fake-python"), "FAIL_ON": fail_on}
    return subprocess.run(
        [sys.executable, str(project / "scripts" / "run_study.py"), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def stage_states(output: str) -> dict[str, str]:
    """``{stage name: "running" | "skipped"}`` from the progress lines (resuming counts as running)."""
    states = {}
    for line in output.splitlines():
        if line.startswith("[stage ") and any(f": {state}" in line for state in ("running", "resuming", "skipped")):
            name, rest = line.split("] ", 1)[1].split(": ", 1)
            states[name] = "skipped" if rest.startswith("skipped") else "running"
    return states


def calls(project: Path) -> list[str]:
    log = project / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return lines


def test_first_run_runs_every_stage_in_order_and_says_where_outputs_are(project):
    result = pipeline(project, "tiny")
    assert result.returncode == 0, result.stderr
    assert stage_states(result.stdout) == dict.fromkeys(TINY_STAGES, "running")
    commands = calls(project)
    assert [c.split()[0] for c in commands] == [
        "scripts/build_tiny_model.py",
        "train.py",
        "train.py",
        "train.py",
        "scripts/evaluate.py",
        "scripts/report.py",
    ]
    assert "configs/tiny/reward.yaml" in commands[1]
    assert "configs/tiny/sft.yaml" in commands[2] and "configs/tiny/dpo.yaml" in commands[3]
    assert "[stage 1/6] build tiny base" in result.stdout and "-> artifacts/tiny-base" in result.stdout
    assert "-> outputs/tiny/sft" in result.stdout and "-> results/report.md" in result.stdout
    assert "Pipeline 'tiny' complete in" in result.stdout
    assert (project / "results" / "report.md").is_file()


def test_a_rerun_skips_every_completed_stage(project):
    assert pipeline(project).returncode == 0
    calls(project)
    result = pipeline(project)
    assert result.returncode == 0, result.stderr
    assert stage_states(result.stdout) == dict.fromkeys(TINY_STAGES, "skipped")
    assert calls(project) == []


def test_deleting_a_stage_output_reruns_that_stage_and_the_ones_after_it(project):
    assert pipeline(project).returncode == 0
    calls(project)
    shutil.rmtree(project / "outputs" / "tiny" / "dpo")
    result = pipeline(project)
    assert result.returncode == 0, result.stderr
    assert stage_states(result.stdout) == {
        "build tiny base": "skipped",
        "reward model": "skipped",
        "SFT": "skipped",
        "DPO": "running",
        "evaluate": "running",
        "report": "running",
    }
    assert [c.split()[0] for c in calls(project)] == ["train.py", "scripts/evaluate.py", "scripts/report.py"]


def test_a_crashed_stage_stops_the_pipeline_and_the_rerun_continues_there(project):
    failed = pipeline(project, fail_on="evaluate.py")
    assert failed.returncode != 0
    assert "report" not in stage_states(failed.stdout)
    calls(project)
    result = pipeline(project)
    assert result.returncode == 0, result.stderr
    states = stage_states(result.stdout)
    assert [states[name] for name in TINY_STAGES] == ["skipped", "skipped", "skipped", "skipped", "running", "running"]


def test_a_crashed_training_stage_resumes_from_its_last_checkpoint(project):
    failed = pipeline(project, fail_on="configs/tiny/dpo.yaml")
    assert failed.returncode != 0
    assert "[stage 4/6] DPO: running" in failed.stdout and "evaluate" not in stage_states(failed.stdout)
    calls(project)
    events = project / "runs" / "tiny" / "dpo" / "tensorboard"
    assert len(list(events.iterdir())) == 1
    result = pipeline(project)
    assert result.returncode == 0, result.stderr
    assert "[stage 4/6] DPO: resuming from runs/tiny/dpo/checkpoints/last.ckpt" in result.stdout
    commands = calls(project)
    assert commands[0] == "train.py fit --config configs/tiny/dpo.yaml --ckpt_path last"
    assert len(list(events.iterdir())) == 2  # the crashed run's events are kept: the resumed run continues them
    assert [c.split()[0] for c in commands[1:]] == ["scripts/evaluate.py", "scripts/report.py"]


def test_a_stage_after_a_redone_one_starts_afresh_instead_of_resuming(project):
    assert pipeline(project).returncode == 0
    calls(project)
    shutil.rmtree(project / "outputs" / "tiny" / "sft")
    result = pipeline(project)
    assert result.returncode == 0, result.stderr
    assert "SFT: resuming from runs/tiny/sft/checkpoints/last.ckpt" in result.stdout
    assert "DPO: running" in result.stdout  # its input changed: no resuming from the old DPO run
    commands = calls(project)
    assert commands[1] == "train.py fit --config configs/tiny/dpo.yaml"
    assert len(list((project / "runs" / "tiny" / "dpo" / "tensorboard").iterdir())) == 1


def test_force_redoes_every_stage_and_clears_old_event_files(project):
    assert pipeline(project).returncode == 0
    calls(project)
    stale = project / "runs" / "tiny" / "sft" / "tensorboard" / "events.out.tfevents.stale"
    stale.write_text("old run")
    result = pipeline(project, "tiny", "--force")
    assert result.returncode == 0, result.stderr
    assert stage_states(result.stdout) == dict.fromkeys(TINY_STAGES, "running")
    assert len(calls(project)) == 6
    assert not stale.exists()
    assert len(list((project / "runs" / "tiny" / "sft" / "tensorboard").iterdir())) == 1


def test_the_study_set_uses_the_study_configs_and_has_no_base_build(project):
    result = pipeline(project, "study")
    assert result.returncode == 0, result.stderr
    assert list(stage_states(result.stdout)) == ["SFT", "DPO", "evaluate", "report"]
    commands = calls(project)
    assert "configs/sft.yaml" in commands[0] and "configs/dpo.yaml" in commands[1]
    assert "configs/evaluate.yaml" in commands[2]
    assert (project / "outputs" / "study" / "dpo" / "export_info.json").is_file()
    assert (project / "results" / "study" / "report.md").is_file()


def test_an_unknown_argument_is_an_error(project):
    result = pipeline(project, "--forse")
    assert result.returncode == 2
    assert "unknown argument '--forse'" in result.stderr


def test_precision_is_passed_to_every_stage_that_computes_and_left_to_auto_otherwise(project):
    result = pipeline(project, "tiny", "--precision", "32-true")
    assert result.returncode == 0, result.stderr
    assert "(precision 32-true)" in result.stdout
    builder, reward, sft, dpo, evaluate, report = calls(project)
    assert builder.endswith("--precision 32-true") and reward.endswith("--trainer.precision 32-true")
    assert sft.endswith("--trainer.precision 32-true") and dpo.endswith("--trainer.precision 32-true")
    assert "precision" not in evaluate + report
    assert pipeline(project, "tiny", "--force").returncode == 0
    assert not any("precision" in command for command in calls(project))  # the configs' auto
    missing = pipeline(project, "tiny", "--precision")
    assert missing.returncode == 2 and "--precision needs a value" in missing.stderr


def test_a_new_reward_model_reruns_only_the_evaluation_and_report(project):
    assert pipeline(project).returncode == 0
    calls(project)
    shutil.rmtree(project / "outputs" / "tiny" / "reward")
    result = pipeline(project)
    assert result.returncode == 0, result.stderr
    states = stage_states(result.stdout)
    assert [states[name] for name in TINY_STAGES] == ["skipped", "running", "skipped", "skipped", "running", "running"]


SEED_STAGES = ["SFT", "DPO", "evaluate", "report"]


def test_seeds_train_each_seed_into_its_own_folders_and_report_them_together(project):
    result = pipeline(project, "tiny", "--seeds", "0", "1")
    assert result.returncode == 0, result.stderr
    states = stage_states(result.stdout)
    expected = ["build tiny base", "reward model"] + [f"{n} (seed {s})" for s in (0, 1) for n in SEED_STAGES]
    assert list(states) == expected + ["report across seeds"]
    assert "[stage 11/11] report across seeds" in result.stdout
    commands = calls(project)
    sft_1 = project / "runs" / "tiny" / "seed1" / "configs" / "sft.yaml"
    assert commands[6] == "train.py fit --config runs/tiny/seed1/configs/sft.yaml"
    config = yaml.safe_load(sft_1.read_text())
    assert config["seed_everything"] == 1
    assert config["run"]["export_dir"] == "outputs/tiny/seed1/sft"
    assert config["run"]["dir"] == "runs/tiny/seed1/sft"  # its checkpoints and TensorBoard run with it
    assert config["model"]["init_args"]["model_name_or_path"] == "artifacts/tiny-base"  # shared input
    dpo_1 = yaml.safe_load((sft_1.parent / "dpo.yaml").read_text())["model"]["init_args"]
    assert dpo_1["model_name_or_path"] == "outputs/tiny/seed1/sft"
    assert dpo_1["reference_cache_dir"] == "runs/tiny/seed1/reference_cache"
    evaluate_1 = yaml.safe_load((sft_1.parent / "evaluate.yaml").read_text())
    assert evaluate_1["results_dir"] == "results/seed1" and evaluate_1["sft_adapter"] == "outputs/tiny/seed1/sft"
    assert "seed_everything" not in evaluate_1  # scripts/evaluate.py has no such key (and decodes greedily)
    judge = (evaluate_1.get("judge") or {}).get("model")
    assert judge in (None, "outputs/tiny/reward")  # the judge is shared by every seed, never moved
    for seed in (0, 1):
        assert (project / "outputs" / "tiny" / f"seed{seed}" / "dpo" / "export_info.json").is_file()
        assert (project / "results" / f"seed{seed}" / "report.md").is_file()
    summary = commands[-1]
    assert summary.startswith("scripts/report.py --results-dir results/seed0 --sft-run runs/tiny/seed0/sft")
    assert "--out results/seeds/report.md" in summary
    assert summary.endswith("--seed-results results/seed0 results/seed1")
    assert (project / "results" / "seeds" / "report.md").is_file()


def test_a_rerun_with_more_seeds_skips_the_complete_ones(project):
    assert pipeline(project, "tiny", "--seeds", "0", "1").returncode == 0
    calls(project)
    result = pipeline(project, "tiny", "--seeds", "0", "1", "2")
    assert result.returncode == 0, result.stderr
    states = stage_states(result.stdout)
    assert all(states[f"{n} (seed {s})"] == "skipped" for s in (0, 1) for n in SEED_STAGES)
    assert all(states[f"{n} (seed 2)"] == "running" for n in SEED_STAGES)
    assert states["report across seeds"] == "running"
    commands = calls(project)
    assert commands[0] == "train.py fit --config runs/tiny/seed2/configs/sft.yaml"
    assert commands[-1].endswith("--seed-results results/seed0 results/seed1 results/seed2")
    again = pipeline(project, "tiny", "--seeds", "0", "1", "2")
    assert set(stage_states(again.stdout).values()) == {"skipped"} and calls(project) == []


def test_seeds_must_be_distinct_integers(project):
    for args, message in (
        (["--seeds"], "--seeds needs one or more integers"),
        (["--seeds", "1", "1"], "lists a seed twice"),
    ):
        result = pipeline(project, "tiny", *args)
        assert result.returncode == 2 and message in result.stderr


def test_a_stage_done_in_another_precision_is_redone_when_a_precision_is_asked_for(project):
    assert pipeline(project, "tiny", "--precision", "32-true").returncode == 0
    calls(project)
    same = pipeline(project, "tiny", "--precision", "32-true")
    assert set(stage_states(same.stdout).values()) == {"skipped"} and calls(project) == []
    other = pipeline(project, "tiny", "--precision", "bf16-mixed")
    assert other.returncode == 0, other.stderr
    assert stage_states(other.stdout) == dict.fromkeys(TINY_STAGES, "running")
    assert "the tiny base was done in 32-true, and --precision bf16-mixed asks for another: redoing it" in other.stderr
    calls(project)
    auto = pipeline(project, "tiny")  # no --precision: `auto`, whatever the outputs were made in
    assert set(stage_states(auto.stdout).values()) == {"skipped"}


def test_only_the_stage_in_another_precision_and_the_ones_after_it_are_redone(project):
    assert pipeline(project, "tiny", "--precision", "32-true").returncode == 0
    info = project / "outputs" / "tiny" / "dpo" / "export_info.json"
    info.write_text(json.dumps({"precision": "bf16-mixed (CPU with native bf16: AVX512_BF16)"}))
    result = pipeline(project, "tiny", "--precision", "32-true")
    assert result.returncode == 0, result.stderr
    states = stage_states(result.stdout)
    assert [states[name] for name in TINY_STAGES] == ["skipped", "skipped", "skipped", "running", "running", "running"]


def test_a_seed_trained_on_an_earlier_base_is_redone_and_a_current_one_kept(project):
    from common.provenance import MODEL_FILE_SUFFIXES, files_sha256

    assert pipeline(project, "tiny", "--seeds", "0", "1").returncode == 0
    base = project / "artifacts" / "tiny-base"
    current = files_sha256(base, MODEL_FILE_SUFFIXES)
    for seed, sha256 in ((0, current), (1, "0" * 64)):  # seed 1: trained before the base was rebuilt
        info = project / "outputs" / "tiny" / f"seed{seed}" / "sft" / "export_info.json"
        record = {"provenance": {"model": {"path": "artifacts/tiny-base", "sha256": sha256}}}
        info.write_text(json.dumps(record))
    calls(project)
    result = pipeline(project, "tiny", "--seeds", "0", "1")
    assert result.returncode == 0, result.stderr
    states = stage_states(result.stdout)
    assert all(states[f"{n} (seed 0)"] == "skipped" for n in SEED_STAGES)
    assert all(states[f"{n} (seed 1)"] == "running" for n in SEED_STAGES)
    assert "SFT (seed 1) was trained on an earlier version of its base model: redoing it" in result.stderr


def test_overrides_run_the_study_configs_merged_with_the_dry_run_folders(project):
    result = pipeline(project, "study", "--overrides", "configs/dryrun", "configs/qlora", "configs/dryrun/qlora")
    assert result.returncode == 0, result.stderr
    merged = project / "runs" / "dryrun" / "qlora" / "configs"
    commands = calls(project)
    assert [c.split()[0] for c in commands] == ["train.py", "train.py", "scripts/evaluate.py", "scripts/report.py"]
    assert f"--config {merged.relative_to(project)}/sft.yaml" in commands[0]
    assert f"--config {merged.relative_to(project)}/dpo.yaml" in commands[1]
    sft = yaml.safe_load((merged / "sft.yaml").read_text())
    dpo = yaml.safe_load((merged / "dpo.yaml").read_text())
    evaluate = yaml.safe_load((merged / "evaluate.yaml").read_text())
    # the overrides of the three folders, in order (the study's QLoRA overlay, then the dry run's QLoRA folder)
    assert sft["trainer"]["accelerator"] == "cpu" and sft["trainer"]["max_steps"] == 3
    assert sft["model"]["init_args"]["load"]["load_in_4bit"] is True
    assert sft["model"]["init_args"]["load"]["dtype"] == "auto"  # merged key by key: the study's dtype stays
    assert sft["model"]["init_args"]["lora"] == {}  # what no override names is the study's (LoraSettings' defaults)
    assert sft["model"]["init_args"]["gradient_checkpointing"] is True and evaluate["benchmarks"] is None
    # 4-bit, the adapters stacked (merge_adapters' default, false: the merged file leaves it out)
    assert evaluate["load"]["load_in_4bit"] is True and "merge_adapters" not in evaluate["load"]
    # every output moved, and the stages still chain: DPO starts from the moved SFT export
    assert dpo["model"]["init_args"]["model_name_or_path"] == "outputs/dryrun/qlora/sft"
    assert sft["run"]["dir"] == "runs/dryrun/qlora/sft"
    assert evaluate["results_dir"] == "results/dryrun/qlora" and evaluate["sft_adapter"] == "outputs/dryrun/qlora/sft"
    assert (project / "results" / "dryrun" / "qlora" / "report.md").is_file()
    assert not (project / "runs" / "study").exists() and not (project / "outputs" / "study").exists()
    # each difference is printed, one per line
    assert "[overrides]   sft: trainer.accelerator: gpu -> cpu" in result.stderr
    assert "merge_adapters" not in result.stderr  # the study's evaluation already stacks the adapters
    assert "[overrides]   every path under runs/study/ -> runs/dryrun/qlora/" in result.stderr


def test_the_dry_run_changes_only_paths_amounts_and_what_a_cpu_cannot_do(project):
    """The issue's rule for configs/dryrun: model and data paths, step counts and sizes, and CPU necessities."""
    allowed = {
        "trainer.accelerator", "trainer.max_steps", "trainer.accumulate_grad_batches", "trainer.val_check_interval",
        "trainer.log_every_n_steps", "model.init_args.model_name_or_path", "data.init_args.train_files",
        "data.init_args.val_files", "data.init_args.num_examples", "data.init_args.num_val_examples",
        "data.init_args.val_fraction", "data.init_args.max_length", "data.init_args.max_prompt_length",
        "data.init_args.num_workers", "preference_data.files", "preference_data.skip", "preference_data.num_examples",
        "instruction_data.files", "instruction_data.skip", "instruction_data.num_examples", "judge.model",
        "judge.max_length", "generation.max_new_tokens", "max_length", "max_prompt_length",
        "prompts",  # a subset of the study's own prompts: the first of each category (an amount)
        # the benchmarks: local copies of the Hub sets, fewer items, shots and tasks (configs/dryrun/evaluate.yaml)
        "benchmarks.harness.limit", "benchmarks.harness.max_gen_toks", "benchmarks.harness.local_copies",
        "benchmarks.harness.tasks", "benchmarks.prompt_sets[0].files", "benchmarks.prompt_sets[0].split",
        "benchmarks.prompt_sets[0].revision", "benchmarks.prompt_sets[1].files", "benchmarks.prompt_sets[1].revision",
        "benchmarks.prompt_sets[1].num_examples",
    }  # fmt: skip
    result = subprocess.run(
        [sys.executable, "scripts/pipeline_configs.py", "configs/sft.yaml", "configs/dpo.yaml", "configs/evaluate.yaml",
         "--overrides", "configs/dryrun"],
        cwd=project, capture_output=True, text=True, check=True,
    )  # fmt: skip
    changed = {line.split(": ")[1] for line in result.stderr.splitlines() if line.startswith("[overrides]   ") and
               not line.startswith("[overrides]   every path")}  # fmt: skip
    assert changed and changed <= allowed, changed - allowed
    assert "trainer.accelerator" in changed and "model.init_args.model_name_or_path" in changed


def test_overrides_name_a_missing_folder_in_one_error_line(project):
    result = pipeline(project, "study", "--overrides", "configs/nope")
    assert result.returncode != 0
    assert "error: --overrides configs/nope: no such folder" in result.stderr
    assert "Traceback" not in result.stderr


METHODS = ["ipo (methods study)", "simpo (methods study)", "orpo (methods study)", "kto (methods study)"]


def test_the_methods_study_trains_each_method_from_the_sft_export_then_evaluates_them_together(project):
    result = pipeline(project, "tiny", "--methods", "dpo", "ipo", "simpo", "orpo", "kto")
    assert result.returncode == 0, result.stderr
    methods_stages = [*METHODS, "evaluate (methods study)", "report (methods study)"]
    assert stage_states(result.stdout) == dict.fromkeys([*TINY_STAGES, *methods_stages], "running")
    assert "[stage 12/12] report (methods study)" in result.stdout
    commands = calls(project)
    trained = [c for c in commands if c.startswith("train.py")][3:]
    assert trained == [
        f"train.py fit --config configs/tiny/dpo.yaml --config configs/tiny/methods/{m}.yaml"
        for m in ("ipo", "simpo", "orpo", "kto")
    ]
    for method in ("ipo", "simpo", "orpo", "kto"):
        assert (project / "outputs/tiny/methods" / method / "export_info.json").is_file()
    evaluation = [c for c in commands if c.startswith("scripts/evaluate.py")][-1]
    exports = json.loads(evaluation.split("--methods ", 1)[1].split(" --results_dir")[0])
    assert exports == {m: f"outputs/tiny/methods/{m}" for m in ("ipo", "simpo", "orpo", "kto")}
    assert evaluation.endswith("--results_dir results/methods")
    assert (project / "results/methods/report.md").is_file()
    assert "The methods study: results/methods/report.md." in result.stdout
    # a rerun skips every complete method
    rerun = pipeline(project, "tiny", "--methods", "dpo", "ipo", "simpo", "orpo", "kto")
    assert set(stage_states(rerun.stdout).values()) == {"skipped"} and calls(project) == []


def test_a_new_sft_export_retrains_every_method(project):
    assert pipeline(project, "--methods", "dpo", "ipo").returncode == 0
    calls(project)
    (project / "outputs/tiny/sft/export_info.json").unlink()
    result = pipeline(project, "--methods", "dpo", "ipo")
    assert result.returncode == 0, result.stderr
    states = stage_states(result.stdout)
    assert states["SFT"] == states["ipo (methods study)"] == states["evaluate (methods study)"] == "running"


def test_a_method_without_an_overlay_or_with_seeds_is_one_error_line(project):
    unknown = pipeline(project, "--methods", "dpo", "rlhf")
    assert unknown.returncode == 2
    assert unknown.stderr.splitlines()[0] == (
        "error: --methods: unknown method 'rlhf'; the tiny set has dpo, base_orpo, ipo, kto, orpo, simpo"
    )
    seeds = pipeline(project, "--methods", "ipo", "--seeds", "0", "1")
    assert seeds.returncode == 2 and "--methods and --seeds together are not supported yet" in seeds.stderr


def test_list_prints_the_stages_in_order_with_their_commands_and_runs_nothing(project):
    listed = pipeline(project, "tiny", "--seeds", "0", "1", "--list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    names = [line.split("] ", 1)[1].split(" (to run)")[0] for line in lines]
    per_seed = [f"{name} (seed {seed})" for seed in (0, 1) for name in ("SFT", "DPO", "evaluate", "report")]
    assert names == ["build tiny base", "reward model", *per_seed, "report across seeds"]
    assert lines[0].startswith("[stage 1/11] build tiny base (to run): ") and "scripts/build_tiny_model.py" in lines[0]
    assert "train.py fit --config runs/tiny/seed1/configs/dpo.yaml" in lines[7]
    assert calls(project) == [] and not (project / "results").exists()
    # after a run, every stage is complete; the list agrees with what a rerun would skip
    assert pipeline(project, "tiny", "--seeds", "0", "1").returncode == 0
    relisted = pipeline(project, "tiny", "--seeds", "0", "1", "--list").stdout.splitlines()
    assert len(relisted) == 11 and all(" (complete): " in line for line in relisted)
