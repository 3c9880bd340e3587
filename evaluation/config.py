"""The evaluation's settings: one dataclass per YAML section, each field documented.

``configs/*/evaluate.yaml`` mirrors :class:`EvaluationConfig` key for key; ``scripts/evaluate.py
--print_config`` prints it with these docstrings as the manual. The sections defined beside what they
configure: :class:`evaluation.variants.VariantLoadSettings` (model loading), :class:`evaluation.scoring.HeldOutData`
(held-out rows), :class:`evaluation.judge.JudgeSettings` (the reward-model judge).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from common.errors import EvaluationError
from datamodules.sources import BadRowPolicy
from datamodules.templates import TemplateName
from evaluation.harness import HarnessSettings
from evaluation.judge import JudgeSettings
from evaluation.prompt_sets import PromptSetSettings
from evaluation.scoring import HeldOutData
from evaluation.variants import VARIANTS, VariantLoadSettings, method_variant


@dataclass
class GenerationSettings:
    """How responses are generated.

    Attributes:
        max_new_tokens: the most tokens generated per response.
        batch_size: prompts per ``generate`` call.
        do_sample: sample instead of greedy decoding (greedy by default: reproducible).
        temperature: sampling temperature (``do_sample`` only).
        top_p: nucleus sampling mass (``do_sample`` only).
        seed: torch seed set before sampling, so sampled runs repeat too.
    """

    max_new_tokens: int = 128
    batch_size: int = 16
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise EvaluationError(
                f"generation.max_new_tokens and generation.batch_size must be >= 1, "
                f"got {self.max_new_tokens} and {self.batch_size}."
            )
        if self.do_sample and (self.temperature <= 0 or not 0 < self.top_p <= 1):
            raise EvaluationError(
                f"Sampling needs temperature > 0 and 0 < top_p <= 1, got {self.temperature} and {self.top_p}."
            )


@dataclass
class BenchmarkSettings:
    """The public benchmarks, run on every variant beside the study's own prompts.

    Attributes:
        harness: lm-evaluation-harness tasks (IFEval, GSM8K, TruthfulQA MC2, MMLU, HumanEval...), scored by
            lm-eval on the loaded variant (:mod:`evaluation.harness`); ``null``: none.
        prompt_sets: public prompt sets answered by the study's own generation (XSTest, AlpacaEval;
            :mod:`evaluation.prompt_sets`); AlpacaEval's responses are scored by the ``judge``.
    """

    harness: HarnessSettings | None = None
    prompt_sets: list[PromptSetSettings] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.harness, dict):
            self.harness = _build(HarnessSettings, self.harness)
        self.prompt_sets = [
            _build(PromptSetSettings, entry) if isinstance(entry, dict) else entry for entry in self.prompt_sets or []
        ]
        names = [entry.name for entry in self.prompt_sets]
        if len(set(names)) != len(names):
            raise EvaluationError(f"benchmarks.prompt_sets: a set is listed twice: {names}.")


@dataclass
class EvaluationConfig:
    """Evaluate base, SFT and SFT+DPO and write the results files.

    Attributes:
        sft_adapter: the SFT stage's export folder (a LoRA adapter naming its base, or a full model).
        dpo_adapter: the DPO stage's export folder (an adapter on base + SFT); ``null`` if none.
        base_model: the base model; ``null`` reads it from the SFT adapter's ``adapter_config.json``.
        methods: the methods study: more preference methods trained from the same SFT export, by name, each
            with its export folder (``{ipo: outputs/tiny/methods/ipo, simpo: ...}``); each is the variant
            ``sft_<name>``, compared with SFT and with SFT+DPO, and always evaluated. ``null``: none.
        variants: which of ``base``, ``sft``, ``sft_dpo`` to evaluate (``null``: all), besides the methods';
            the outputs keep that order.
        template: prompt template; ``null`` takes the one recorded in the exports' ``export_info.json``.
        prompts: JSONL file(s) of ``{category, prompt, check}`` (or ``{category, instruction, input,
            check}``) rows to generate responses for.
        on_bad_row: a prompt row that cannot be used: ``error`` stops with its file, row and field;
            ``skip`` leaves it out and counts it in one summary.
        preference_data: held-out preference pairs (UltraFeedback or flat rows); ``null`` skips the
            preference metrics.
        instruction_data: held-out instruction rows whose reference responses give the perplexity;
            ``null`` skips it.
        judge: a reward model that scores every generated response once the variants are done (``null``:
            no judge).
        benchmarks: public benchmarks run on every variant (lm-eval tasks and prompt sets; ``null``: none).
        targeted_categories: the prompt categories the preference pairs are meant to improve; SFT+DPO vs SFT
            on just these prompts (checked score and judge win rate, pooled) joins the tested findings, the
            study's primary question. ``null``: no such test.
        beta: DPO beta of the implicit reward; ``null`` reads it from the DPO export's training config.
        generation: decoding settings (greedy by default).
        load: dtype, attention and adapter-merging settings.
        score_batch_size: rows (pairs, for preferences) per forward pass when scoring log-probs.
        max_length: tokens per scored row (prompt + response), as in training.
        max_prompt_length: tokens kept of a preference prompt, as in DPO training.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
        threads: torch CPU threads (``null``: torch's default).
        results_dir: folder of ``evaluation_results.json`` and ``side_by_side_comparison.txt``.
    """

    sft_adapter: str = "outputs/tiny/sft"
    dpo_adapter: str | None = "outputs/tiny/dpo"
    base_model: str | None = None
    methods: dict[str, str] | None = None
    variants: list[str] | None = None
    template: TemplateName | None = None
    prompts: str | list[str] = "data/tiny/eval_prompts.jsonl"
    on_bad_row: BadRowPolicy = "error"
    preference_data: HeldOutData | None = None
    instruction_data: HeldOutData | None = None
    judge: JudgeSettings | None = None
    benchmarks: BenchmarkSettings | None = None
    targeted_categories: list[str] | None = None
    beta: float | None = None
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    load: VariantLoadSettings = field(default_factory=VariantLoadSettings)
    score_batch_size: int = 8
    max_length: int = 256
    max_prompt_length: int = 128
    device: str = "auto"
    threads: int | None = None
    results_dir: str = "results"

    def selected_variants(self) -> list[str]:
        """The variants to evaluate, in the study's order (base, SFT, SFT+DPO).

        Raises:
            EvaluationError: an unknown name, or an empty list.
        """
        methods = list(self.method_exports())
        known = [*VARIANTS, *methods]
        chosen = known if self.variants is None else [*self.variants, *methods]  # a listed method is evaluated
        unknown = [name for name in chosen if name not in known]
        if unknown or not chosen:
            raise EvaluationError(f"variants must be a non-empty list from {', '.join(known)}; got {chosen}.")
        return [name for name in known if name in chosen]

    def method_exports(self) -> dict[str, str]:
        """The methods study's variants and their exports: ``{"sft_ipo": "outputs/tiny/methods/ipo", ...}``
        (``base_<name>`` for a method its export says was trained from the base model).

        Raises:
            EvaluationError: ``dpo`` among the methods (it is ``dpo_adapter``), or a name that is not a word.
        """
        methods = self.methods or {}
        for name in methods:
            if name == "dpo":
                raise EvaluationError("methods: dpo is the study's own DPO export: set it as dpo_adapter instead.")
            if not str(name).isidentifier():
                raise EvaluationError(f"methods: {name!r} is not a method name (letters, digits and _).")
        return {method_variant(name, path): str(path) for name, path in methods.items()}

    def prompt_files(self) -> list[str]:
        """``prompts`` as a list."""
        return [self.prompts] if isinstance(self.prompts, str) else list(self.prompts)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EvaluationConfig:
        """The config from parsed YAML / CLI values: nested sections become their dataclasses."""
        return _build(cls, values)


def _build(cls: type, values: dict[str, Any]) -> Any:
    """``cls(**values)``, with each dict value whose field is typed as a dataclass built as that dataclass."""
    hints = typing.get_type_hints(cls)
    names = [item.name for item in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise EvaluationError(f"{cls.__name__}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(names)}.")
    built = {}
    for item in dataclasses.fields(cls):
        if item.name not in values:
            continue
        value = values[item.name]
        nested = [t for t in _members(hints[item.name]) if dataclasses.is_dataclass(t)]
        built[item.name] = _build(nested[0], value) if nested and isinstance(value, dict) else value
    try:
        return cls(**built)
    except EvaluationError:
        raise
    except (TypeError, ValueError) as error:  # a section's own check (VariantLoadSettings, JudgeSettings...)
        raise EvaluationError(str(error)) from None


def _members(hint: Any) -> tuple[Any, ...]:
    """The types of a union (``X | None``), or the type itself."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)
