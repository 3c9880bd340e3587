"""A reward-model judge of generated responses: any Hugging Face sequence classifier with one output.

The judge reads (prompt, response) pairs and returns one scalar reward each (Bradley-Terry reward models:
Ouyang et al. 2022, https://arxiv.org/abs/2203.02155). It is loaded like every other model of the study
(a Hub id resolved once to a commit by :mod:`common.provenance`, or a local folder), in the dtype the
precision rule picks (:mod:`common.precision`), and only after the variants are gone from memory:
:func:`open_judge` frees it on exit, and :func:`judge_variants` scores every variant in one visit.

Where the reward is read. Hugging Face's ``*ForSequenceClassification`` heads score every position and
keep the rightmost token that is not ``config.pad_token_id`` (with no pad id they refuse batches of more
than one row). Rows are therefore padded on the right with exactly that id, so a padded row is scored at
the same token as the row alone::

    row alone        [BOS p p r r EOS]             -> score at EOS
    padded batch     [[BOS p p r r EOS PAD PAD],   -> rightmost non-PAD: EOS, the same token
                      [BOS p p p r r r EOS]]
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from common.precision import AUTO, DTYPES, detect_hardware, resolve_dtype, resolve_precision
from common.provenance import resolve_revision, source_record
from datamodules.preference import truncate_prompt
from datamodules.templates import TemplateName, encode_prompt, encode_response, format_prompt
from lightning_modules.loading import ModelLoadError, check_model_source

log = logging.getLogger(__name__)

JudgeTemplate = Literal["own", "study"]
CLASSIFIER_SUFFIX = "ForSequenceClassification"


@dataclass
class JudgeSettings:
    """Which reward model judges the generated responses, and how it reads them.

    Attributes:
        model: Hub id or local folder of a Hugging Face sequence-classification reward model with one
            output (``num_labels: 1``), e.g. ``Skywork/Skywork-Reward-V2-Llama-3.1-8B``, or the export of
            this project's reward-model stage. Models that need ``trust_remote_code`` are not supported.
        revision: for a Hub id, the branch, tag or commit to load (``null``: the default branch), resolved
            once to a commit that is loaded and recorded; ignored for a local folder.
        template: how a (prompt, response) pair is shown to the judge. ``own``: as a two-turn chat (user,
            assistant) in the judge tokenizer's chat template, as public reward models were trained;
            ``study``: in the study's prompt template followed by the response and EOS, exactly as SFT and
            DPO tokenize it (for a reward model trained by this project).
        batch_size: (prompt, response) pairs per forward pass.
        max_length: the most tokens the judge reads per pair. A longer pair loses the start of its prompt
            (BOS kept), never its response, unless the response alone does not fit; both are counted.
        dtype: weight dtype (``float32``, ``bfloat16``, ``float16``), or ``auto``: the compute dtype that
            ``precision: auto`` picks on the judging device (``common.precision``). The score head always
            computes in float32, so rewards are not rounded to the bf16 grid (which would invent ties).
    """

    model: str
    revision: str | None = None
    template: JudgeTemplate = "own"
    batch_size: int = 8
    max_length: int = 4096
    dtype: str = AUTO

    def __post_init__(self) -> None:
        if self.template not in ("own", "study"):
            raise ValueError(f"judge.template must be 'own' or 'study', got {self.template!r}.")
        if self.batch_size < 1 or self.max_length < 2:
            raise ValueError(
                f"judge.batch_size must be >= 1 and judge.max_length >= 2, got {self.batch_size} and {self.max_length}."
            )
        if self.dtype != AUTO and self.dtype not in DTYPES:
            raise ValueError(f"judge.dtype: unknown value {self.dtype!r}; choose one of auto, {', '.join(DTYPES)}.")


@dataclass
class Judge:
    """A loaded reward model, ready to score (see :func:`load_judge`).

    Attributes:
        model: the sequence classifier, in eval mode on its device (``None`` once released).
        tokenizer: its tokenizer.
        settings: what was asked for.
        dtype: the weight dtype it was loaded in.
        pad_token_id: the id rows are padded with: ``config.pad_token_id`` (set by :func:`load_judge` when
            the checkpoint declares none).
        provenance: the model as recorded in results (Hub id + commit, or path + SHA-256).
        truncated: how many pairs were scored so far, and how many of them lost the start of their prompt
            or the end of their response to ``max_length``: ``{"scored", "prompt", "response"}``.
        pad_chosen: the checkpoint declared no pad id and ``pad_token_id`` was chosen here; no row may then
            end with it (its reward would be read one token early).
    """

    model: PreTrainedModel | None
    tokenizer: PreTrainedTokenizerBase
    settings: JudgeSettings
    dtype: str
    pad_token_id: int
    provenance: dict
    truncated: dict[str, int] = field(default_factory=lambda: {"scored": 0, "prompt": 0, "response": 0})
    pad_chosen: bool = False


def _error(settings: JudgeSettings, message: str) -> ModelLoadError:
    return ModelLoadError(f"judge.model: {settings.model}: {message}")


def _checked_config(settings: JudgeSettings, commit: str | None):
    """The model's config; fails before any weights are loaded when it names no sequence classifier."""
    try:
        config = AutoConfig.from_pretrained(settings.model, revision=commit)
    except (OSError, ValueError) as error:
        raise _error(settings, f"no model config could be read ({type(error).__name__}: {error})") from None
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and not any(name.endswith(CLASSIFIER_SUFFIX) for name in architectures):
        raise _error(
            settings,
            f"is a {', '.join(architectures)}, not a sequence classifier. judge.model needs a reward model saved as "
            f"*{CLASSIFIER_SUFFIX} with one output (num_labels: 1), e.g. Skywork/Skywork-Reward-V2-Llama-3.1-8B, "
            "or the reward-model stage's export.",
        )
    return config


