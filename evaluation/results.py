"""The results files: ``evaluation_results.json`` (every number, and every item behind it) and
``side_by_side_comparison.txt`` (every prompt with each model's response, for reading).

The JSON holds ``meta`` (what was evaluated, how, where; ``sources`` and ``builds``: how each variant was built,
its adapters merged into which dtype and what share of their update the merge kept, or stacked), ``metrics``
(per variant, with 95 % intervals), ``comparisons`` (paired tests between variants, the judge's among them),
``judge`` (with a judge only: its win rates between variants), all from :mod:`evaluation.findings`, ``pairs``,
``instruction_examples`` (each held-out response's summed NLL and tokens per variant) and ``prompts`` (per-item
outcomes, from which every number can be recomputed: a prompt's ``judge_score`` and ``response_tokens`` per
variant give the judge's numbers); with public benchmarks, ``benchmarks``
(:func:`evaluation.benchmark_stats.benchmark_results`: each benchmark's score per variant with its interval,
lm-eval's version and each task's protocol, the prompt sets' sources, the per-item outcomes and responses; their
tests are in ``comparisons``). It is written last and atomically: its presence marks a complete evaluation
(the pipeline checks it). :func:`categories_of` and :func:`common.trees.dig` read it back (the report does).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_text
from common.errors import ResultsError
from common.trees import dig
from evaluation.findings import Findings
from evaluation.scoring import VariantOutput

RESULTS_FILE = "evaluation_results.json"
SIDE_BY_SIDE_FILE = "side_by_side_comparison.txt"


def assemble(
    meta: dict[str, Any],
    prompts: list[dict],
    pairs: list[dict],
    outputs: dict[str, VariantOutput],
    findings: Findings,
    judge_scores: dict[str, list[float]] | None = None,
) -> dict[str, Any]:
    """The content of ``evaluation_results.json``: the statistics step's numbers, then every item behind them.

    Args:
        meta: what was evaluated and how (written as is).
        prompts: the prompt rows, in order; ``outputs[v].responses`` follow the same order.
        pairs: the held-out preference pairs, in the order of ``outputs[v].pair_logps``.
        outputs: per variant, in the order the report shows them.
        findings: :func:`evaluation.findings.study_findings` of these outputs.
        judge_scores: per variant, a judge's score of each response (``None``: no judge); stored per response
            as ``judge_score``.
    """

    def response(name: str, index: int) -> dict[str, Any]:
        kept = {key: value for key, value in outputs[name].responses[index].items() if key != "prompt_tokens"}
        return kept if judge_scores is None else {**kept, "judge_score": judge_scores[name][index]}

    first = next(iter(outputs.values()))
    return {
        "meta": meta,
        "metrics": findings.metrics,
        # Paired tests on the same items, the judge's included, Holm-adjusted across all of them.
        "comparisons": findings.comparisons,
        # The judge's win rates and length-controlled win rates between variants.
        **({"judge": {"pairs": findings.judge_pairs}} if findings.judge_pairs is not None else {}),
        # Per-item outcomes: every number above can be recomputed from these and "prompts".
        "pairs": [
            {
                "category": pair["category"],
                "logp_margin": {name: margins[index] for name, margins in findings.margins.items()},
                "implicit_reward_margin": {name: margins[index] for name, margins in findings.implicit_margins.items()},
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


def categories_of(results: dict, *path: str) -> list[str]:
    """Every category that appears under ``metrics[variant][path...]`` for any variant, sorted."""
    found: set[str] = set()
    for per_variant in results["metrics"].values():
        found.update(dig(per_variant, *path) or {})
    return sorted(found)
