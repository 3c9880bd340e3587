"""The study repository's card (reporting/study_card.py): the evaluation's numbers as a Hub model-index."""

from __future__ import annotations

from reporting.study_card import evaluation_results


def test_evaluation_results_become_a_model_index_skipping_what_is_missing():
    results = {
        "meta": {
            "labels": {"base": "base", "sft_dpo": "SFT+DPO"},
            "preference_data": {"files": "HuggingFaceH4/ultrafeedback_binarized", "split": "test_prefs"},
            "prompt_files": ["/home/me/data/tiny/eval_prompts.jsonl"],
        },
        "metrics": {
            "base": {"preference": {"accuracy": 0.5}, "checked_score": None, "perplexity": {"value": 7.5}},
            "sft_dpo": {"preference": {"accuracy": 0.9}, "checked_score": {"overall": 0.75, "n": 4}},
        },
    }
    found = {(r.metric_type, r.metric_name): r for r in evaluation_results(results)}
    assert {key: r.metric_value for key, r in found.items()} == {
        ("accuracy", "Preference accuracy, log p chosen > rejected (base)"): 0.5,
        ("perplexity", "Perplexity of reference responses (base)"): 7.5,
        ("accuracy", "Preference accuracy, log p chosen > rejected (SFT+DPO)"): 0.9,
        ("pass_rate", "Checked-prompt pass rate (SFT+DPO)"): 0.75,
    }
    accuracy = found[("accuracy", "Preference accuracy, log p chosen > rejected (SFT+DPO)")]
    assert accuracy.dataset_type == "HuggingFaceH4/ultrafeedback_binarized"
    checked = found[("pass_rate", "Checked-prompt pass rate (SFT+DPO)")]
    assert checked.dataset_type == "eval_prompts.jsonl" and "/home/me" not in checked.dataset_name
    assert all(r.task_type == "text-generation" for r in found.values())
