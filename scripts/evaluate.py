"""Evaluate the study's three models side by side: base, base + SFT adapter, SFT + DPO adapter.

Every variant is asked the same prompts in the same template (the one SFT and DPO trained on), one
variant at a time (only one model is in memory at once), and measured on:

* held-out preference accuracy and mean margin: ``log p(chosen) - log p(rejected)`` under the model,
  and the DPO implicit reward ``beta * (log pi - log pi_sft)`` against the SFT model as reference;
* perplexity of the reference responses of held-out instruction data;
* on generated responses: refusal rate on harmful prompts, over-refusal on benign ones, response
  length, distinct-2, and the checked score per category (prompts that carry a check).

Writes ``<results_dir>/evaluation_results.json`` and ``<results_dir>/side_by_side_comparison.txt``.

Usage::

    python scripts/evaluate.py --config configs/tiny/evaluate.yaml
    python scripts/evaluate.py --config configs/evaluate.yaml --generation.max_new_tokens 256
    python scripts/evaluate.py --config configs/tiny/evaluate.yaml --print_config
"""

from __future__ import annotations

import gc
import json
import platform
import sys
import textwrap
import time
from collections import defaultdict
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common.precision import AUTO, announce, detect_hardware, resolve_dtype, resolve_precision  # noqa: E402
from datamodules.templates import TemplateName  # noqa: E402
from evaluation import comparisons, metrics  # noqa: E402
from evaluation.checkers import check_response, is_refusal  # noqa: E402
from evaluation.files import atomic_write_text  # noqa: E402
from evaluation.generation import GenerationSettings, generate_responses  # noqa: E402
from evaluation.scoring import (  # noqa: E402
    HeldOutData,
    preference_logps,
    read_instruction_examples,
    read_preference_pairs,
    response_nll,
)
from evaluation.variants import (  # noqa: E402
    LABELS,
    VARIANTS,
    LoadSettings,
    VariantSources,
    load_variant,
    read_export_info,
    resolve_sources,
)
from lightning_modules.loading import load_tokenizer  # noqa: E402

RESULTS_FILE = "evaluation_results.json"
SIDE_BY_SIDE_FILE = "side_by_side_comparison.txt"
REFERENCE_VARIANT = "sft"
HARMFUL_CHECK = "refusal"
BENIGN_CHECK = "helpful"


def read_prompts(paths: str | list[str]) -> list[dict[str, Any]]:
    """Evaluation prompts from JSONL files, in order.

    A row is ``{category, prompt}`` (the project's prompt files) or ``{category, instruction, input}``
    (held-out Alpaca rows, asked with their input block exactly as SFT saw such rows), with an
    optional ``check``.

    Raises:
        ValueError: a missing file, an invalid line, or a row without a category or a prompt.
    """
    rows = []
    for path in [paths] if isinstance(paths, str) else paths:
        file = Path(path)
        if not file.is_file():
            raise ValueError(f"{path}: prompt file not found (expected JSONL rows with category, prompt, check).")
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: line {number} is not JSON ({error}).") from None
            prompt = row.get("prompt", row.get("instruction")) if isinstance(row, dict) else None
            if not isinstance(prompt, str) or not isinstance(row.get("category"), str):
                raise ValueError(f"{path}: line {number} needs a string 'category' and a 'prompt' (or 'instruction').")
            context = row.get("input") or ""
            rows.append({"category": row["category"], "prompt": prompt, "input": context, "check": row.get("check")})
    if not rows:
        raise ValueError(f"{paths}: no prompts.")
    return rows


def training_beta(dpo_export: str | None) -> float | None:
    """DPO's ``beta`` from the ``training_config.yaml`` saved beside the DPO export, if any."""
    if dpo_export is None:
        return None
    config = Path(dpo_export) / "training_config.yaml"
    if not config.is_file():
        return None
    saved = yaml.safe_load(config.read_text()) or {}
    beta = (saved.get("model") or {}).get("init_args", {}).get("beta")
    return float(beta) if beta is not None else None


def resolve_template(template: TemplateName | None, sources: VariantSources) -> TemplateName:
    """The template the exports were trained with; a different ``template`` is an error."""
    trained = {path: read_export_info(path).get("template") for path in (sources.sft, sources.dpo) if path is not None}
    known = {value for value in trained.values() if value}
    if len(known) > 1:
        raise ValueError(f"The SFT and DPO exports were trained with different templates: {trained}.")
    if template is None:
        return known.pop() if known else "alpaca"
    if known and template not in known:
        raise ValueError(
            f"template: {template!r}, but the exports were trained with {known.pop()!r}: evaluation must ask "
            "in the training template. Remove template from the config (it is read from export_info.json)."
        )
    return template


