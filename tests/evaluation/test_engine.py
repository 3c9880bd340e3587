"""evaluation/engine.py on a tiny trained pair of adapters (SFT, then DPO on top): the results files, the
dtype rule, the template check and the judge hook."""

from __future__ import annotations

import json

import pytest

from evaluation import engine
from evaluation.config import EvaluationConfig, EvaluationError, GenerationSettings
from evaluation.scoring import HeldOutData
from evaluation.variants import VariantLoadSettings


def test_evaluation_writes_both_result_files_with_the_documented_structure(
    study_config, eval_data_files, eval_prompts, tmp_path
):
    results = engine.evaluate(study_config(tmp_path / "results"))
    written = json.loads((tmp_path / "results" / "evaluation_results.json").read_text())
    assert written == json.loads(json.dumps(results))
    variants = ["base", "sft", "sft_dpo"]
    assert written["meta"]["variants"] == variants
    assert written["meta"]["template"] == "alpaca"
    assert set(written["meta"]["sources"]) == set(variants) == set(written["meta"]["builds"])
    built = written["meta"]["builds"]["sft_dpo"]  # the default: both adapters stacked, each one measured
    assert (built["sft"], built["dpo"], built["dtype"]) == ("stacked", "stacked", written["meta"]["load"]["dtype"])
    assert built["retained"]["sft"]["modules"] > 0
    assert "(stacked, both active; " in written["meta"]["sources"]["sft_dpo"]
    assert written["meta"]["training_seeds"] == {"sft": None, "dpo": None}  # these exports carry no training config
    assert "judge" not in written["meta"] and "judge_score" not in written["prompts"][0]["responses"]["sft"]
    assert "judge" not in written and "judge" not in written["metrics"]["sft"]

    # Per prompt: category, prompt, each model's response and token counts.
    assert [row["prompt"] for row in written["prompts"]] == [
        row.get("prompt", row.get("instruction")) for row in eval_prompts
    ]
    assert [row["input"] for row in written["prompts"]] == ["2 and 3", "", "", ""]
    for row, source in zip(written["prompts"], eval_prompts, strict=True):
        assert row["category"] == source["category"] and row["check"] == source["check"]
        assert row["prompt_tokens"] > 0
        assert set(row["responses"]) == set(variants)
        for response in row["responses"].values():
            assert {"text", "response_tokens", "finished", "refusal", "passed"} <= set(response)
            assert 0 <= response["response_tokens"] <= 8
            assert (response["passed"] is None) == (source["check"] is None)

    # Per model: every metric.
    pair_categories = {
        json.loads(line)["category"] for line in (eval_data_files / "prefs.jsonl").read_text().splitlines()
    }
    for name in variants:
        model = written["metrics"][name]
        assert model["preference"]["n"] == 6
        assert 0.0 <= model["preference"]["accuracy"] <= 1.0
        assert set(model["preference"]["per_category"]) == pair_categories
        assert model["perplexity"]["value"] > 1.0 and model["perplexity"]["tokens"] > 0
        generation = model["generation"]
        assert (generation["harmful_prompts"], generation["benign_prompts"]) == (1, 1)
        assert generation["refusal_rate"] in (0.0, 1.0) and generation["over_refusal_rate"] in (0.0, 1.0)
        assert 0.0 <= generation["distinct_2"] <= 1.0 and generation["mean_response_tokens"] >= 0
        assert model["checked_score"]["n"] == 3
        assert set(model["checked_score"]["per_category"]) == {"reasoning", "safety"}
        # Each per-category rate has its Wilson interval, around the rate.
        per_category = model["ci95_per_category"]
        assert set(per_category["checked_score"]) == {"reasoning", "safety"}
        assert set(per_category["preference_accuracy"]) == pair_categories
        for category, (low, high) in per_category["checked_score"].items():
            assert 0.0 <= low <= model["checked_score"]["per_category"][category] <= high <= 1.0
    # The implicit reward is measured against the SFT model: none for SFT itself.
    assert written["metrics"]["sft"]["implicit_reward"] is None
    assert written["metrics"]["sft_dpo"]["implicit_reward"]["reference"] == "sft"
    assert written["metrics"]["sft_dpo"]["implicit_reward"]["beta"] == 0.1

    # Per-item outcomes: the rates, intervals and paired tests can be recomputed from the file alone.
    assert len(written["pairs"]) == 6
    for name in variants:
        margins = [pair["logp_margin"][name] for pair in written["pairs"]]
        assert written["metrics"][name]["preference"]["accuracy"] == pytest.approx(sum(m > 0 for m in margins) / 6)
        low, high = written["metrics"][name]["ci95"]["preference_accuracy"]
        assert 0.0 <= low <= written["metrics"][name]["preference"]["accuracy"] <= high <= 1.0
    assert set(written["pairs"][0]["implicit_reward_margin"]) == {"base", "sft_dpo"}
    findings = written["comparisons"]
    assert [(f["first"], f["second"], f["metric"]) for f in findings[:3]] == [
        ("sft", "base", "preference_accuracy"), ("sft", "base", "mean_margin"), ("sft", "base", "checked_score")
    ]
    assert len(findings) == 9 and all(f["p"] <= f["p_holm"] <= 1.0 for f in findings)

    text = (tmp_path / "results" / "side_by_side_comparison.txt").read_text()
    first = text.split("[1/4] reasoning")[1].split("[2/4]")[0]
    assert "PROMPT:\n  Add the two numbers.\nINPUT:\n  2 and 3" in first
    assert first.index("base (") < first.index("SFT (") < first.index("SFT+DPO (")
    assert text.count("PROMPT:") == 4


