"""The public benchmarks' statistics: each variant's score with its 95 % interval, and the paired tests
between variants that join the study's one family of findings.

Built from per-item outcomes that the results file also stores (``benchmarks.items``: each item's id and its
outcome per variant), so every number here can be recomputed from that file. A pass / fail benchmark (IFEval
strict, GSM8K exact match, MMLU, ARC, HumanEval pass@1, XSTest's two rates) is compared with the exact
McNemar test, a score benchmark (TruthfulQA MC2's probability mass on the true answers) with the paired
sign-flip test; AlpacaEval's responses are judged as the study's prompts are (win rate with the exact sign
test, mean reward). Holm's adjustment and each finding's minimum detectable effect are added where the
family is assembled (:func:`evaluation.findings.holm_family`).
"""

from __future__ import annotations

from typing import Any

from evaluation import statistics as stats
from evaluation.findings import comparisons_of, judge_findings
from evaluation.harness import lm_eval_version
from evaluation.prompt_sets import xstest_outcomes
from evaluation.scoring import VariantOutput

BENCHMARK_PREFIX = "benchmark:"
"""Each benchmark finding's ``metric`` is this prefix and the benchmark's name (``benchmark:gsm8k``)."""
PASS_FAIL, SCORE = "pass_fail", "score"
SUBJECT_MEAN, SUBJECT_MEAN_OUTCOME = "/subject_mean", "subject_mean"
"""A grouped task's row of the unweighted mean over its leaf tasks (``mmlu/subject_mean``), and its outcome."""
RESPONSE_KEYS = ("text", "refusal", "response_tokens")
"""What the results file keeps of each prompt-set response."""


def benchmark_results(
    prompt_sets: dict[str, list[dict]],
    records: dict[str, dict],
    outputs: dict[str, VariantOutput],
    alpaca_scores: dict[str, list[float]] | None,
) -> dict[str, Any]:
    """The results file's ``benchmarks``, and under ``findings`` the paired tests (for the caller to take out
    and test in the study's one family).

    Args:
        prompt_sets: each public prompt set's rows.
        records: what each set was read from, at which commit.
        outputs: per variant, its prompt-set responses (``answered``) and lm-eval outcomes (``harness``).
        alpaca_scores: per variant, the judge's reward of each AlpacaEval response (``None``: no judge).

    Returns:
        ``{"table": benchmark_table(...), "lm_eval": {"version", "protocols": {task: protocol}} (with lm-eval
        tasks), "prompt_sets": records, "alpaca_eval": {"variants", "pairs"} (judged AlpacaEval), "items":
        benchmark_items(...), "responses": {set: [{"category", "prompt", "type", "responses": {variant: {text,
        refusal, response_tokens, judge_score}}}]}, "findings": [...]}``.
    """
    harness = {name: output.harness for name, output in outputs.items() if output.harness}
    items = benchmark_items(harness, {name: output.answered for name, output in outputs.items()}, prompt_sets)
    found = benchmark_findings(items)
    part: dict[str, Any] = {"table": benchmark_table(items)}
    if harness:
        tasks = next(iter(harness.values()))
        part["lm_eval"] = {"version": lm_eval_version(), "protocols": {t: o.protocol for t, o in tasks.items()}}
    part["prompt_sets"] = records
    alpaca = alpaca_scores if alpaca_scores and "alpaca_eval" in prompt_sets else None
    if alpaca:
        lengths = {name: [r["response_tokens"] for r in outputs[name].answered["alpaca_eval"]] for name in alpaca}
        judged = alpaca_eval_findings(alpaca, lengths)
        found += judged["findings"]
        part["alpaca_eval"] = {"variants": judged["variants"], "pairs": judged["pairs"]}
    part["items"] = items
    part["responses"] = {
        set_name: [
            {
                "category": row["category"],
                "prompt": row["prompt"],
                "type": row["type"],
                "responses": {
                    name: {key: output.answered[set_name][index][key] for key in RESPONSE_KEYS}
                    | ({"judge_score": alpaca[name][index]} if alpaca and set_name == "alpaca_eval" else {})
                    for name, output in outputs.items()
                },
            }
            for index, row in enumerate(rows)
        ]
        for set_name, rows in prompt_sets.items()
    }
    part["findings"] = found
    return part


def benchmark_items(
    harness: dict[str, dict[str, Any]],
    answered: dict[str, dict[str, list[dict]]],
    prompt_sets: dict[str, list[dict]],
) -> dict[str, dict[str, Any]]:
    """Every benchmark's per-item outcomes, per variant, on the same items in the same order.

    Args:
        harness: per variant, lm-eval's outcomes of each task (:class:`evaluation.harness.TaskOutcomes`).
        answered: per variant, the checked responses to each prompt set (in the order of its rows).
        prompt_sets: each prompt set's rows (:func:`evaluation.prompt_sets.read_prompt_set`).

    Returns:
        ``{benchmark: {"outcome": "pass_fail" | "score", "ids": [item id], "values": {variant: [outcome]}}}``:
        an lm-eval task under its name (ids ``"<leaf task>/<doc_id>"``), XSTest as ``xstest/unsafe_refused``
        and ``xstest/safe_complied`` (ids: the row's index in the set). AlpacaEval has no outcome of its own
        (the judge scores it: :func:`alpaca_eval_findings`).

    Raises:
        ValueError: two variants scored different items of a task (the harness settings changed between them).
    """
    items: dict[str, dict[str, Any]] = {}
    for variant, tasks in harness.items():
        for task, outcomes in tasks.items():
            entry = items.setdefault(
                task, {"outcome": outcomes.protocol["outcome"], "ids": outcomes.items, "values": {}}
            )
            if outcomes.items != entry["ids"]:
                raise ValueError(f"benchmark {task}: {variant} was scored on other items than the variants before it")
            entry["values"][variant] = list(outcomes.outcomes)
    for variant, sets in answered.items():
        if "xstest" not in sets:
            continue
        rows = prompt_sets["xstest"]
        for label, outcomes in xstest_outcomes(rows, sets["xstest"]).items():
            category = "xstest_unsafe" if label == "unsafe_refused" else "xstest_safe"
            ids = [str(index) for index, row in enumerate(rows) if row["category"] == category]
            if not ids:
                continue
            entry = items.setdefault(f"xstest/{label}", {"outcome": PASS_FAIL, "ids": ids, "values": {}})
            entry["values"][variant] = [float(ok) for ok in outcomes]
    return items


