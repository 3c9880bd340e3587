"""The evaluation, end to end: load -> generate -> score -> judge -> statistics -> write.

Every variant is asked the same prompts in the same template (the one SFT and DPO trained on), one variant
at a time (only one model is in memory at once), and measured on:

* held-out preference accuracy and mean margin: ``log p(chosen) - log p(rejected)`` under the model, and the
  DPO implicit reward ``beta * (log pi - log pi_sft)`` against the SFT model as reference;
* perplexity of the reference responses of held-out instruction data;
* on generated responses: refusal rate on harmful prompts, over-refusal on benign ones, response length,
  distinct-2, and the checked score per category (prompts that carry a check);
* with a ``judge``: a reward model's score of every response, its mean per variant and category, and win
  rates between variants (plain and length-controlled), tested in the same family as the findings above.

Each step is its own module; this one only orders them, in :func:`evaluate` as here:
:mod:`evaluation.variants` (load), :mod:`evaluation.generation` (generate), :mod:`evaluation.checkers` and
:mod:`evaluation.scoring` (score: each response's check, the held-out log-probs), :mod:`evaluation.judge`
(judge, once every variant has left memory), :mod:`evaluation.findings` (statistics: metrics, intervals,
paired tests, one Holm family) and :mod:`evaluation.results` (write). Each finished variant is kept
(:mod:`evaluation.partial`), so a rerun of an interrupted evaluation computes only the variants it had not done.
"""

from __future__ import annotations

import gc
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from common.hashing import content_hash
from common.precision import AUTO, PrecisionChoice, announce, detect_hardware, resolve_dtype, resolve_precision
from common.provenance import is_local
from common.trees import dig
from datamodules.templates import TemplateName
from datamodules.tokenizer import load_tokenizer
from evaluation import partial
from evaluation.benchmark_stats import benchmark_results
from evaluation.checkers import check_response, is_refusal
from evaluation.config import EvaluationConfig, EvaluationError
from evaluation.findings import REFERENCE_VARIANT, study_findings
from evaluation.generation import Generated, generate_responses
from evaluation.harness import check_tasks, run_harness
from evaluation.judge import JudgeSettings, judge_variants
from evaluation.prompt_sets import read_prompt_set
from evaluation.prompts import read_prompts
from evaluation.results import SIDE_BY_SIDE_FILE, assemble, write_results
from evaluation.scoring import (
    HeldOutData,
    VariantOutput,
    at_training_commit,
    preference_logps,
    read_instruction_examples,
    read_preference_pairs,
    response_nll,
)
from evaluation.variants import (
    VariantBuild,
    VariantLoadSettings,
    VariantSources,
    build_variant,
    label,
    plan_variant,
    read_export_info,
    resolve_sources,
)
from lightning_modules.loading import training_config
from lightning_modules.preference_losses import older_spelling

DEFAULT_BETA = 0.1
"""The implicit reward's beta when neither the config nor the DPO export's training config gives one."""


@dataclass
class Run:
    """What the config resolves to before any model is loaded."""

    variants: list[str]
    sources: VariantSources
    template: TemplateName
    beta: float
    precision: PrecisionChoice
    device: torch.device
    load: VariantLoadSettings
    preference_data: HeldOutData | None = None
    instruction_data: HeldOutData | None = None
    held_out_records: dict[str, dict | None] = field(default_factory=dict)
    """The results file's record of each held-out data set (:func:`evaluation.scoring.at_training_commit`)."""
    builds: dict[str, VariantBuild] = field(default_factory=dict)
    """How each variant was built (adapters merged or stacked, what a merge kept), filled as each one loads."""


@dataclass
class Inputs:
    """What every variant is asked and scored on, read once."""

    tokenizer: Any
    prompts: list[dict]
    """The prompt rows (:func:`evaluation.prompts.read_prompts`)."""
    pairs: list[dict]
    """The held-out preference pairs (empty: none)."""
    examples: list[dict]
    """The held-out instruction examples (empty: none)."""
    prompt_sets: dict[str, list[dict]] = field(default_factory=dict)
    """Each public prompt set's rows (``benchmarks.prompt_sets``), answered like the study's prompts."""
    prompt_set_records: dict[str, dict] = field(default_factory=dict)
    """What each prompt set was read from, at which commit (the results file's record)."""