@pytest.mark.parametrize(("hardware", "expected"), [("ZEN3", "float32"), ("ZEN4", "bfloat16")])
def test_load_dtype_auto_follows_the_precision_rule(tiny_sft_export, eval_data_files, tmp_path, monkeypatch, hardware,
                                                     expected):
    """``load.dtype: auto`` is decided by the rule for the evaluation device; explicit dtypes are kept."""
    from common.precision import Hardware

    faked = Hardware(device="cpu", cpu_capability="AVX2" if hardware == "ZEN3" else "AVX512",
                     cpu_avx512_bf16=hardware == "ZEN4")
    monkeypatch.setattr(engine, "detect_hardware", lambda device: faked)
    loaded = []

    def stop(name, sources, load, device):
        loaded.append(load.dtype)
        raise RuntimeError("stop after the load settings are known")

    monkeypatch.setattr(engine, "load_on_device", stop)
    for dtype in ("auto", "float16"):
        with pytest.raises(RuntimeError, match="stop after"):
            engine.evaluate(
                EvaluationConfig(
                    sft_adapter=str(tiny_sft_export), dpo_adapter=None, variants=["sft"], device="cpu",
                    prompts=str(eval_data_files / "prompts.jsonl"), load=VariantLoadSettings(dtype=dtype),
                    results_dir=str(tmp_path / "results"),
                )
            )
    assert loaded == [expected, "float16"]


def test_a_template_other_than_the_trained_one_is_refused(tiny_sft_export, eval_data_files, tmp_path):
    export = tmp_path / "sft"
    export.mkdir()
    for item in tiny_sft_export.iterdir():
        (export / item.name).write_bytes(item.read_bytes())
    (export / "export_info.json").write_text(json.dumps({"kind": "lora_adapter", "template": "alpaca"}))
    with pytest.raises(ValueError, match="training template"):
        engine.evaluate(
            EvaluationConfig(
                sft_adapter=str(export),
                dpo_adapter=None,
                variants=["sft"],
                template="chat",
                prompts=str(eval_data_files / "prompts.jsonl"),
                results_dir=str(tmp_path / "results"),
            )
        )


def test_unknown_variants_are_refused_before_anything_loads():
    from evaluation.config import EvaluationError

    with pytest.raises(EvaluationError, match="variants must be a non-empty list from base, sft, sft_dpo;"):
        engine.evaluate(EvaluationConfig(variants=["sft", "dpo"]))
    with pytest.raises(EvaluationError, match="from base, sft, sft_dpo, sft_ipo; got"):
        engine.evaluate(EvaluationConfig(methods={"ipo": "outputs/ipo"}, variants=["sft", "sft_kto"]))
    # a method listed is evaluated whatever variants lists (the study's configs name the three core ones)
    listed = EvaluationConfig(methods={"ipo": "outputs/ipo"}, variants=["base", "sft", "sft_dpo"])
    assert listed.selected_variants() == ["base", "sft", "sft_dpo", "sft_ipo"]


def test_the_judge_step_does_nothing_without_a_judge(eval_prompts):
    responses = {"sft": [{"text": "a"}] * len(eval_prompts)}
    assert engine.judge_step(None, eval_prompts, responses, device=engine.pick_device("cpu"), template="alpaca") is None


