"""Preference data for DPO: UltraFeedback-binarized or flat ``{prompt, chosen, rejected}`` pairs."""

from __future__ import annotations

import random
from typing import Any

from datasets import Dataset
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Subset

from common.errors import ConfigError
from common.provenance import as_list, is_local
from datamodules.base import TokenizedDataModule
from datamodules.collate import PreferenceCollator
from datamodules.instruction import template_check
from datamodules.sources import (
    BadRow,
    BadRowPolicy,
    PreparationReport,
    check_max_skipped_fraction,
    collect,
    conversation,
    optional_score,
    require_text,
)
from datamodules.templates import TemplateName, encode_prompt, encode_response, format_prompt


def parse_preference_row(record: dict) -> dict:
    """``{prompt, chosen, rejected, system, history}`` from either schema.

    * UltraFeedback-binarized: ``chosen`` / ``rejected`` are message lists ``[system?, user, assistant,
      (user, assistant)...]`` that share everything before their final assistant turn (that shared
      conversation is the prompt; the ``prompt`` string, when present, must be text); optional
      ``score_chosen`` / ``score_rejected``.
    * Flat: ``prompt``, ``chosen``, ``rejected`` are strings.

    Raises:
        BadRow: missing / empty / wrongly typed fields, malformed message lists, chosen and rejected
            conversations that differ before their final turn, non-finite scores, or identical chosen
            and rejected responses.
    """
    for name in ("chosen", "rejected"):
        if not isinstance(record, dict) or name not in record:
            require_text(record, name)  # the row-level wrong type, or the missing field
    lists = [isinstance(record[name], list) for name in ("chosen", "rejected")]
    if any(lists):
        if "prompt" in record:
            require_text(record, "prompt")
        chats = {name: conversation(record[name], name) for name in ("chosen", "rejected")}
        chosen, rejected = chats["chosen"], chats["rejected"]
        if chosen.prompt_messages() != rejected.prompt_messages():
            a, b = chosen.prompt_messages(), rejected.prompt_messages()
            differs = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            raise BadRow(
                "rejected",
                "conversation differs from chosen before the final turn",
                f"first at turn {differs}; both must share the prompt and differ only in the final assistant turn",
            )
        example = {
            "prompt": chosen.user,
            "chosen": chosen.assistant,
            "rejected": rejected.assistant,
            "system": chosen.system,
            "history": chosen.history,
        }
    else:
        example = {
            "prompt": require_text(record, "prompt"),
            "chosen": require_text(record, "chosen"),
            "rejected": require_text(record, "rejected"),
            "system": None,
            "history": [],
        }
    for name in ("score_chosen", "score_rejected"):
        optional_score(record, name)
    if example["chosen"].strip() == example["rejected"].strip():
        raise BadRow("rejected", "chosen identical to rejected")
    return example


def truncate_prompt(prompt_ids: list[int], max_prompt_length: int, bos_token_id: int | None) -> list[int]:
    """Keep the end of a long prompt (the question sits at the end), and its BOS."""
    if len(prompt_ids) <= max_prompt_length:
        return prompt_ids
    if bos_token_id is not None and prompt_ids[0] == bos_token_id:
        return [bos_token_id] + prompt_ids[len(prompt_ids) - max_prompt_length + 1 :]
    return prompt_ids[len(prompt_ids) - max_prompt_length :]


def tokenize_preference(
    example: dict, tokenizer, template: TemplateName, max_length: int, max_prompt_length: int
) -> dict:
    """Prompt, chosen and rejected ids; the prompt keeps its end, each response its start.

    ``prompt_cut`` (0/1) and ``response_cut`` (0/1: either response lost its end) record the truncation,
    so the data module can say how many pairs it shortened. An example's ``desirable`` label (KTO's unpaired
    rows, :mod:`datamodules.unpaired`) is kept.
    """
    prompt = format_prompt(
        example["prompt"],
        template=template,
        tokenizer=tokenizer,
        system=example.get("system"),
        history=example.get("history") or (),
    )
    full_prompt_ids = encode_prompt(tokenizer, prompt, template)
    prompt_ids = truncate_prompt(full_prompt_ids, max_prompt_length, tokenizer.bos_token_id)
    room = max_length - len(prompt_ids)
    full_chosen_ids, full_rejected_ids = (
        encode_response(tokenizer, example["chosen"]),
        encode_response(tokenizer, example["rejected"]),
    )
    chosen_ids, rejected_ids = full_chosen_ids[:room], full_rejected_ids[:room]
    return {
        "prompt_ids": prompt_ids,
        "chosen_ids": chosen_ids,
        "rejected_ids": rejected_ids,
        "length": len(prompt_ids) + max(len(chosen_ids), len(rejected_ids)),
        "prompt_cut": int(len(prompt_ids) < len(full_prompt_ids)),
        "response_cut": int(max(len(full_chosen_ids), len(full_rejected_ids)) > room),
        "row": example["_row"],
        "source": example["_source"],
    } | ({"desirable": bool(example["desirable"])} if "desirable" in example else {})