def _pad_token_id(model: PreTrainedModel, tokenizer) -> tuple[int, bool]:
    """The id the classifier treats as padding, declaring one when the checkpoint has none.

    Without ``config.pad_token_id`` transformers scores the last position and refuses batches. The id
    declared then must never be a row's last token: the tokenizer's pad token, else BOS, else ``unk``
    (each only when it differs from EOS, which ends every ``study`` row).
    """
    config = model.config.get_text_config()
    if config.pad_token_id is not None:
        return int(config.pad_token_id), False
    candidates = (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id)
    spare = next((i for i in candidates if i is not None and i != tokenizer.eos_token_id), 0)
    config.pad_token_id = spare
    return spare, True


def _score_head_in_float32(model: PreTrainedModel) -> None:
    """Run the linear ``score`` head (decoder reward models) in float32 on float32 hidden states.

    In bf16 a reward of about 20 is rounded to a multiple of 0.125, so two different responses often get
    the same reward: a tie where there was a winner. The body stays in the loaded dtype.
    """
    head = getattr(model, "score", None)
    if isinstance(head, torch.nn.Linear) and head.weight.dtype != torch.float32:
        head.float()
        head.register_forward_pre_hook(lambda _module, args: tuple(a.float() for a in args))


def load_judge(settings: JudgeSettings, device: torch.device | str = "cpu") -> Judge:
    """Load the reward model and its tokenizer onto ``device``, in eval mode.

    Raises:
        ModelLoadError: a missing folder, an unreadable model, a model that is not a sequence classifier
            with one output, or ``template: own`` with a tokenizer that has no chat template; each message
            names ``judge.model``.
        RevisionError: a Hub revision that does not exist.
    """
    device = torch.device(device)
    try:
        check_model_source(settings.model)
    except ModelLoadError as error:
        raise ModelLoadError(f"judge.model: {error}") from None
    commit = resolve_revision(settings.model, settings.revision, "model")
    config = _checked_config(settings, commit)
    try:
        tokenizer = AutoTokenizer.from_pretrained(settings.model, revision=commit)
    except (OSError, ValueError) as error:
        raise _error(settings, f"no tokenizer could be loaded ({type(error).__name__}: {error})") from None
    if settings.template == "own" and not getattr(tokenizer, "chat_template", None):
        raise _error(
            settings,
            "judge.template: own needs the judge's chat template, and this tokenizer has none. Use "
            "judge.template: study (the study's prompt template) or a reward model that ships a chat template.",
        )
    dtype = resolve_dtype(settings.dtype, resolve_precision(AUTO, detect_hardware(device.type)), frozen=True)
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            settings.model, revision=commit, dtype=DTYPES[dtype], num_labels=1, output_loading_info=True
        )
    except RuntimeError as error:
        if "mismatch" not in str(error):
            raise
        raise _error(  # transformers found a head of another size than the one output asked for
            settings,
            f"its classifier has {config.num_labels} outputs, not one: a reward model gives one score per response.",
        ) from None
    except (OSError, ValueError) as error:
        reason = f"{type(error).__name__}: {error}"
        raise _error(settings, f"could not be loaded as a sequence classifier ({reason})") from None
    untrained = sorted(str(key) for key in (*info["missing_keys"], *info["mismatched_keys"]))
    if untrained:
        raise _error(
            settings,
            f"the checkpoint lacks the classifier's weights {', '.join(untrained[:3])}: it is not a trained reward "
            "model (a plain causal LM would get a random score head).",
        )
    _score_head_in_float32(model)
    pad_token_id, pad_chosen = _pad_token_id(model, tokenizer)
    model.to(device).eval()
    print(f"[judge] {settings.model} ({dtype}, template {settings.template}) on {device}", flush=True)
    return Judge(
        model=model,
        tokenizer=tokenizer,
        settings=settings,
        dtype=dtype,
        pad_token_id=pad_token_id,
        provenance=source_record(settings.model, settings.revision, commit, "model"),
        pad_chosen=pad_chosen,
    )