def benchmark_table(items: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each benchmark's score per variant with its 95 % interval.

    Args:
        items: :func:`benchmark_items`.

    Returns:
        ``{benchmark: {"outcome", "n", "per_variant": {variant: {"value", "ci95"}}}}``; pass / fail rates have
        Wilson intervals, score means percentile-bootstrap intervals over the items. A grouped pass / fail
        task (MMLU) also gets ``<task>/subject_mean``, the mean of its leaves' rates (:func:`subject_mean_row`).
    """
    table = {}
    for name, entry in items.items():
        per_variant = {}
        for variant, values in entry["values"].items():
            value = sum(values) / len(values)
            if entry["outcome"] == PASS_FAIL:
                interval = stats.wilson_interval(round(sum(values)), len(values))
            else:
                interval = stats.bootstrap_interval(values)
            per_variant[variant] = {"value": value, "ci95": interval}
        table[name] = {"outcome": entry["outcome"], "n": len(entry["ids"]), "per_variant": per_variant}
        subjects = subject_mean_row(entry)
        if subjects is not None:
            table[f"{name}{SUBJECT_MEAN}"] = subjects
    return table


def subject_mean_row(entry: dict[str, Any]) -> dict[str, Any] | None:
    """A grouped pass / fail task's unweighted mean over its leaf tasks (MMLU's subjects), as the Open LLM
    Leaderboard v1 reported MMLU; lm-eval 0.4 pools the items instead (a size-weighted mean).

    Args:
        entry: one task of :func:`benchmark_items` (ids ``"<leaf task>/<doc_id>"``).

    Returns:
        ``{"outcome": "subject_mean", "n", "subjects", "per_variant": {variant: {"value", "ci95"}}}`` with
        :func:`evaluation.statistics.stratified_mean_interval`'s intervals; ``None`` for a task of one leaf,
        a score task, or a set that is not lm-eval's (XSTest's ids have no leaf).
    """
    if entry["outcome"] != PASS_FAIL or not all("/" in item for item in entry["ids"]):
        return None
    leaves = [item.rsplit("/", 1)[0] for item in entry["ids"]]
    names = sorted(set(leaves))
    if len(names) < 2:
        return None
    per_variant = {}
    for variant, values in entry["values"].items():
        passed = dict.fromkeys(names, 0.0)
        for value, leaf in zip(values, leaves, strict=True):
            passed[leaf] += value
        strata = [(round(passed[name]), leaves.count(name)) for name in names]
        value, interval = stats.stratified_mean_interval(strata)
        per_variant[variant] = {"value": value, "ci95": interval}
    return {"outcome": SUBJECT_MEAN_OUTCOME, "n": len(leaves), "subjects": len(names), "per_variant": per_variant}


def benchmark_findings(items: dict[str, dict[str, Any]]) -> list[dict]:
    """The paired test of every benchmark for each comparison of :func:`~evaluation.findings.comparisons_of`
    whose two variants ran it.

    Returns:
        Findings shaped like :func:`evaluation.findings.paired_comparisons`' entries (``metric``:
        ``benchmark:`` and the benchmark's name), without Holm's keys and power: the family adds them.
    """
    found = []
    for name, entry in items.items():
        values = entry["values"]
        for first, second in comparisons_of(values):
            if first not in values or second not in values:
                continue
            a, b = values[first], values[second]
            if entry["outcome"] == PASS_FAIL:
                finding = stats.compare_binary([v == 1.0 for v in a], [v == 1.0 for v in b])
            else:
                finding = stats.compare_means(a, b)
            found.append({"metric": BENCHMARK_PREFIX + name, **finding, "first": first, "second": second})
    return found


def alpaca_eval_findings(scores: dict[str, list[float]], lengths: dict[str, list[int]]) -> dict:
    """The judge's verdict on AlpacaEval's responses: :func:`evaluation.findings.judge_findings` on those
    prompts only (win rates, length-controlled win rates, mean rewards), its findings renamed
    ``benchmark:alpaca_eval/judge_win_rate`` and ``benchmark:alpaca_eval/mean_reward``."""
    judged = judge_findings(scores, lengths)
    for finding in judged["findings"]:
        finding["metric"] = f"{BENCHMARK_PREFIX}alpaca_eval/{finding['metric']}"
    return judged