class PreferenceDataModule(TokenizedDataModule):
    """Preference pairs for DPO, formatted with the same prompt template as SFT.

    Args:
        train_files: a Hub dataset id (default ``HuggingFaceH4/ultrafeedback_binarized``) or local
            ``.json`` / ``.jsonl`` / ``.parquet`` files, UltraFeedback or flat schema.
        val_files: validation source; for a Hub id, ``val_split`` of the same dataset by default.
        split: training split of a Hub dataset (UltraFeedback: ``train_prefs``).
        val_split: validation split of a Hub dataset (UltraFeedback: ``test_prefs``).
        num_examples: keep this many training pairs after a seeded shuffle (``None``: all).
        num_val_examples: keep this many validation pairs (``None``: all).
        max_length: tokens per row (prompt + one response).
        max_prompt_length: tokens kept of the prompt (its end); must be below ``max_length``.
        template: must be the template the SFT model was trained with.
        on_bad_row: ``error`` or ``skip`` (see :class:`~datamodules.sources.PreparationReport`).
        max_skipped_fraction: with ``on_bad_row: skip``, more than this share of the rows read skipped is an
            error naming the counts per reason and the files (a sign of the wrong file, schema or template);
            ``null``: no ceiling.
        reference_batch_size: pairs per batch of the precomputed-reference pass (``DPOModule(reference=
            "precomputed")``): a forward without gradients holds one layer's activations at a time, so it takes
            larger batches than training; ``None``: 4 x ``eval_batch_size``.
        share_prompt: lay each pair's prompt once before its two responses in the packed batch (prefix sharing,
            :func:`~datamodules.collate.build_shared_prompt_batch`): the same log-probs with the prompt's tokens
            computed once, not twice. Needs ``pack`` and the module's packed attention (``packed_sdpa``).
        **kwargs: batching options of :class:`~datamodules.base.TokenizedDataModule`.
    """

    parse_row = staticmethod(parse_preference_row)
    """How one record becomes an example (a subclass reads another schema)."""
    unit = "pairs"
    """What one example is, in messages."""
    report_name = "preference data"

    def __init__(
        self,
        tokenizer_name_or_path: str,
        train_files: str | list[str] = "HuggingFaceH4/ultrafeedback_binarized",
        val_files: str | list[str] | None = None,
        split: str = "train_prefs",
        val_split: str = "test_prefs",
        num_examples: int | None = None,
        num_val_examples: int | None = None,
        max_length: int = 1024,
        max_prompt_length: int = 512,
        template: TemplateName = "alpaca",
        on_bad_row: BadRowPolicy = "skip",
        max_skipped_fraction: float | None = None,
        batch_size: int = 4,
        reference_batch_size: int | None = None,
        share_prompt: bool = False,
        **kwargs: Any,
    ) -> None:
        # Pairs per batch default lower than rows; the other batching options are TokenizedDataModule's.
        super().__init__(tokenizer_name_or_path, batch_size=batch_size, **kwargs)
        if max_prompt_length >= max_length:
            raise ConfigError(
                f"data: max_prompt_length ({max_prompt_length}) must be below max_length ({max_length}), which holds "
                "the prompt and one response: lower max_prompt_length or raise max_length."
            )
        self.train_files = as_list(train_files)
        self.val_files = as_list(val_files)
        self.split = split
        self.val_split = val_split
        self.num_examples = num_examples
        self.num_val_examples = num_val_examples
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.template = template
        check_max_skipped_fraction(max_skipped_fraction)
        self.on_bad_row = on_bad_row
        self.max_skipped_fraction = max_skipped_fraction
        self.report: PreparationReport | None = None
        self.fingerprints: dict[str, str] = {}
        self.reference_attached = False
        if reference_batch_size is not None and reference_batch_size < 1:
            raise ConfigError(f"data: reference_batch_size must be >= 1, got {reference_batch_size}.")
        self.reference_batch_size = reference_batch_size or 4 * self.eval_batch_size
        if share_prompt and not self.pack:
            raise ConfigError("data: share_prompt lays the pairs out in a packed batch: set pack: true as well.")
        self.share_prompt = share_prompt

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        self.load_tokenizer()
        report = PreparationReport(self.report_name, self.on_bad_row, self.max_skipped_fraction)
        commits = self.resolve_sources(self.train_files + self.val_files)
        check = template_check(self.template, "chosen")
        train = self.arrange(collect(self.train_files, self.parse_row, report, self.split, commits, check))
        random.Random(self.seed).shuffle(train)
        train = train[: self.num_examples] if self.num_examples is not None else train
        hub_val = [f for f in self.train_files if not is_local(f, "dataset")] if not self.val_files else []
        val_sources, val_split = (self.val_files, self.split) if self.val_files else (hub_val, self.val_split)
        val = collect(val_sources, self.parse_row, report, val_split, commits, check) if val_sources else []
        val = self.arrange(val)
        val = val[: self.num_val_examples] if self.num_val_examples is not None else val
        self.train_dataset = self._tokenize(train, "train")
        self.val_dataset = self._tokenize(val, "val") if val else None
        report.kept = len(self.train_dataset) + (len(self.val_dataset) if self.val_dataset else 0)
        self.provenance["fingerprint"] = dict(self.fingerprints)
        self.report = report
        report.finish()

    def arrange(self, examples: list[dict]) -> list[dict]:
        """The examples of a split as read, before the selection: the pairs themselves."""
        return examples

    def _tokenize(self, examples: list[dict], split: str) -> Dataset:
        tokenizer, template = self.tokenizer, self.template
        max_length, max_prompt_length = self.max_length, self.max_prompt_length
        settings = {
            "template": template,
            "max_length": max_length,
            "max_prompt_length": max_prompt_length,
            "kind": "preference",
            "records_truncation": True,  # older caches lack prompt_cut / response_cut
        }
        dataset = self.tokenize(
            examples, lambda ex: tokenize_preference(ex, tokenizer, template, max_length, max_prompt_length), settings
        )
        self.fingerprints[split] = dataset._fingerprint
        prompts_cut, responses_cut = sum(dataset["prompt_cut"]), sum(dataset["response_cut"])
        if prompts_cut or responses_cut:
            rank_zero_info(
                f"[preference data] {split}: {prompts_cut} of {len(dataset)} prompts longer than max_prompt_length "
                f"keep their last {max_prompt_length} tokens; {responses_cut} {self.unit} have a response cut to fit "
                f"max_length ({max_length} tokens, prompt included)"
            )
        # The position of each pair, so a precomputed reference log-prob can be looked up per pair.
        return dataset.add_column("pair_index", list(range(len(dataset))))

    def attach_reference_logps(self, split: str, chosen, rejected) -> None:
        """Add precomputed reference log-probs (indexed by ``pair_index``) as columns of a split."""
        dataset = getattr(self, f"{split}_dataset")
        if len(chosen) != len(dataset):
            raise ValueError(f"{len(chosen)} reference log-probs for {len(dataset)} {split} pairs: stale cache?")
        for name, values in (("reference_chosen_logps", chosen), ("reference_rejected_logps", rejected)):
            if name in dataset.column_names:
                dataset = dataset.remove_columns(name)
            dataset = dataset.add_column(name, [float(v) for v in values])
        setattr(self, f"{split}_dataset", dataset)

    def reference_dataloader(self, split: str, rank: int = 0, world_size: int = 1) -> DataLoader:
        """This process's share of a split's pairs, each pair once, in order, for the one reference pass.

        Rank ``r`` of ``world_size`` takes pairs ``r, r + world_size, ...``: every pair exactly once over the ranks,
        with no pair repeated to even the shares out (``DistributedSampler`` would repeat some, and the reference
        pass sums the ranks' shares). Batches of ``reference_batch_size`` pairs.
        """
        dataset = getattr(self, f"{split}_dataset")
        share = Subset(dataset, range(rank, len(dataset), world_size))
        return DataLoader(
            share, batch_size=self.reference_batch_size, collate_fn=self.collator(), num_workers=self.num_workers
        )

    def collator(self) -> PreferenceCollator:
        return PreferenceCollator(self.load_tokenizer().pad_token_id, pack=self.pack, share_prompt=self.share_prompt)

    def train_dataloader(self):
        return self._loader(self.train_dataset, self.batch_size, True, self.collator())

    def val_dataloader(self):
        if self.val_dataset is None:
            return []
        return self._loader(self.val_dataset, self.eval_batch_size, False, self.collator())