def release_judge(judge: Judge) -> None:
    """Drop the judge's weights and give their memory back (the GPU's cache too)."""
    device = next(judge.model.parameters()).device if judge.model is not None else None
    judge.model = None
    gc.collect()
    if device is not None and device.type == "cuda":
        torch.cuda.empty_cache()


@contextmanager
def open_judge(settings: JudgeSettings, device: torch.device | str = "cpu") -> Iterator[Judge]:
    """``with open_judge(settings, device) as judge:`` the judge is in memory inside the block only."""
    judge = load_judge(settings, device)
    try:
        yield judge
    finally:
        release_judge(judge)


def _without_leading_bos(tokenizer, text: str) -> str:
    """A rendered chat template may start with BOS as text; the tokenizer adds its own (BOS exactly once)."""
    bos = tokenizer.bos_token
    return text[len(bos) :] if bos and text.startswith(bos) else text


def _own_template_ids(tokenizer, prompt: str, context: str, response: str) -> tuple[list[int], list[int]]:
    """``(prompt_ids, response_ids)`` of the two-turn chat rendered by the judge's own template.

    The whole conversation is tokenized at once (as reward-model cards do); the prompt part is the longest
    token prefix it shares with the prompt rendered alone with the generation prompt.
    """
    # The user turn as format_prompt's chat template builds it (instruction, then the input after a blank line).
    user = [{"role": "user", "content": f"{prompt}\n\n{context}" if context.strip() else prompt}]
    conversation = [*user, {"role": "assistant", "content": response}]
    full = tokenizer.apply_chat_template(conversation, tokenize=False)
    alone = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    full_ids = tokenizer(_without_leading_bos(tokenizer, full))["input_ids"]
    alone_ids = tokenizer(_without_leading_bos(tokenizer, alone))["input_ids"]
    shared = 0
    for a, b in zip(full_ids, alone_ids, strict=False):  # the shorter one ends the shared prefix
        if a != b:
            break
        shared += 1
    return full_ids[:shared], full_ids[shared:]


def fit_to_length(
    prompt_ids: list[int], response_ids: list[int], max_length: int, bos_token_id: int | None
) -> tuple[list[int], str | None]:
    """``prompt_ids + response_ids`` in at most ``max_length`` tokens, and what was cut (``None``, ``prompt``
    or ``response``).

    The prompt loses its start and keeps its BOS (:func:`~datamodules.preference.truncate_prompt`, as in
    training): the end of a prompt holds the question. Only when the response alone does not fit beside
    the BOS does the response lose its end.
    """
    if len(prompt_ids) + len(response_ids) <= max_length:
        return prompt_ids + response_ids, None
    keeps_bos = bos_token_id is not None and prompt_ids[:1] == [bos_token_id]
    room = max_length - len(response_ids)
    if room >= int(keeps_bos):
        return truncate_prompt(prompt_ids, room, bos_token_id) + response_ids, "prompt"
    head = prompt_ids[:1] if keeps_bos else []
    return head + response_ids[: max_length - len(head)], "response"


def encode_pair(
    judge: Judge, prompt: str, response: str, context: str = "", study_template: TemplateName = "alpaca"
) -> tuple[list[int], str | None]:
    """Token ids of one (prompt, response) pair as the judge reads it, and what ``max_length`` cut from it."""
    tokenizer = judge.tokenizer
    if judge.settings.template == "own":
        prompt_ids, response_ids = _own_template_ids(tokenizer, prompt, context, response)
    else:  # the study's template, through the very functions SFT and DPO tokenize with
        text = format_prompt(prompt, context, template=study_template, tokenizer=tokenizer)
        prompt_ids = encode_prompt(tokenizer, text, study_template)
        response_ids = encode_response(tokenizer, response)
    return fit_to_length(prompt_ids, response_ids, judge.settings.max_length, tokenizer.bos_token_id)