def test_a_judge_scores_every_response_after_generation(
    tiny_sft_export, tiny_dpo_export, tiny_model_dir, eval_data_files, tmp_path
):
    """With ``judge`` set, each response carries the judge's reward (a tiny untrained classifier here), and the
    results file its provenance, per-variant summaries, win rates and findings in the one Holm family."""

    from evaluation.findings import judge_findings
    from evaluation.judge import JudgeSettings
    from evaluation.statistics import holm

    reward = untrained_judge(tiny_model_dir, tmp_path / "reward")
    judge = JudgeSettings(model=str(reward), template="study", dtype="float32")
    export, _ = tiny_dpo_export
    engine.evaluate(
        EvaluationConfig(
            sft_adapter=str(tiny_sft_export), dpo_adapter=str(export), variants=["sft", "sft_dpo"], judge=judge,
            device="cpu", prompts=str(eval_data_files / "prompts.jsonl"), beta=0.1, targeted_categories=["safety"],
            generation=GenerationSettings(max_new_tokens=4), load=VariantLoadSettings(dtype="float32"),
            results_dir=str(tmp_path / "results"),
        )
    )
    results = json.loads((tmp_path / "results" / "evaluation_results.json").read_text())
    rows = results["prompts"]
    scores = {name: [row["responses"][name]["judge_score"] for row in rows] for name in ("sft", "sft_dpo")}
    assert all(len(values) == 4 and all(isinstance(s, float) for s in values) for values in scores.values())

    meta = results["meta"]["judge"]
    assert meta["model"]["path"] == str(reward) and len(meta["model"]["sha256"]) == 64  # provenance, as loaded
    assert (meta["template"], meta["dtype"]) == ("study", "float32")
    assert meta["truncated"] == {"scored": 8, "prompt": 0, "response": 0}  # 4 prompts x 2 variants
    assert meta["settings"]["model"] == str(reward) and meta["settings"]["batch_size"] == 8

    # Every judge number, recomputed from the per-prompt rewards and token counts of the file.
    lengths = {name: [row["responses"][name]["response_tokens"] for row in rows] for name in scores}
    again = json.loads(json.dumps(judge_findings(scores, lengths, [row["category"] for row in rows])))
    assert {name: results["metrics"][name]["judge"] for name in scores} == again["variants"]
    assert results["judge"] == {"pairs": again["pairs"]}
    assert [(p["first"], p["second"]) for p in results["judge"]["pairs"]] == [("sft_dpo", "sft")]
    findings = results["comparisons"]
    assert [f["metric"] for f in findings] == [
        "checked_score", "judge_win_rate", "mean_reward", "checked_score_targeted", "judge_win_rate_targeted"
    ]
    assert [f["p_holm"] for f in findings] == pytest.approx(holm([f["p"] for f in findings]))
    # the targeted tests read the two safety prompts only (both are checked: refusal and helpful)
    assert [(f["n"], f["categories"]) for f in findings[3:]] == [(2, ["safety"]), (2, ["safety"])]
    safety = [row for row in rows if row["category"] == "safety"]
    wins = sum(row["responses"]["sft_dpo"]["judge_score"] > row["responses"]["sft"]["judge_score"] for row in safety)
    assert findings[4]["wins"] == wins
    assert results["meta"]["targeted_categories"] == ["safety"]


def test_a_missing_judge_folder_is_refused_before_any_model_loads(tiny_sft_export, tmp_path, monkeypatch):
    """The tiny config's judge (``outputs/tiny/reward``) exists only once the reward stage has trained it."""
    from evaluation.config import EvaluationError
    from evaluation.judge import JudgeSettings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(engine, "load_on_device", lambda *args: pytest.fail("a variant was loaded"))
    config = EvaluationConfig(
        sft_adapter=str(tiny_sft_export), dpo_adapter=None, variants=["sft"], device="cpu",
        judge=JudgeSettings(model="outputs/tiny/reward", template="study"), results_dir=str(tmp_path / "results"),
    )
    with pytest.raises(EvaluationError, match=r"^judge\.model: outputs/tiny/reward: not a model folder .*--judge null"):
        engine.evaluate(config)
    assert not (tmp_path / "results").exists()
    # A Hub id is not a folder to check here (the judge's loader resolves it).
    engine.check_judge_folder(JudgeSettings(model="Skywork/Skywork-Reward-V2-Llama-3.1-8B"))


def test_a_targeted_category_no_prompt_has_is_refused_before_any_model_loads(
    tiny_sft_export, eval_data_files, tmp_path, monkeypatch
):
    monkeypatch.setattr(engine, "load_on_device", lambda *args: pytest.fail("a model was loaded"))
    config = EvaluationConfig(
        sft_adapter=str(tiny_sft_export), dpo_adapter=None, variants=["base", "sft"], device="cpu",
        prompts=str(eval_data_files / "prompts.jsonl"), targeted_categories=["safety", "saftey"],
        results_dir=str(tmp_path / "results"),
    )  # fmt: skip
    with pytest.raises(EvaluationError, match="no prompt has the category saftey; the prompts' categories are "
                       "creative_writing, reasoning, safety"):  # fmt: skip
        engine.evaluate(config)
    assert not (tmp_path / "results").exists()