def evaluate(config: EvaluationConfig) -> dict[str, Any]:
    """Evaluate the config's variants and write the results files.

    Returns:
        The results, as written to ``<results_dir>/evaluation_results.json``.

    Raises:
        UserError (EvaluationError, DataError, ModelLoadError, ...): a problem in the config, the data or the
            exports (:mod:`common.errors`); the message says what to fix.
    """
    started = time.perf_counter()
    run = resolve(config)
    data = read_inputs(config, run)
    # load -> generate -> score, one variant at a time: it leaves memory before the next one loads; each finished
    # variant is kept (evaluation.partial), so a rerun after an interruption takes it from there
    inputs = content_hash(data.prompts, data.pairs, data.examples, data.prompt_sets)
    outputs = {name: evaluate_or_resume(name, run, data, config, inputs) for name in run.variants}
    # judge: the reward model reads every response once all the variants have left memory
    # (AlpacaEval's responses are judged in the same load, after the study's prompts, and split off again)
    alpaca = data.prompt_sets.get("alpaca_eval", [])
    judged_prompts = data.prompts + alpaca
    responses = {name: output.responses + output.answered.get("alpaca_eval", []) for name, output in outputs.items()}
    judged = judge_step(config.judge, judged_prompts, responses, device=run.device, template=run.template)
    judge_scores = {name: s[: len(data.prompts)] for name, s in judged["scores"].items()} if judged else None
    alpaca_scores = {name: s[len(data.prompts) :] for name, s in judged["scores"].items()} if judged else None
    # statistics: every metric with its 95 % interval, then the paired findings in one Holm family
    benchmarks = benchmark_results(data.prompt_sets, data.prompt_set_records, outputs, alpaca_scores)
    found = study_findings(
        data.prompts,
        data.pairs,
        outputs,
        beta=run.beta,
        num_examples=len(data.examples),
        judge_scores=judge_scores,
        targeted=config.targeted_categories or (),
        extra=benchmarks.pop("findings", []),
    )
    # write: the results file last (its presence marks the evaluation complete)
    meta = results_meta(
        config, run, judged, num_prompts=len(data.prompts), num_pairs=len(data.pairs), num_examples=len(data.examples)
    )
    meta["seconds"] = round(time.perf_counter() - started, 1)
    results = assemble(meta, data.prompts, data.pairs, outputs, found, judge_scores)
    if config.benchmarks is not None:
        results["benchmarks"] = benchmarks
    path = write_results(results, config.results_dir)
    partial.clear(config.results_dir)  # complete: nothing left to resume
    print(f"[evaluate] wrote {path} and {path.parent / SIDE_BY_SIDE_FILE} ({meta['seconds']:.0f}s)")
    return results


def evaluate_or_resume(name: str, run: Run, data: Inputs, config: EvaluationConfig, inputs: str) -> VariantOutput:
    """Variant ``name``'s outputs: kept by an interrupted run of this same evaluation (``inputs``: the hash of the
    rows it reads), or computed now and kept."""
    settings = asdict(config) | {
        "template": run.template,
        "device": str(run.device),
        "precision": str(run.precision),
        "load": asdict(run.load),
    }
    key = partial.variant_key(name, run.sources, settings, inputs)
    kept = partial.load(config.results_dir, name, key)
    if kept is not None:
        output, run.builds[name] = kept
        where = partial.path_of(config.results_dir, name)
        print(f"[evaluate] {label(name)}: done before the interruption, taken from {where}", flush=True)
        return output
    output = evaluate_variant(name, run, data, config)
    partial.save(config.results_dir, name, key, output, run.builds[name])
    return output


def resolve(config: EvaluationConfig) -> Run:
    """Check the config against the exports and the hardware: variants, weights, template, beta, dtype."""
    variants = config.selected_variants()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.generation.seed)
    device = pick_device(config.device)
    # dtype auto: the compute dtype that precision auto picks for this device (one rule, common.precision).
    precision = resolve_precision(AUTO, detect_hardware(device.type))
    if config.load.dtype == AUTO:
        announce(precision, "evaluate")
    load = replace(config.load, dtype=resolve_dtype(config.load.dtype, precision, frozen=True))
    dpo = config.dpo_adapter if "sft_dpo" in variants else None
    methods = {name: path for name, path in config.method_exports().items() if name in variants}
    sources = resolve_sources(config.sft_adapter, dpo, config.base_model, methods)
    template = resolve_template(config.template, sources)
    beta = config.beta if config.beta is not None else trained_beta(sources.dpo)
    if config.judge is not None:
        check_judge_folder(config.judge)
    if config.benchmarks is not None and config.benchmarks.harness is not None:
        check_tasks(config.benchmarks.harness)  # a wrong task or filter fails here, not after the first variant
    # The held-out rows at the dataset commits the exports trained on (SFT: Alpaca; DPO: UltraFeedback).
    preference_data, preference_record = held_out_at_training_commit(
        config.preference_data, config.dpo_adapter, "DPO", "preference_data"
    )
    instruction_data, instruction_record = held_out_at_training_commit(
        config.instruction_data, sources.sft, "SFT", "instruction_data"
    )
    return Run(
        variants,
        sources,
        template,
        beta,
        precision,
        device,
        load,
        preference_data=preference_data,
        instruction_data=instruction_data,
        held_out_records={"preference_data": preference_record, "instruction_data": instruction_record},
    )