def right_pad(rows: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, each ``(B, T_max)``, padded on the right::

    [[5, 6, 7], [5, 6]] -> input_ids [[5, 6, 7], [5, 6, PAD]], attention_mask [[1, 1, 1], [1, 1, 0]]
    """
    longest = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    return input_ids, attention_mask


@torch.inference_mode()
def score_responses(
    judge: Judge,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    inputs: Sequence[str] | None = None,
    study_template: TemplateName = "alpaca",
) -> list[float]:
    """The judge's reward for each (prompt, response) pair, in the order given.

    Pairs are batched by length (longest first, so running out of memory happens at once) and the rewards
    put back in order. Adds to ``judge.truncated``.

    Args:
        judge: a loaded judge (:func:`load_judge` / :func:`open_judge`).
        prompts: instruction texts, not yet formatted.
        responses: one generated response per prompt.
        inputs: optional context per prompt (Alpaca's ``input``; empty means none).
        study_template: the study's prompt template (``alpaca`` or ``chat``), used with ``template: study``.

    Returns:
        One float per pair.

    Raises:
        ValueError: lists of different lengths, a released judge, or (with a pad id chosen by
            :func:`load_judge`) a row ending with that id.
    """
    if judge.model is None:
        raise ValueError("This judge was released; load it again with load_judge or open_judge.")
    inputs = inputs if inputs is not None else [""] * len(prompts)
    if not len(prompts) == len(responses) == len(inputs):
        raise ValueError(f"{len(prompts)} prompts, {len(responses)} responses and {len(inputs)} inputs: one each.")
    encoded = [
        encode_pair(judge, prompt, response, context, study_template)
        for prompt, response, context in zip(prompts, responses, inputs, strict=True)
    ]
    rows = [ids for ids, _ in encoded]
    if judge.pad_chosen and any(row[-1] == judge.pad_token_id for row in rows):
        raise ValueError(
            f"judge.model: {judge.settings.model}: a pair ends with token {judge.pad_token_id}, the id chosen as "
            "padding (the checkpoint declares no pad token), so its reward would be read one token early. Save "
            "the reward model with config.pad_token_id set to a token that never ends a conversation."
        )
    for what in ("prompt", "response"):
        judge.truncated[what] += sum(cut == what for _, cut in encoded)
    judge.truncated["scored"] += len(rows)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    device = next(judge.model.parameters()).device
    rewards: list[float] = [0.0] * len(rows)
    for start in range(0, len(order), judge.settings.batch_size):
        batch = order[start : start + judge.settings.batch_size]
        input_ids, attention_mask = right_pad([rows[i] for i in batch], judge.pad_token_id)  # (B, T)
        logits = judge.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits  # (B, 1)
        for index, reward in zip(batch, logits[:, 0].float().tolist(), strict=True):
            rewards[index] = reward
    return rewards


def judge_variants(
    settings: JudgeSettings,
    device: torch.device | str,
    prompts: Sequence[str],
    responses: dict[str, Sequence[str]],
    *,
    inputs: Sequence[str] | None = None,
    study_template: TemplateName = "alpaca",
) -> dict:
    """Load the judge once, score every variant's responses to the same prompts, free it.

    Call it after the variants are gone from memory: only the judge is loaded here.

    Returns:
        ``{"model": provenance, "template": "own" | "study", "dtype": str, "scores": {variant: [float per
        prompt]}, "truncated": {"scored": int, "prompt": int, "response": int}}``.
    """
    with open_judge(settings, device) as judge:
        scores = {
            name: score_responses(judge, prompts, texts, inputs=inputs, study_template=study_template)
            for name, texts in responses.items()
        }
        truncated = dict(judge.truncated)
        if truncated["prompt"] or truncated["response"]:
            log.warning(
                "judge: %d of %d pairs lost the start of their prompt and %d the end of their response to "
                "judge.max_length=%d",
                truncated["prompt"],
                truncated["scored"],
                truncated["response"],
                settings.max_length,
            )
        return {
            "model": judge.provenance,
            "template": settings.template,
            "dtype": judge.dtype,
            "scores": scores,
            "truncated": truncated,
        }