def pick_device(device: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def grouped(values: list[Any], categories: list[str | None]) -> dict[str, list[Any]]:
    """Values grouped by category, categories sorted; rows without a category are left out."""
    groups: dict[str, list[Any]] = defaultdict(list)
    for value, category in zip(values, categories, strict=True):
        if category is not None:
            groups[category].append(value)
    return dict(sorted(groups.items()))


def margin_summary(margins: list[float], categories: list[str | None]) -> dict[str, Any]:
    """Accuracy (margin > 0) and mean margin, overall and per category."""

    def summary(values: list[float]) -> dict[str, Any]:
        return {
            "n": len(values),
            "accuracy": metrics.preference_accuracy(values),
            "mean_margin": metrics.mean(values, "mean_margin"),
        }

    return {
        **summary(margins),
        "per_category": {category: summary(values) for category, values in grouped(margins, categories).items()},
    }


def generation_metrics(prompts: list[dict], responses: list[dict]) -> dict[str, Any]:
    """Refusal, over-refusal, length and distinct-2 of one variant's responses."""
    texts = [response["text"] for response in responses]
    kinds = [(prompt.get("check") or {}).get("type") for prompt in prompts]
    harmful = [text for text, kind in zip(texts, kinds, strict=True) if kind == HARMFUL_CHECK]
    benign = [text for text, kind in zip(texts, kinds, strict=True) if kind == BENIGN_CHECK]
    return {
        "refusal_rate": metrics.refusal_rate(harmful) if harmful else None,
        "over_refusal_rate": metrics.refusal_rate(benign) if benign else None,
        "harmful_prompts": len(harmful),
        "benign_prompts": len(benign),
        "mean_response_tokens": metrics.mean([r["response_tokens"] for r in responses], "mean_response_tokens"),
        "mean_response_words": metrics.mean_length(texts),
        "distinct_2": metrics.distinct_n(texts, 2),
        "finished_rate": metrics.mean([float(r["finished"]) for r in responses], "finished_rate"),
    }


def checked_score(prompts: list[dict], responses: list[dict]) -> dict[str, Any] | None:
    """Pass rate of the prompts' checks, overall and per category (``None`` when no prompt has a check)."""
    checked = [(p["category"], r["passed"]) for p, r in zip(prompts, responses, strict=True) if r["passed"] is not None]
    if not checked:
        return None
    by_category = grouped([passed for _, passed in checked], [category for category, _ in checked])
    return {
        "overall": metrics.pass_rate([passed for _, passed in checked]),
        "n": len(checked),
        "per_category": {category: metrics.pass_rate(values) for category, values in by_category.items()},
    }


def side_by_side_text(results: dict[str, Any]) -> str:
    """Each prompt with the responses of every variant one under another, for reading in a terminal."""
    variants = results["meta"]["variants"]
    width = 100
    lines = [
        "Side-by-side comparison: " + " / ".join(LABELS[name] for name in variants),
        f"Generated {results['meta']['created']}; template {results['meta']['template']}; "
        f"decoding {'sampling' if results['meta']['generation']['do_sample'] else 'greedy'}, "
        f"max_new_tokens {results['meta']['generation']['max_new_tokens']}.",
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
            lines.append(f"{LABELS[name]} ({response['response_tokens']} tokens{stop}){verdict}:")
            body = response["text"].splitlines() or ["(empty)"]
            for line in body:
                wrapped = textwrap.wrap(line, width - 4, replace_whitespace=False, drop_whitespace=False) or [""]
                lines += ["  " + piece for piece in wrapped]
        lines.append("")
    return "\n".join(lines) + "\n"


def evaluate(
    sft_adapter: str = "outputs/tiny/sft",
    dpo_adapter: str | None = "outputs/tiny/dpo",
    base_model: str | None = None,
    variants: list[str] | None = None,
    template: TemplateName | None = None,
    prompts: str | list[str] = "data/tiny/eval_prompts.jsonl",
    preference_data: HeldOutData | None = None,
    instruction_data: HeldOutData | None = None,
    beta: float | None = None,
    generation: GenerationSettings | None = None,
    load: LoadSettings | None = None,
    score_batch_size: int = 8,
    max_length: int = 256,
    max_prompt_length: int = 128,
    device: str = "auto",
    threads: int | None = None,
    results_dir: str = "results",
) -> dict[str, Any]:
    """Evaluate base, SFT and SFT+DPO and write the results files.

    Args:
        sft_adapter: the SFT stage's export folder (a LoRA adapter naming its base, or a full model).
        dpo_adapter: the DPO stage's export folder (an adapter on base + SFT merged); ``null`` if none.
        base_model: the base model; ``null`` reads it from the SFT adapter's ``adapter_config.json``.
        variants: which of ``base``, ``sft``, ``sft_dpo`` to evaluate (``null``: all three); the outputs
            keep that order.
        template: prompt template; ``null`` takes the one recorded in the exports' ``export_info.json``.
        prompts: JSONL file(s) of ``{category, prompt, check}`` (or ``{category, instruction, input,
            check}``) rows to generate responses for.
        preference_data: held-out preference pairs (UltraFeedback or flat rows); ``null`` skips the
            preference metrics.
        instruction_data: held-out instruction rows whose reference responses give the perplexity;
            ``null`` skips it.
        beta: DPO beta of the implicit reward; ``null`` reads it from the DPO export's training config.
        generation: decoding settings (greedy by default).
        load: dtype, attention and adapter-merging settings.
        score_batch_size: rows (pairs, for preferences) per forward pass when scoring log-probs.
        max_length: tokens per scored row (prompt + response), as in training.
        max_prompt_length: tokens kept of a preference prompt, as in DPO training.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
        threads: torch CPU threads (``null``: torch's default).
        results_dir: folder of ``evaluation_results.json`` and ``side_by_side_comparison.txt``.

    Returns:
        The results, as written to ``evaluation_results.json``.
    """
    started = time.perf_counter()
    variants = list(VARIANTS) if variants is None else variants
    unknown = [name for name in variants if name not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"variants must be a non-empty list from {', '.join(VARIANTS)}; got {variants}.")
    variants = [name for name in VARIANTS if name in variants]
    generation = generation or GenerationSettings()
    load = load or LoadSettings()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(generation.seed)
    target = pick_device(device)
    # dtype auto: the compute dtype that precision auto picks for this device (one rule, common.precision).
    precision = resolve_precision(AUTO, detect_hardware(target.type))
    if load.dtype == AUTO:
        announce(precision, "evaluate")
    load = replace(load, dtype=resolve_dtype(load.dtype, precision, frozen=True))

    sources = resolve_sources(sft_adapter, dpo_adapter if "sft_dpo" in variants else None, base_model)
    template = resolve_template(template, sources)
    tokenizer = load_tokenizer(sources.sft, trust_remote_code=load.trust_remote_code)
    prompt_rows = read_prompts(prompts)
    pairs = read_preference_pairs(preference_data) if preference_data is not None else []
    examples = read_instruction_examples(instruction_data) if instruction_data is not None else []
    if beta is None:
        trained_beta = training_beta(sources.dpo)
        beta = 0.1 if trained_beta is None else trained_beta
    print(
        f"[evaluate] {len(variants)} variants x {len(prompt_rows)} prompts, {len(pairs)} preference pairs, "
        f"{len(examples)} instruction examples; template {template}; device {target}",
        flush=True,
    )

    responses: dict[str, list[dict]] = {}
    pair_logps: dict[str, tuple[list[float], list[float]]] = {}
    nll: dict[str, tuple[float, int]] = {}
    seconds: dict[str, float] = {}
    for name in variants:
        variant_start = time.perf_counter()
        model = _load_on(name, sources, load, target)
        generated = generate_responses(
            model,
            tokenizer,
            [row["prompt"] for row in prompt_rows],
            generation,
            template,
            inputs=[row["input"] for row in prompt_rows],
        )
        responses[name] = [
            {
                "text": g.text,
                "response_tokens": g.response_tokens,
                "finished": g.finished,
                "refusal": is_refusal(g.text),
                "passed": check_response(row["check"], g.text) if row["check"] else None,
                "prompt_tokens": g.prompt_tokens,
            }
            for row, g in zip(prompt_rows, generated, strict=True)
        ]
        scoring = {"template": template, "max_length": max_length, "batch_size": score_batch_size}
        if pairs:
            pair_logps[name] = preference_logps(model, tokenizer, pairs, max_prompt_length=max_prompt_length, **scoring)
        if examples:
            nll[name] = response_nll(model, tokenizer, examples, **scoring)
        del model
        gc.collect()
        if target.type == "cuda":
            torch.cuda.empty_cache()
        seconds[name] = time.perf_counter() - variant_start
        print(f"[evaluate] {LABELS[name]}: done in {seconds[name]:.0f}s", flush=True)

    pair_categories = [pair["category"] for pair in pairs]
    pair_margins = {name: metrics.logp_margins(*pair_logps[name]) for name in pair_logps}
    passed = {name: [r["passed"] for r in responses[name] if r["passed"] is not None] for name in variants}
    kinds = [(row.get("check") or {}).get("type") for row in prompt_rows]
    per_model: dict[str, dict[str, Any]] = {}
    for name in variants:
        result: dict[str, Any] = {"seconds": round(seconds[name], 1)}
        if name in pair_logps:
            chosen, rejected = pair_logps[name]
            result["preference"] = margin_summary(metrics.logp_margins(chosen, rejected), pair_categories)
            if REFERENCE_VARIANT in pair_logps and name != REFERENCE_VARIANT:
                reference_chosen, reference_rejected = pair_logps[REFERENCE_VARIANT]
                margins = metrics.implicit_reward_margins(chosen, rejected, reference_chosen, reference_rejected, beta)
                result["implicit_reward"] = {
                    "reference": REFERENCE_VARIANT,
                    "beta": beta,
                    **margin_summary(margins, pair_categories),
                }
            else:
                result["implicit_reward"] = None
        if name in nll:
            total_nll, total_tokens = nll[name]
            result["perplexity"] = {
                "value": metrics.perplexity(total_nll, total_tokens),
                "tokens": total_tokens,
                "examples": len(examples),
            }
        result["generation"] = generation_metrics(prompt_rows, responses[name])
        result["checked_score"] = checked_score(prompt_rows, responses[name])
        refusals = {
            metric: [r["refusal"] for r, kind in zip(responses[name], kinds, strict=True) if kind == check]
            for metric, check in (("refusal_rate", HARMFUL_CHECK), ("over_refusal_rate", BENIGN_CHECK))
        }
        result["ci95"] = comparisons.variant_intervals(pair_margins.get(name, []), passed[name], refusals)
        per_model[name] = result
    implicit = {
        name: metrics.implicit_reward_margins(*pair_logps[name], *pair_logps[REFERENCE_VARIANT], beta)
        for name in pair_logps
        if REFERENCE_VARIANT in pair_logps and name != REFERENCE_VARIANT
    }

    results = {
        "meta": {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "variants": variants,
            "labels": {name: LABELS[name] for name in variants},
            "sources": {name: text for name, text in sources.describe().items() if name in variants},
            "template": template,
            "beta": beta,
            "implicit_reward_reference": REFERENCE_VARIANT,
            "prompt_files": [prompts] if isinstance(prompts, str) else list(prompts),
            "num_prompts": len(prompt_rows),
            "preference_data": asdict(preference_data) if preference_data is not None else None,
            "num_preference_pairs": len(pairs),
            "instruction_data": asdict(instruction_data) if instruction_data is not None else None,
            "num_instruction_examples": len(examples),
            "generation": asdict(generation),
            "load": asdict(load),
            "precision_rule": str(precision),
            "max_length": max_length,
            "max_prompt_length": max_prompt_length,
            "device": str(target),
            "host": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
            "seconds": round(time.perf_counter() - started, 1),
        },
        "metrics": per_model,
        # Paired tests on the same items, Holm-adjusted across all of them (evaluation/comparisons.py).
        "comparisons": comparisons.paired_comparisons(pair_margins, passed),
        # Per-item outcomes: every number above can be recomputed from these and "prompts".
        "pairs": [
            {
                "category": pair["category"],
                "logp_margin": {name: pair_margins[name][index] for name in pair_margins},
                "implicit_reward_margin": {name: implicit[name][index] for name in implicit},
            }
            for index, pair in enumerate(pairs)
        ],
        "prompts": [
            {
                "category": row["category"],
                "prompt": row["prompt"],
                "input": row["input"],
                "check": row["check"],
                "prompt_tokens": responses[variants[0]][index]["prompt_tokens"],
                "responses": {
                    name: {key: value for key, value in responses[name][index].items() if key != "prompt_tokens"}
                    for name in variants
                },
            }
            for index, row in enumerate(prompt_rows)
        ],
    }
    out = Path(results_dir)
    atomic_write_text(out / SIDE_BY_SIDE_FILE, side_by_side_text(results))
    # The JSON last: its presence marks the evaluation complete (the pipeline checks it).
    atomic_write_text(out / RESULTS_FILE, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"[evaluate] wrote {out / RESULTS_FILE} and {out / SIDE_BY_SIDE_FILE} ({results['meta']['seconds']:.0f}s)")
    return results


def _load_on(name: str, sources: VariantSources, load: LoadSettings, device: torch.device):
    model = load_variant(name, sources, load)
    if not load.load_in_4bit:
        model.to(device)
    return model


def main(argv: list[str] | None = None) -> None:
    from jsonargparse import CLI

    CLI(evaluate, args=argv, as_positional=False)


if __name__ == "__main__":
    main()