def pick_device(device: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_template(template: TemplateName | None, sources: VariantSources) -> TemplateName:
    """The template the exports were trained with; a different ``template`` is an error."""
    exports = (sources.sft, sources.dpo, *sources.methods.values())
    trained = {path: read_export_info(path).get("template") for path in exports if path is not None}
    known = {value for value in trained.values() if value}
    if len(known) > 1:
        raise EvaluationError(f"The SFT and DPO exports were trained with different templates: {trained}.")
    if template is None:
        return known.pop() if known else "alpaca"
    if known and template not in known:
        raise EvaluationError(
            f"template: {template!r}, but the exports were trained with {known.pop()!r}: evaluation must ask "
            "in the training template. Remove template from the config (it is read from export_info.json)."
        )
    return template


def trained_beta(dpo_export: str | None) -> float:
    """DPO's ``beta`` from the ``training_config.yaml`` saved beside the DPO export, else :data:`DEFAULT_BETA`."""
    beta = training_setting(dpo_export, ("model", "init_args", "beta"))
    return DEFAULT_BETA if beta is None else float(beta)


def training_setting(export: str | None, path: tuple[str, ...]) -> Any:
    """A value of the training config saved beside an export (``None``: no export, no config, no such key)."""
    return None if export is None else dig(training_config(export), *path)


def check_judge_folder(judge: JudgeSettings) -> None:
    """Fail before any variant is loaded when ``judge.model`` names a folder on this machine that holds no model.

    A Hub id has at most one ``/``; a name with more (``outputs/tiny/reward``), or an existing path, or one
    starting with ``.``, ``/`` or ``~``, is a folder here (:func:`common.provenance.is_local`).

    Raises:
        EvaluationError: no ``config.json`` (nor ``adapter_config.json``) in that folder; the message says
            how to make one, or how to evaluate without a judge.
    """
    folder = Path(judge.model).expanduser()
    if not (is_local(judge.model) or judge.model.count("/") > 1):
        return
    if (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file():
        return
    raise EvaluationError(
        f"judge.model: {judge.model}: not a model folder (no config.json). Train the reward model into it first "
        "(the tiny study's: `train.py fit --config configs/tiny/reward.yaml`, the pipeline's reward stage), point "
        "judge.model at a reward model, or evaluate without a judge: --judge null."
    )


def held_out_at_training_commit(
    data: HeldOutData | None, export: str | None, stage: str, name: str
) -> tuple[HeldOutData | None, dict | None]:
    """``data`` at the dataset commit the ``stage`` export's ``export_info.json`` recorded for the same Hub id,
    and its record for the results file (:func:`evaluation.scoring.at_training_commit`); ``(None, None)``
    without ``data``."""
    if data is None:
        return None, None
    recorded = (read_export_info(export).get("provenance") or {}).get("data") or [] if export else []
    return at_training_commit(data, recorded, f"{stage} export {export}", name)


def read_inputs(config: EvaluationConfig, run: Run) -> Inputs:
    """The tokenizer, the prompts and the held-out data; the targeted categories checked against the prompts."""
    tokenizer = load_tokenizer(run.sources.sft, trust_remote_code=run.load.trust_remote_code)
    prompts = read_prompts(config.prompts, config.on_bad_row)
    check_targeted_categories(config.targeted_categories, prompts)
    pairs = read_preference_pairs(run.preference_data, run.template) if run.preference_data is not None else []
    examples = read_instruction_examples(run.instruction_data, run.template) if run.instruction_data is not None else []
    prompt_sets, records = {}, {}
    for settings in config.benchmarks.prompt_sets if config.benchmarks is not None else ():
        prompt_sets[settings.name], records[settings.name] = read_prompt_set(settings)
    print(
        f"[evaluate] {len(run.variants)} variants x {len(prompts)} prompts, {len(pairs)} preference pairs, "
        f"{len(examples)} instruction examples; template {run.template}; device {run.device}",
        flush=True,
    )
    if config.benchmarks is not None:
        harness = config.benchmarks.harness
        print(
            f"[evaluate] benchmarks: {', '.join(f'{name} ({len(rows)} prompts)' for name, rows in prompt_sets.items())}"
            + (f"; lm-eval {', '.join(task.task for task in harness.tasks)}" if harness else ""),
            flush=True,
        )
    return Inputs(tokenizer, prompts, pairs, examples, prompt_sets, records)


def check_targeted_categories(targeted: list[str] | None, prompts: list[dict]) -> None:
    """Refuse a targeted category no prompt has (a typo would otherwise drop the study's primary test silently).

    Raises:
        EvaluationError: naming the unknown categories and the prompts' categories.
    """
    known = {row["category"] for row in prompts}
    unknown = sorted(set(targeted or ()) - known)
    if unknown:
        raise EvaluationError(
            f"targeted_categories: no prompt has the category {', '.join(unknown)}; the prompts' categories are "
            f"{', '.join(sorted(known))}."
        )


def evaluate_variant(name: str, run: Run, data: Inputs, config: EvaluationConfig) -> VariantOutput:
    """Load one variant, generate its responses, score them and the held-out data; free it before returning."""
    started = time.perf_counter()
    model, run.builds[name] = load_on_device(name, run.sources, run.load, run.device)  # load
    # generate, and score each response against its prompt's check
    responses = answer(model, data.tokenizer, data.prompts, config, run.template)
    # score: the held-out pairs and instruction responses
    scoring = {"template": run.template, "max_length": config.max_length, "batch_size": config.score_batch_size}
    pair_logps = (
        preference_logps(model, data.tokenizer, data.pairs, max_prompt_length=config.max_prompt_length, **scoring)
        if data.pairs
        else None
    )
    nll = response_nll(model, data.tokenizer, data.examples, **scoring) if data.examples else None
    # benchmarks: the public prompt sets through the same generation, then lm-eval's tasks on the same model
    answered = {
        key: answer(model, data.tokenizer, rows, config, run.template) for key, rows in data.prompt_sets.items()
    }
    harness = config.benchmarks.harness if config.benchmarks is not None else None
    harness = run_harness(model, data.tokenizer, harness, max_length=config.max_length) if harness else {}
    del model  # before the next variant loads: one model in memory at a time
    free_memory(run.device)
    output = VariantOutput(responses, pair_logps, nll, time.perf_counter() - started, answered, harness)
    print(f"[evaluate] {label(name)}: done in {output.seconds:.0f}s", flush=True)
    return output


def load_on_device(
    name: str, sources: VariantSources, load: VariantLoadSettings, device: torch.device
) -> tuple[PreTrainedModel, VariantBuild]:
    """One variant, on ``device`` (a 4-bit model is placed by its loader), and how it was built."""
    model, build = build_variant(name, sources, load)
    if not load.load_in_4bit:
        model.to(device)
    return model, build


def answer(
    model: PreTrainedModel, tokenizer: Any, rows: list[dict], config: EvaluationConfig, template: TemplateName
) -> list[dict[str, Any]]:
    """Each row's response, generated in the study's template and checked (:func:`checked`)."""
    generated = generate_responses(
        model,
        tokenizer,
        [row["prompt"] for row in rows],
        config.generation,
        template,
        inputs=[row["input"] for row in rows],
    )
    return checked(rows, generated)


def checked(prompts: list[dict], generated: list[Generated]) -> list[dict[str, Any]]:
    """Each generated response with its refusal flag and its check's outcome (``None``: the prompt has none)."""
    return [
        {
            "text": g.text,
            "response_tokens": g.response_tokens,
            "finished": g.finished,
            "refusal": is_refusal(g.text),
            "passed": check_response(row["check"], g.text) if row["check"] else None,
            "prompt_tokens": g.prompt_tokens,
        }
        for row, g in zip(prompts, generated, strict=True)
    ]


def free_memory(device: torch.device) -> None:
    """Return a released variant's memory, so the next one loads into it."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def judge_step(
    judge: JudgeSettings | None,
    prompts: list[dict],
    responses_by_variant: dict[str, list[dict]],
    *,
    device: torch.device,
    template: TemplateName,
) -> dict[str, Any] | None:
    """The judge's reward of every response, per variant in the order of ``prompts``; ``None`` without a judge.

    The judge is loaded once, after the variants are gone from memory, and freed before returning.

    Returns:
        :func:`evaluation.judge.judge_variants`' ``{"model": provenance, "template", "dtype", "scores":
        {variant: [reward per prompt]}, "truncated": {"scored", "prompt", "response"}}``.
    """
    if judge is None:
        return None
    judged = judge_variants(
        judge,
        device,
        [row["prompt"] for row in prompts],
        {name: [response["text"] for response in responses] for name, responses in responses_by_variant.items()},
        inputs=[row["input"] for row in prompts],
        study_template=template,
    )
    return judged


def results_meta(
    config: EvaluationConfig,
    run: Run,
    judged: dict[str, Any] | None,
    *,
    num_prompts: int,
    num_pairs: int,
    num_examples: int,
) -> dict:
    """The results file's ``meta``: what was evaluated, on what, and how (``seconds`` is added at the end).

    Args:
        judged: :func:`judge_step`'s result (``None``: no judge); ``meta["judge"]`` keeps all of it but the
            scores (they are stored per response).
    """
    builds = {name: run.builds.get(name) or plan_variant(name, run.sources, run.load) for name in run.variants}
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "variants": run.variants,
        "labels": {name: label(name) for name in run.variants},
        "sources": run.sources.weights_lines(builds),
        # How each variant was built: adapters merged (into which dtype, what share of the update was kept) or stacked.
        "builds": {name: asdict(build) for name, build in builds.items()},
        "template": run.template,
        "beta": run.beta,
        "targeted_categories": config.targeted_categories,
        "implicit_reward_reference": REFERENCE_VARIANT,
        # The seed of each training stage (seed_everything of its saved config): tells the runs of several seeds apart.
        "training_seeds": {
            "sft": training_setting(run.sources.sft, ("seed_everything",)),
            "dpo": training_setting(run.sources.dpo, ("seed_everything",)),
        },
        # Each trained variant's recipe (its loss list) and what its training run cost (export_info.json's cost).
        "training": {name: training_record(export) for name, export in trained_exports(run).items()},
        "prompt_files": config.prompt_files(),
        "num_prompts": num_prompts,
        "preference_data": run.held_out_records.get("preference_data"),
        "num_preference_pairs": num_pairs,
        "instruction_data": run.held_out_records.get("instruction_data"),
        "num_instruction_examples": num_examples,
        **({"judge": describe_judge(config.judge, judged)} if config.judge is not None and judged else {}),
        **({"benchmarks": asdict(config.benchmarks)} if config.benchmarks is not None else {}),
        "generation": asdict(config.generation),
        "load": asdict(run.load),
        "precision_rule": str(run.precision),
        "max_length": config.max_length,
        "max_prompt_length": config.max_prompt_length,
        "device": str(run.device),
        "host": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
    }


def trained_exports(run: Run) -> dict[str, str]:
    """The export each evaluated variant was last trained into: ``sft`` its SFT export, ``sft_dpo`` the DPO export,
    ``sft_<method>`` that method's (``base`` none)."""
    exports = {"sft": run.sources.sft, "sft_dpo": run.sources.dpo, **run.sources.methods}
    return {name: exports[name] for name in run.variants if exports.get(name) is not None}


def training_record(export: str) -> dict[str, Any]:
    """What trained an export and what it cost: ``{"stage", "beta", "losses", "cost"}``; ``losses`` is the loss
    list as configured (``loss_type`` / ``nll_weight`` in the older spelling), ``cost`` export_info.json's
    (``None`` for an export from before the record)."""
    info = read_export_info(export)
    model = dig(training_config(export), "model", "init_args") or {}
    losses = model.get("losses")
    if info.get("stage") == "KTOModule":
        weights = {key: model[key] for key in ("desirable_weight", "undesirable_weight") if key in model}
        losses = [{"name": "kto", **weights}]
    elif losses is None and "loss_type" in model:  # the older spelling of a one-loss list (+ RPO's NLL)
        losses = older_spelling(model["loss_type"], model.get("label_smoothing") or 0.0, model.get("nll_weight") or 0.0)
    return {"stage": info.get("stage"), "beta": model.get("beta"), "losses": losses, "cost": info.get("cost")}


def describe_judge(settings: JudgeSettings, judged: dict[str, Any]) -> dict:
    """``meta["judge"]``: the reward model as loaded and what ``max_length`` cut, beside the settings asked for.

    ``model`` is its provenance (Hub id + revision + commit, or local path + SHA-256: the same judge can be
    loaded again), ``dtype`` the weight dtype ``auto`` resolved to, ``truncated`` how many (prompt,
    response) pairs were scored and how many lost the start of their prompt or the end of their response.
    """
    return {
        "model": judged["model"],
        "template": judged["template"],
        "dtype": judged["dtype"],
        "truncated": judged["truncated"],
        "settings": asdict(settings),
    }