def test_public_benchmarks_run_on_every_variant_and_join_the_one_family(
    tiny_sft_export, tiny_dpo_export, tiny_model_dir, eval_data_files, repo, tmp_path
):
    """With ``benchmarks``: XSTest and AlpacaEval (local copies in their real schemas) answered by the engine's own
    generation, AlpacaEval judged in the judge's one load beside the study's prompts, an lm-eval task run on each
    loaded variant; per-item outcomes in the file, and their paired tests in the same Holm family as the rest."""

    from evaluation.benchmark_stats import benchmark_items
    from evaluation.config import BenchmarkSettings
    from evaluation.harness import HarnessSettings, HarnessTask
    from evaluation.judge import JudgeSettings
    from evaluation.prompt_sets import PromptSetSettings
    from evaluation.statistics import holm, mcnemar_exact, wilson_interval

    reward = untrained_judge(tiny_model_dir, tmp_path / "reward")
    benchmarks = BenchmarkSettings(
        harness=HarnessSettings(
            tasks=[HarnessTask("gsm8k", "exact_match", num_fewshot=1, filter="strict-match")],
            batch_size=4, max_gen_toks=4, limit=3,
            local_copies={"openai/gsm8k": str(repo / "data/benchmarks/openai--gsm8k")},
        ),
        prompt_sets=[
            PromptSetSettings("xstest", str(repo / "data/benchmarks/Paul--XSTest/train.jsonl")),
            PromptSetSettings("alpaca_eval", str(repo / "data/benchmarks/tatsu-lab--alpaca_eval"),
                              data_file="alpaca_eval.json", num_examples=3),
        ],
    )
    export, _ = tiny_dpo_export
    engine.evaluate(
        EvaluationConfig(
            sft_adapter=str(tiny_sft_export), dpo_adapter=str(export), variants=["sft", "sft_dpo"], device="cpu",
            judge=JudgeSettings(model=str(reward), template="study", dtype="float32"), benchmarks=benchmarks,
            prompts=str(eval_data_files / "prompts.jsonl"), beta=0.1, max_length=512,
            generation=GenerationSettings(max_new_tokens=4), load=VariantLoadSettings(dtype="float32"),
            results_dir=str(tmp_path / "results"),
        )
    )
    results = json.loads((tmp_path / "results" / "evaluation_results.json").read_text())
    part = results["benchmarks"]
    assert set(part) == {"table", "lm_eval", "prompt_sets", "alpaca_eval", "items", "responses"}
    assert set(part["items"]) == {"gsm8k", "xstest/unsafe_refused", "xstest/safe_complied"}
    assert part["items"]["gsm8k"]["ids"] == ["gsm8k/0", "gsm8k/1", "gsm8k/2"]  # limit 3, in doc order
    assert part["items"]["xstest/safe_complied"]["ids"] == ["0", "1", "2"]  # the copy's 3 safe rows, then 2 unsafe
    protocol = part["lm_eval"]["protocols"]["gsm8k"]
    assert part["lm_eval"]["version"] == "0.4.13" and protocol["num_fewshot"] == {"gsm8k": 1}
    assert part["prompt_sets"]["alpaca_eval"]["rows"] == 3 and part["prompt_sets"]["xstest"]["rows"] == 5
    assert results["meta"]["benchmarks"]["harness"]["limit"] == 3

    # The XSTest outcomes are the refusal flags of the responses kept in the file; the table's rates and Wilson
    # intervals follow from them.
    xstest = part["responses"]["xstest"]
    for variant in ("sft", "sft_dpo"):
        refused = [row["responses"][variant]["refusal"] for row in xstest]
        assert part["items"]["xstest/unsafe_refused"]["values"][variant] == [float(r) for r in refused[3:]]
        assert part["items"]["xstest/safe_complied"]["values"][variant] == [float(not r) for r in refused[:3]]
        entry = part["table"]["xstest/safe_complied"]["per_variant"][variant]
        complied = sum(not r for r in refused[:3])
        assert entry["value"] == pytest.approx(complied / 3)
        assert entry["ci95"] == pytest.approx(list(wilson_interval(complied, 3)))
    assert benchmark_items({}, {}, {}) == {}

    # AlpacaEval: judged beside the study's prompts (4 + 3 responses per variant in one judge load).
    assert results["meta"]["judge"]["truncated"]["scored"] == 2 * (4 + 3)
    alpaca = part["responses"]["alpaca_eval"]
    assert all(isinstance(row["responses"][v]["judge_score"], float) for row in alpaca for v in ("sft", "sft_dpo"))
    assert "judge_score" not in xstest[0]["responses"]["sft"]
    wins = sum(row["responses"]["sft_dpo"]["judge_score"] > row["responses"]["sft"]["judge_score"] for row in alpaca)
    (pair,) = part["alpaca_eval"]["pairs"]
    assert (pair["first"], pair["second"], pair["win_rate"]["wins"]) == ("sft_dpo", "sft", wins)

    # One family: the study's findings, then the benchmarks', Holm over all of them; each with its power.
    findings = results["comparisons"]
    metrics = [f["metric"] for f in findings]
    assert metrics[-5:] == [
        "benchmark:gsm8k", "benchmark:xstest/unsafe_refused", "benchmark:xstest/safe_complied",
        "benchmark:alpaca_eval/judge_win_rate", "benchmark:alpaca_eval/mean_reward",
    ]
    assert [f["p_holm"] for f in findings] == pytest.approx(holm([f["p"] for f in findings]))
    gsm8k = findings[metrics.index("benchmark:gsm8k")]
    values = part["items"]["gsm8k"]["values"]
    only_first = sum(a == 1.0 and b == 0.0 for a, b in zip(values["sft_dpo"], values["sft"], strict=True))
    only_second = sum(a == 0.0 and b == 1.0 for a, b in zip(values["sft_dpo"], values["sft"], strict=True))
    assert (gsm8k["only_first"], gsm8k["only_second"]) == (only_first, only_second)
    assert gsm8k["p"] == pytest.approx(mcnemar_exact(only_first, only_second))
    assert gsm8k["discordance"] == pytest.approx((only_first + only_second) / 3)
    assert all("mde" in f for f in findings)


