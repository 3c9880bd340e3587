"""An evaluation interrupted in its third variant (SIGTERM / Ctrl-C reach it as an exception; SIGKILL leaves the
same files, each written atomically) resumes: the rerun computes only that variant and writes the same numbers
as an uninterrupted evaluation; the kept outputs are removed once the results are written."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from evaluation import engine, partial
from evaluation.config import GenerationSettings

REPO = Path(__file__).resolve().parents[2]


def numbers(results: dict) -> dict:
    """What the evaluation measured, without its timings (each variant's ``seconds``)."""
    metrics = {name: {k: v for k, v in m.items() if k != "seconds"} for name, m in results["metrics"].items()}
    return {"prompts": results["prompts"], "comparisons": results["comparisons"], "metrics": metrics} | {
        "builds": results["meta"]["builds"]
    }


@pytest.fixture(scope="module")
def whole(study_config, tmp_path_factory) -> dict:
    """The results of the evaluation run through without interruption."""
    results_dir = tmp_path_factory.mktemp("whole")
    results = engine.evaluate(study_config(results_dir))
    assert not (results_dir / partial.PARTIAL_DIR).exists()  # removed once the results are written
    return results


def test_an_interrupted_evaluation_resumes_with_the_variants_it_finished(study_config, whole, tmp_path, monkeypatch):

    original, computed = engine.evaluate_variant, []

    def interrupted(name, *args):
        if name == "sft_dpo":
            raise KeyboardInterrupt  # what SIGTERM / Ctrl-C raise in the middle of the third variant
        computed.append(name)
        return original(name, *args)

    cut = tmp_path / "cut"
    monkeypatch.setattr(engine, "evaluate_variant", interrupted)
    with pytest.raises(KeyboardInterrupt):
        engine.evaluate(study_config(cut))
    assert computed == ["base", "sft"] and not (cut / "evaluation_results.json").exists()
    assert sorted(p.name for p in (cut / partial.PARTIAL_DIR).iterdir()) == ["base.json", "sft.json"]

    computed.clear()
    monkeypatch.setattr(engine, "evaluate_variant", lambda name, *args: computed.append(name) or original(name, *args))
    resumed = engine.evaluate(study_config(cut))
    assert computed == ["sft_dpo"]  # base and SFT were taken from the interrupted run
    assert numbers(resumed) == numbers(whole)
    assert numbers(json.loads((cut / "evaluation_results.json").read_text())) == numbers(json.loads(json.dumps(whole)))
    assert not (cut / partial.PARTIAL_DIR).exists()


def test_kept_outputs_of_other_settings_are_computed_again(study_config, tmp_path):
    """The key holds every setting that reaches a variant: another generation length is another evaluation."""
    sources = engine.resolve(study_config(tmp_path)).sources
    short = asdict(study_config(tmp_path))
    longer = asdict(study_config(tmp_path, generation=GenerationSettings(max_new_tokens=16, batch_size=4)))
    moved = asdict(study_config(tmp_path / "elsewhere"))
    key = partial.variant_key("sft_dpo", sources, short, "inputs")
    assert partial.variant_key("sft_dpo", sources, longer, "inputs") != key
    assert partial.variant_key("sft_dpo", sources, short, "other rows") != key
    assert partial.variant_key("sft", sources, short, "inputs") != key
    assert partial.variant_key("sft_dpo", sources, moved, "inputs") == key  # the results folder is not a setting


def run_until_kept(command: list[str], results_dir, variant: str, signum: int) -> subprocess.CompletedProcess:
    """Run ``command`` and send it ``signum`` as soon as ``variant``'s outputs are kept."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kept, deadline = partial.path_of(results_dir, variant), time.monotonic() + 240
    while not kept.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, f"the evaluation ended before it was interrupted: {process.communicate()}"
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_the_evaluate_command_killed_twice_resumes_each_time_and_ends_with_the_same_numbers(
    study_config, whole, tmp_path
):
    """The real process: SIGTERM once the base variant is kept (one error line, exit 130), SIGKILL once SFT is kept
    (no handler can run: only the atomically written files remain), then a rerun that computes only SFT+DPO."""
    results = tmp_path / "killed"
    config = tmp_path / "evaluate.yaml"
    config.write_text(yaml.safe_dump(json.loads(json.dumps(asdict(study_config(results))))))
    command = [sys.executable, str(REPO / "scripts/evaluate.py"), "--config", str(config)]

    stopped = run_until_kept(command, results, "base", signal.SIGTERM)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert stopped.stderr.splitlines()[-1] == (
        f"error: interrupted (SIGTERM); the variants it finished are kept in {results / partial.PARTIAL_DIR}: "
        "rerun the same command to compute only the rest"
    )
    assert "Traceback" not in stopped.stderr

    killed = run_until_kept(command, results, "sft", signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert "[evaluate] base: done before the interruption" in killed.stdout
    assert not (results / "evaluation_results.json").exists()

    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stderr[-2000:]
    taken = [line for line in finished.stdout.splitlines() if "done before the interruption" in line]
    assert len(taken) == 2 and "base:" in taken[0] and "SFT:" in taken[1], finished.stdout
    written = json.loads((results / "evaluation_results.json").read_text())
    assert numbers(written) == numbers(json.loads(json.dumps(whole)))
    assert not (results / partial.PARTIAL_DIR).exists()
