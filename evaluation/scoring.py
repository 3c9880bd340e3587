"""The score step: log-likelihoods of held-out data (preference pairs, instruction responses) under a variant.

The token ids come from the trainers' own functions (:func:`datamodules.preference.tokenize_preference`,
:func:`datamodules.instruction.tokenize_instruction`) and collators, and the log-probs from the
trainers' loss functions, so a held-out pair is scored exactly as DPO scored its training pairs.
:class:`VariantOutput` is what one variant leaves behind once scored (the statistics step reads it).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from common.provenance import is_local, resolve_revision, source_record
from datamodules.collate import PreferenceCollator, SFTCollator
from datamodules.instruction import parse_instruction_row, template_check, tokenize_instruction
from datamodules.preference import parse_preference_row, tokenize_preference
from datamodules.sources import PreparationReport, collect
from datamodules.templates import TemplateName
from lightning_modules.losses import sequence_logps


@dataclass
class HeldOutData:
    """Where held-out rows come from, and which of them to use.

    The rows are read (``files``: local files or a Hub dataset id, ``split``), optionally shuffled
    with ``shuffle_seed``, then ``[skip : skip + num_examples]`` is kept. Pointing ``skip`` past the
    rows a training stage used (the same seed and its ``num_examples``) gives rows it never saw.

    Attributes:
        files: local ``.json`` / ``.jsonl`` / ``.parquet`` / ``.csv`` files or a Hub dataset id.
        split: split of a Hub dataset.
        shuffle_seed: shuffle the rows with ``random.Random(shuffle_seed)`` first (``None``: file order).
        skip: rows skipped (after the shuffle).
        num_examples: rows kept (``None``: all the rest).
        revision: for a Hub dataset, the branch, tag or commit to read (``None``: the commit the training
            export recorded for the same dataset id, see :func:`at_training_commit`; else the default branch),
            resolved once to a commit (see :mod:`common.provenance`).
    """

    files: str | list[str]
    split: str | None = None
    shuffle_seed: int | None = None
    skip: int = 0
    num_examples: int | None = None
    revision: str | None = None

    def sources(self) -> list[str]:
        """``files`` as a list."""
        return [self.files] if isinstance(self.files, str) else list(self.files)

    def read(self, parse: Callable[[dict], dict], name: str, check: Callable[[dict], None] | None = None) -> list[dict]:
        """Parsed rows; bad rows (e.g. identical chosen and rejected, or a row ``check`` refuses: a multi-turn chat
        the template cannot hold) are skipped and counted in one summary."""
        sources = self.sources()
        report = PreparationReport(name, "skip")
        commits = {source: resolve_revision(source, self.revision, "dataset") for source in sources}
        rows = collect(sources, parse, report, self.split, commits, check)
        report.kept = len(rows)
        report.log()
        if self.shuffle_seed is not None:
            random.Random(self.shuffle_seed).shuffle(rows)
        end = None if self.num_examples is None else self.skip + self.num_examples
        rows = rows[self.skip : end]
        if not rows:
            raise ValueError(f"{name}: no rows left in {sources} after skip={self.skip}; lower skip.")
        return rows


def is_commit(revision: object) -> bool:
    """A full commit hash (offline, a resolved "commit" is the requested revision, a branch or tag perhaps)."""
    return isinstance(revision, str) and re.fullmatch(r"[0-9a-f]{40}", revision) is not None


def recorded_revision(record: dict) -> str | None:
    """What a :func:`common.provenance.source_record` record of a Hub dataset pins: its commit, else (resolved
    offline) a revision other than the default branch; ``None`` when it pins nothing."""
    commit, revision = record.get("commit"), record.get("revision")
    if is_commit(commit):
        return commit
    return revision if revision not in (None, "main") else None


def at_training_commit(
    data: HeldOutData, recorded: list[dict], origin: str, name: str
) -> tuple[HeldOutData, dict[str, Any]]:
    """``data`` at the dataset commit a training export recorded, resolved once; and its record for the results.

    "Alpaca rows SFT never saw" (the same seeded shuffle as SFT, past the rows SFT used) holds only for the rows
    SFT shuffled: the same commit of the dataset. So, for a Hub dataset the export recorded (``recorded``: its
    ``export_info.json`` ``provenance["data"]``), ``revision: null`` reads the recorded commit, and an explicit
    ``revision`` that differs from it is kept, with one warning line. Local files, and Hub ids the export does
    not record, read as configured.

    Args:
        origin: the export, as the warning and the record name it (``SFT export outputs/study/sft``).
        name: the config key (``instruction_data``), for the warning.

    Returns:
        ``(data, record)``: ``data`` with ``revision`` the commit to read (one Hub dataset, online), and the
        results file's record: the settings, ``revision_from`` (``origin``, ``config`` or ``None``: the
        default branch) and ``read`` (:func:`common.provenance.source_record` of each source, its commit included).
    """
    sources = data.sources()
    hub_ids = {source for source in sources if not is_local(source, "dataset")}
    pins = {recorded_revision(record) for record in recorded if record.get("hub_id") in hub_ids} - {None}
    pin = pins.pop() if len(pins) == 1 else None
    revision, revision_from = data.revision, "config" if data.revision is not None else None
    if pin is not None and revision is None:
        revision, revision_from = pin, origin
    elif pin is not None and revision != pin:
        print(
            f"[evaluate] warning: {name}.revision {revision!r} is not the commit {pin} the {origin} recorded for "
            f"{', '.join(sorted(hub_ids))}: rows it holds out may be rows training used; remove {name}.revision to "
            "read the recorded commit.",
            flush=True,
        )
    commits = {source: resolve_revision(source, revision, "dataset") for source in sources}
    resolved = {commits[source] for source in hub_ids} - {None}
    pinned = replace(data, revision=resolved.pop() if len(resolved) == 1 else revision)
    record = {
        **asdict(pinned),
        "revision_from": revision_from,
        "read": [
            source_record(source, revision, commits[source] if is_commit(commits[source]) else None, "dataset")
            for source in dict.fromkeys(sources)
        ],
    }
    return pinned, record


def with_category(parse: Callable[[dict], dict]) -> Callable[[dict], dict]:
    """``parse``, keeping the row's ``category`` (``None`` when it has none, as in UltraFeedback)."""

    def parse_and_keep(record: dict) -> dict:
        return {**parse(record), "category": record.get("category") if isinstance(record, dict) else None}

    return parse_and_keep


