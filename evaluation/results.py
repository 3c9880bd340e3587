"""The results files: ``evaluation_results.json`` (every number, and every item behind it) and
``side_by_side_comparison.txt`` (every prompt with each model's response, for reading).

The JSON holds ``meta`` (what was evaluated, how, where; ``sources`` and ``builds``: how each variant was built,
its adapters merged into which dtype and what share of their update the merge kept, or stacked), ``metrics``
(per variant), ``comparisons`` (paired tests between variants, :mod:`evaluation.comparisons`, the judge's among
them), ``judge`` (with a judge only: its win rates between variants, :mod:`evaluation.judge_stats`), ``pairs``,
``instruction_examples`` (each held-out response's summed NLL and tokens per variant) and ``prompts`` (per-item
outcomes, from which every number can be recomputed: a prompt's ``judge_score`` and ``response_tokens`` per
variant give the judge's numbers). It is written last and atomically: its presence marks a complete
evaluation (the pipeline checks it).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_text
from common.errors import ResultsError
from evaluation import comparisons, judge_stats, metrics

RESULTS_FILE = "evaluation_results.json"
SIDE_BY_SIDE_FILE = "side_by_side_comparison.txt"
REFERENCE_VARIANT = "sft"
"""The implicit reward of every other variant is measured against this one (DPO's reference)."""


@dataclass
class VariantOutput:
    """What one variant produced while it was in memory.

    Attributes:
        responses: one per prompt: ``{text, response_tokens, finished, refusal, passed, prompt_tokens}``.
        pair_logps: ``(chosen, rejected)`` summed log-probs of each held-out pair (``None``: no pairs).
        nll: ``(nll, tokens)`` of each held-out instruction response (``None``: none scored).
        seconds: wall time of the variant (load, generate, score).
    """

    responses: list[dict[str, Any]]
    pair_logps: tuple[list[float], list[float]] | None
    nll: list[tuple[float, int]] | None
    seconds: float


@dataclass(frozen=True)
class Headline:
    """One headline metric of the report: where it is in a variant's ``metrics`` and how to show it.

    Attributes:
        label: the row's name in the report.
        path: keys into ``metrics[variant]``.
        kind: ``pct`` (a rate), ``float`` or ``int``.
        better: ``higher``, ``lower`` or ``-``.
        interval: keys into ``metrics[variant]`` of its 95 % interval (``None``: no interval is computed).
    """

    label: str
    path: tuple[str, ...]
    kind: str
    better: str
    interval: tuple[str, ...] | None = None

    @property
    def key(self) -> str:
        """The metric's name in :func:`evaluation.seeds.across_seeds`: its path, dotted."""
        return ".".join(self.path)


HEADLINE: tuple[Headline, ...] = (
    Headline(
        "Held-out preference accuracy (log p chosen > rejected)",
        ("preference", "accuracy"),
        "pct",
        "higher",
        ("ci95", "preference_accuracy"),
    ),
    Headline(
        "Mean log-prob margin, chosen - rejected (nats)",
        ("preference", "mean_margin"),
        "float",
        "higher",
        ("ci95", "mean_margin"),
    ),
    Headline(
        "Implicit-reward accuracy vs SFT reference",
        ("implicit_reward", "accuracy"),
        "pct",
        "higher",
        ("ci95", "implicit_reward_accuracy"),
    ),
    Headline(
        "Mean implicit-reward margin vs SFT (beta x nats)",
        ("implicit_reward", "mean_margin"),
        "float",
        "higher",
        ("ci95", "implicit_reward_margin"),
    ),
    Headline(
        "Perplexity on held-out instruction responses",
        ("perplexity", "value"),
        "float",
        "lower",
        ("ci95", "perplexity"),
    ),
    Headline("Checked score, all prompts", ("checked_score", "overall"), "pct", "higher", ("ci95", "checked_score")),
    Headline("Judge's mean reward of the responses", ("judge", "mean_reward"), "float", "higher", ("judge", "ci95")),
    Headline(
        "Refusal rate on harmful prompts", ("generation", "refusal_rate"), "pct", "higher", ("ci95", "refusal_rate")
    ),
    Headline(
        "Over-refusal rate on benign prompts",
        ("generation", "over_refusal_rate"),
        "pct",
        "lower",
        ("ci95", "over_refusal_rate"),
    ),
    Headline(
        "Mean response length (tokens)",
        ("generation", "mean_response_tokens"),
        "float",
        "-",
        ("ci95", "mean_response_tokens"),
    ),
    Headline("Responses ending with EOS", ("generation", "finished_rate"), "pct", "-", ("ci95", "finished_rate")),
    Headline("Distinct-2 of the responses", ("generation", "distinct_2"), "float", "-", ("ci95", "distinct_2")),
)


def dig(tree: dict | None, *keys: str) -> Any:
    """``tree[k1][k2]...`` or ``None`` where a level is missing or ``None``."""
    for key in keys:
        if not isinstance(tree, dict) or tree.get(key) is None:
            return None
        tree = tree[key]
    return tree


def categories_of(results: dict, *path: str) -> list[str]:
    """Every category that appears under ``metrics[variant][path...]`` for any variant, sorted."""
    found: set[str] = set()
    for per_variant in results["metrics"].values():
        found.update(dig(per_variant, *path) or {})
    return sorted(found)


def variant_metrics(
    output: VariantOutput,
    prompts: list[dict],
    pair_categories: list[str | None],
    margins: list[float] | None,
    implicit: dict[str, Any] | None,
    num_examples: int,
) -> dict[str, Any]:
    """One variant's ``metrics`` entry: every rate and mean, overall and per category, with 95 % intervals.

    Args:
        margins: its log-prob margin per held-out pair (``None``: no pairs were scored).
        implicit: ``{reference, beta, margins}`` of its implicit reward (``None``: it is the reference, or
            the reference was not scored).
    """
    responses = output.responses
    result: dict[str, Any] = {"seconds": round(output.seconds, 1)}
    if margins is not None:
        result["preference"] = metrics.margin_summary(margins, pair_categories)
        result["implicit_reward"] = None
        if implicit is not None:
            result["implicit_reward"] = {
                "reference": implicit["reference"],
                "beta": implicit["beta"],
                **metrics.margin_summary(implicit["margins"], pair_categories),
            }
    if output.nll:
        total_nll, total_tokens = sum(nll for nll, _ in output.nll), sum(tokens for _, tokens in output.nll)
        result["perplexity"] = {
            "value": metrics.perplexity(total_nll, total_tokens),
            "tokens": total_tokens,
            "examples": num_examples,
        }
    result["generation"] = metrics.generation_metrics(prompts, responses)
    result["checked_score"] = metrics.checked_score(prompts, responses)
    kinds = metrics.check_kinds(prompts)
    refusals = {
        name: [r["refusal"] for r, kind in zip(responses, kinds, strict=True) if kind == check]
        for name, check in (("refusal_rate", metrics.HARMFUL_CHECK), ("over_refusal_rate", metrics.BENIGN_CHECK))
    }
    checked = [(p["category"], r["passed"]) for p, r in zip(prompts, responses, strict=True) if r["passed"] is not None]
    passed = [outcome for _, outcome in checked]
    result["ci95"] = comparisons.variant_intervals(
        margins or [],
        passed,
        refusals,
        implicit_margins=implicit["margins"] if implicit is not None else (),
        nll=output.nll or (),
        responses=responses,
    )
    per_category = {
        "checked_score": comparisons.category_intervals(passed, [category for category, _ in checked]),
        "preference_accuracy": comparisons.category_intervals([m > 0 for m in margins or []], pair_categories),
    }
    result["ci95_per_category"] = {name: found for name, found in per_category.items() if found}
    return result


def assemble(
    meta: dict[str, Any],
    prompts: list[dict],
    pairs: list[dict],
    outputs: dict[str, VariantOutput],
    beta: float,
    num_examples: int,
    judge_scores: dict[str, list[float]] | None = None,
    targeted: Sequence[str] = (),
) -> dict[str, Any]:
    """The content of ``evaluation_results.json``.

    Args:
        meta: what was evaluated and how (written as is).
        prompts: the prompt rows, in order; ``outputs[v].responses`` follow the same order.
        pairs: the held-out preference pairs, in the order of ``outputs[v].pair_logps``.
        outputs: per variant, in the order the report shows them.
        beta: DPO's beta of the implicit reward.
        num_examples: held-out instruction examples behind the perplexity.
        judge_scores: per variant, a judge's score of each response (``None``: no judge); stored per response
            as ``judge_score``, summarised per variant in ``metrics[v]["judge"]``, compared between variants
            in ``judge["pairs"]``, and tested in ``comparisons`` beside the other findings (one Holm family).
        targeted: the categories the preference pairs target: SFT+DPO vs SFT on just their prompts
            (:func:`evaluation.comparisons.targeted_findings`) joins the family.
    """
    pair_categories = [pair["category"] for pair in pairs]
    margins = {name: metrics.logp_margins(*o.pair_logps) for name, o in outputs.items() if o.pair_logps is not None}
    implicit = {
        name: metrics.implicit_reward_margins(*outputs[name].pair_logps, *outputs[REFERENCE_VARIANT].pair_logps, beta)
        for name in margins
        if REFERENCE_VARIANT in margins and name != REFERENCE_VARIANT
    }
    passed = {name: [r["passed"] for r in o.responses if r["passed"] is not None] for name, o in outputs.items()}
    per_model = {
        name: variant_metrics(
            output,
            prompts,
            pair_categories,
            margins.get(name),
            {"reference": REFERENCE_VARIANT, "beta": beta, "margins": implicit[name]} if name in implicit else None,
            num_examples,
        )
        for name, output in outputs.items()
    }
    judged = None
    if judge_scores is not None:
        lengths = {name: [r["response_tokens"] for r in outputs[name].responses] for name in judge_scores}
        judged = judge_stats.judge_findings(judge_scores, lengths, [row["category"] for row in prompts])
        for name, summary in judged["variants"].items():
            per_model[name]["judge"] = summary

    def response(name: str, index: int) -> dict[str, Any]:
        kept = {key: value for key, value in outputs[name].responses[index].items() if key != "prompt_tokens"}
        return kept if judge_scores is None else {**kept, "judge_score": judge_scores[name][index]}

    first = next(iter(outputs.values()))
    return {
        "meta": meta,
        "metrics": per_model,
        # Paired tests on the same items, the judge's included, Holm-adjusted across all of them
        # (evaluation/comparisons.py).
        "comparisons": comparisons.paired_comparisons(
            margins,
            passed,
            [
                *(judged["findings"] if judged else ()),
                *comparisons.targeted_findings(
                    passed,
                    [
                        row["category"]
                        for row, r in zip(prompts, first.responses, strict=True)
                        if r["passed"] is not None
                    ],
                    targeted,
                    judge_scores,
                    [row["category"] for row in prompts],
                ),
            ],
        ),
        # The judge's win rates and length-controlled win rates between variants (evaluation/judge_stats.py).
        **({"judge": {"pairs": judged["pairs"]}} if judged else {}),
        # Per-item outcomes: every number above can be recomputed from these and "prompts".
        "pairs": [
            {
                "category": pair["category"],
                "logp_margin": {name: margins[name][index] for name in margins},
                "implicit_reward_margin": {name: implicit[name][index] for name in implicit},
            }
            for index, pair in enumerate(pairs)
        ],
        # Each held-out instruction response's summed NLL and token count per variant (the perplexity's items).
        "instruction_examples": [
            {name: {"nll": o.nll[index][0], "tokens": o.nll[index][1]} for name, o in outputs.items() if o.nll}
            for index in range(max((len(o.nll or []) for o in outputs.values()), default=0))
        ],
        "prompts": [
            {
                "category": row["category"],
                "prompt": row["prompt"],
                "input": row["input"],
                "check": row["check"],
                "prompt_tokens": first.responses[index]["prompt_tokens"],
                "responses": {name: response(name, index) for name in outputs},
            }
            for index, row in enumerate(prompts)
        ],
    }


def side_by_side_text(results: dict[str, Any]) -> str:
    """Each prompt with the responses of every variant one under another, for reading in a terminal."""
    meta = results["meta"]
    variants, labels = meta["variants"], meta["labels"]
    width = 100
    lines = [
        "Side-by-side comparison: " + " / ".join(labels[name] for name in variants),
        f"Generated {meta['created']}; template {meta['template']}; "
        f"decoding {'sampling' if meta['generation']['do_sample'] else 'greedy'}, "
        f"max_new_tokens {meta['generation']['max_new_tokens']}.",
        "",
    ]
    total = len(results["prompts"])
    for number, row in enumerate(results["prompts"], start=1):
        check = row["check"]
        lines.append("=" * width)
        lines.append(f"[{number}/{total}] {row['category']}" + (f"   check: {json.dumps(check)}" if check else ""))
        lines.append("-" * width)
        lines += ["PROMPT:"] + ["  " + line for line in row["prompt"].splitlines()]
        if row.get("input"):
            lines += ["INPUT:"] + ["  " + line for line in row["input"].splitlines()]
        for name in variants:
            response = row["responses"][name]
            verdict = "" if response["passed"] is None else ("  PASS" if response["passed"] else "  FAIL")
            stop = "" if response["finished"] else ", cut at max_new_tokens"
            lines.append("")
            lines.append(f"{labels[name]} ({response['response_tokens']} tokens{stop}){verdict}:")
            body = response["text"].splitlines() or ["(empty)"]
            for line in body:
                wrapped = textwrap.wrap(line, width - 4, replace_whitespace=False, drop_whitespace=False) or [""]
                lines += ["  " + piece for piece in wrapped]
        lines.append("")
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], results_dir: str | Path) -> Path:
    """Write ``side_by_side_comparison.txt``, then ``evaluation_results.json`` (last: it marks the evaluation
    complete), each atomically; return the JSON's path."""
    folder = Path(results_dir)
    atomic_write_text(folder / SIDE_BY_SIDE_FILE, side_by_side_text(results))
    atomic_write_text(folder / RESULTS_FILE, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return folder / RESULTS_FILE


def read_results(results_dir: str | Path) -> dict[str, Any]:
    """``<results_dir>/evaluation_results.json``.

    Raises:
        ResultsError: the file is missing (run ``scripts/evaluate.py`` first) or is not JSON.
    """
    path = Path(results_dir) / RESULTS_FILE
    if not path.is_file():
        raise ResultsError(f"{path} not found: run scripts/evaluate.py first (it writes that file).")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path}: not valid JSON ({error}); rerun scripts/evaluate.py.") from None
