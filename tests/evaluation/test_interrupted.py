"""An evaluation interrupted in its third variant (SIGTERM / Ctrl-C reach it as an exception; SIGKILL leaves the
same files, each written atomically) resumes: the rerun computes only that variant and writes the same numbers
as an uninterrupted evaluation; the kept outputs are removed once the results are written."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from evaluation import engine, partial
from evaluation.config import GenerationSettings


def numbers(results: dict) -> dict:
    """What the evaluation measured, without its timings (each variant's ``seconds``)."""
    metrics = {name: {k: v for k, v in m.items() if k != "seconds"} for name, m in results["metrics"].items()}
    return {"prompts": results["prompts"], "comparisons": results["comparisons"], "metrics": metrics} | {
        "builds": results["meta"]["builds"]
    }


def test_an_interrupted_evaluation_resumes_with_the_variants_it_finished(study_config, tmp_path, monkeypatch):
    whole = engine.evaluate(study_config(tmp_path / "whole"))
    assert not (tmp_path / "whole" / partial.PARTIAL_DIR).exists()  # removed once the results are written

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
