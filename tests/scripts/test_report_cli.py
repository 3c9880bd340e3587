"""scripts/report.py: the command line, its error line, --seed-results and --out."""

from __future__ import annotations

import json

import pytest
import report


def minimal_results(seed: int, accuracy: float) -> dict:
    variants = ["sft", "sft_dpo"]
    return {
        "meta": {
            "created": "2026-01-01T00:00:00+00:00", "variants": variants,
            "labels": {"sft": "SFT", "sft_dpo": "SFT+DPO"},
            "sources": {name: name for name in variants}, "template": "alpaca", "beta": 0.1,
            "implicit_reward_reference": "sft", "prompt_files": ["p.jsonl"], "num_prompts": 0,
            "num_preference_pairs": 4, "num_instruction_examples": 0, "training_seeds": {"sft": seed, "dpo": seed},
            "generation": {"do_sample": False, "max_new_tokens": 8}, "device": "cpu",
            "host": {"platform": "test", "torch": "x", "threads": 1}, "seconds": 1.0,
        },
        "metrics": {"sft": {"preference": {"accuracy": 0.5}}, "sft_dpo": {"preference": {"accuracy": accuracy}}},
        "comparisons": [
            {"metric": "preference_accuracy", "first": "sft_dpo", "second": "sft", "difference": accuracy - 0.5,
             "ci95": [0.0, 0.5], "p": 0.5, "p_holm": 0.5, "significant": False, "test": "exact McNemar", "n": 4}
        ],
        "prompts": [],
    }


def test_missing_results_is_a_clear_error(tmp_path, capsys):
    assert report.main(["--results-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "run scripts/evaluate.py first" in error and error.count("\n") == 1


def test_seed_results_add_the_section_as_the_pipeline_calls_it(tmp_path, capsys):
    folders = []
    for seed, accuracy in ((0, 0.75), (1, 0.5), (2, 1.0)):
        folders.append(tmp_path / "results" / f"seed{seed}")
        folders[-1].mkdir(parents=True)
        (folders[-1] / "evaluation_results.json").write_text(json.dumps(minimal_results(seed, accuracy)))
    args = ["--results-dir", str(folders[0]), "--sft-run", str(tmp_path / "runs/seed0/sft"),
            "--dpo-run", str(tmp_path / "runs/seed0/dpo"), "--seed-results", *map(str, folders)]
    assert report.main(args) == 0
    text = (folders[0] / "report.md").read_text()
    assert "| Held-out preference accuracy (log p chosen > rejected) | SFT+DPO | 75.0% ± 25.0 pts |" in text
    assert ("- SFT+DPO vs SFT on held-out preference accuracy: +25.0, +0.0, +50.0 points over seeds 0,1,2 — "
            "same direction on every seed: no") in text
    assert f"[report] wrote {folders[0] / 'report.md'}" in capsys.readouterr().out
    missing = [*args[:-3], str(folders[0]), str(tmp_path / "results" / "seed9")]
    assert report.main(missing) == 2
    assert "seed9/evaluation_results.json not found" in capsys.readouterr().err


def test_out_writes_the_report_and_its_plots_there_and_leaves_the_run_report_alone(tmp_path, capsys):
    """As the pipeline calls it for the seeds: --out, then --seed-results (nargs +) last; and the other order."""
    folders = []
    for seed, accuracy in ((0, 0.75), (1, 0.5)):
        folders.append(tmp_path / "results" / f"seed{seed}")
        folders[-1].mkdir(parents=True)
        (folders[-1] / "evaluation_results.json").write_text(json.dumps(minimal_results(seed, accuracy)))
    (folders[0] / "report.md").write_text("seed 0's own report")
    out = tmp_path / "results" / "seeds" / "report.md"
    assert report.main(["--results-dir", str(folders[0]), "--out", str(out), "--seed-results", *map(str, folders)]) == 0
    text = out.read_text()
    assert "## Across training seeds" in text and "over seeds 0,1" in text
    assert f"those of the run in `{folders[0]}`" in text
    assert "- `../seed0/evaluation_results.json`: every metric" in text  # the Files section, seen from --out
    assert (out.parent / "plots").is_dir() and not (folders[0] / "plots").exists()
    assert (folders[0] / "report.md").read_text() == "seed 0's own report"
    assert f"[report] wrote {out} and its plots in {out.parent / 'plots'}" in capsys.readouterr().out

    again = tmp_path / "elsewhere" / "all.md"
    reordered = ["--seed-results", *map(str, folders), "--out", str(again), "--results-dir", str(folders[1])]
    assert report.main(reordered) == 0
    assert "over seeds 0,1" in again.read_text() and f"run in `{folders[1]}`" in again.read_text()
    assert (folders[0] / "report.md").read_text() == "seed 0's own report"


def test_without_out_the_report_goes_into_the_results_folder(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "evaluation_results.json").write_text(json.dumps(minimal_results(0, 0.75)))
    assert report.main(["--results-dir", str(folder)]) == 0
    text = (folder / "report.md").read_text()
    assert "those of the run in" not in text and "- `evaluation_results.json`: every metric" in text
    assert (folder / "plots").is_dir()


def test_out_naming_a_folder_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        report.main(["--results-dir", str(tmp_path), "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "is a folder; give the report's file path" in capsys.readouterr().err