def untrained_judge(tiny_model_dir, folder):
    """A tiny untrained reward model (the tiny base's shapes, one output, seeded) saved to ``folder``."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, MistralForSequenceClassification

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.num_labels = 1
    torch.manual_seed(0)
    MistralForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


def test_the_methods_study_evaluates_each_method_and_tests_it_against_sft_and_dpo(
    tiny_sft_export, tiny_dpo_export, eval_data_files, tmp_path
):
    """A second preference export (here the DPO export again, named ``ipo``) is the variant ``sft_ipo``, built as
    ``sft_dpo`` is and compared with SFT and with SFT+DPO in the one family; being the same weights, it differs
    from SFT+DPO in nothing, and the report says so."""
    from reporting.report import write_report

    export, _ = tiny_dpo_export
    results = engine.evaluate(
        EvaluationConfig(
            sft_adapter=str(tiny_sft_export),
            dpo_adapter=str(export),
            methods={"ipo": str(export)},
            prompts=str(eval_data_files / "prompts.jsonl"),
            preference_data=HeldOutData(files=str(eval_data_files / "prefs.jsonl")),
            beta=0.1,
            generation=GenerationSettings(max_new_tokens=6, batch_size=4),
            score_batch_size=4,
            device="cpu",
            results_dir=str(tmp_path / "results"),
        )
    )
    meta = results["meta"]
    assert meta["variants"] == ["base", "sft", "sft_dpo", "sft_ipo"]
    assert meta["labels"]["sft_ipo"] == "SFT+IPO" and "+ IPO adapter " in meta["sources"]["sft_ipo"]
    assert set(meta["training"]) == {"sft", "sft_dpo", "sft_ipo"}
    pairs = {(f["first"], f["second"]) for f in results["comparisons"]}
    assert {("sft_ipo", "sft"), ("sft_ipo", "sft_dpo"), ("sft_dpo", "sft")} <= pairs
    same = [f for f in results["comparisons"] if (f["first"], f["second"]) == ("sft_ipo", "sft_dpo")]
    assert same and all(f["difference"] == 0 and not f["significant"] for f in same)
    ipo = results["prompts"][0]["responses"]["sft_ipo"]["text"]
    assert ipo == results["prompts"][0]["responses"]["sft_dpo"]["text"]
    report = write_report(tmp_path / "results").read_text()
    assert "## Methods side by side" in report
    row = next(line for line in report.splitlines() if line.startswith("| SFT+IPO |"))
    assert f"not significant on any of {len(same)} tests" in row
    with pytest.raises(EvaluationError, match="methods: dpo is the study's own DPO export"):
        EvaluationConfig(methods={"dpo": str(export)}).selected_variants()