def read_preference_pairs(data: HeldOutData, template: TemplateName | None = None) -> list[dict]:
    """``{prompt, chosen, rejected, category}`` pairs (UltraFeedback-binarized or flat rows); a multi-turn pair the
    ``template`` cannot hold is a counted skip (``None``: no template check)."""
    check = template_check(template, "chosen") if template is not None else None
    return data.read(with_category(parse_preference_row), "held-out preference pairs", check)


def read_instruction_examples(data: HeldOutData, template: TemplateName | None = None) -> list[dict]:
    """``{instruction, input, output, category}`` examples (Alpaca or chat rows); a multi-turn chat the ``template``
    cannot hold is a counted skip (``None``: no template check)."""
    check = template_check(template) if template is not None else None
    return data.read(with_category(parse_instruction_row), "held-out instruction data", check)


def _device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def preference_logps(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[dict],
    *,
    template: TemplateName,
    max_length: int,
    max_prompt_length: int,
    batch_size: int,
) -> tuple[list[float], list[float]]:
    """Summed response log-probs ``log p(y | x)`` of the chosen and rejected response of every pair.

    Returns:
        ``(chosen, rejected)``, one float per pair each, in the order of ``pairs``.
    """
    collator = PreferenceCollator(tokenizer.pad_token_id, pack=False)
    device = _device(model)
    chosen: list[float] = []
    rejected: list[float] = []
    model.eval()
    for start in range(0, len(pairs), batch_size):
        examples = []
        for offset, pair in enumerate(pairs[start : start + batch_size]):
            row = {**pair, "_row": start + offset, "_source": "held-out"}
            example = tokenize_preference(row, tokenizer, template, max_length, max_prompt_length)
            examples.append({**example, "pair_index": start + offset})
        batch = collator(examples)  # 2B rows: the B chosen, then the B rejected
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits  # (2B, T, V)
        logps, _ = sequence_logps(logits[:, :-1], batch["labels"][:, 1:].to(device))  # (2B,)
        pairs_in_batch = len(examples)
        chosen += logps[:pairs_in_batch].tolist()
        rejected += logps[pairs_in_batch:].tolist()
    return chosen, rejected


@torch.no_grad()
def response_nll(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[dict],
    *,
    template: TemplateName,
    max_length: int,
    batch_size: int,
) -> list[tuple[float, int]]:
    """Each reference response's summed negative log-likelihood and its token count, per example.

    Rows whose prompt alone fills ``max_length`` are left out (as the SFT data module does).

    Returns:
        ``[(nll, tokens), ...]`` of the kept examples, in order: the perplexity is
        :func:`evaluation.metrics.perplexity` of their sums, and its interval a bootstrap over examples.
    """
    collator = SFTCollator(tokenizer.pad_token_id, pack=False)
    device = _device(model)
    rows = [
        tokenize_instruction({**example, "_row": i, "_source": "held-out"}, tokenizer, template, max_length)
        for i, example in enumerate(examples)
    ]
    rows = [row for row in rows if row["length"] > 0]
    scored: list[tuple[float, int]] = []
    model.eval()
    for start in range(0, len(rows), batch_size):
        batch = collator(rows[start : start + batch_size])
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits  # (B, T, V)
        logps, lengths = sequence_logps(logits[:, :-1], batch["labels"][:, 1:].to(device))  # (B,), (B,)
        scored += [(-float(logp), int(length)) for logp, length in zip(logps.tolist(), lengths.tolist(), strict=True)]
    return scored


@dataclass
class VariantOutput:
    """What one variant produced while it was in memory: its checked responses, its held-out scores.

    Attributes:
        responses: one per prompt: ``{text, response_tokens, finished, refusal, passed, prompt_tokens}``.
        pair_logps: ``(chosen, rejected)`` summed log-probs of each held-out pair (``None``: no pairs).
        nll: ``(nll, tokens)`` of each held-out instruction response (``None``: none scored).
        seconds: wall time of the variant (load, generate, score, benchmarks).
        answered: per public prompt set (XSTest, AlpacaEval), one checked response per row, as ``responses``.
        harness: per lm-eval task, its per-item outcomes and protocol (:class:`evaluation.harness.TaskOutcomes`).
    """

    responses: list[dict[str, Any]]
    pair_logps: tuple[list[float], list[float]] | None
    nll: list[tuple[float, int]] | None
    seconds: float
    answered: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    harness: dict[str, Any] = field(default_factory=dict)
