"""Instruction data for SFT: Alpaca-GPT4 rows or single-turn chats -> tokenised, masked examples."""

from __future__ import annotations

import random

from datamodules.base import TokenizedDataModule, as_list
from datamodules.collate import SFTCollator
from datamodules.sources import (
    BadRowPolicy,
    DataError,
    PreparationReport,
    Row,
    collect,
    require_text,
    single_turn,
)
from datamodules.templates import TemplateName, encode_prompt, encode_response, format_prompt
from lightning_modules.losses import IGNORE_INDEX


def parse_instruction_row(record: dict) -> dict:
    """``{instruction, input, output}`` from an Alpaca-schema row or a ``messages`` chat row.

    Raises:
        BadRow: a missing, empty or wrongly typed field, or a malformed message list.
    """
    if isinstance(record, dict) and "messages" in record and "instruction" not in record:
        instruction, output = single_turn(record["messages"], "messages")
        return {"instruction": instruction, "input": "", "output": output}
    instruction = require_text(record, "instruction")
    has_input = isinstance(record, dict) and record.get("input") is not None
    input_text = require_text(record, "input", allow_empty=True) if has_input else ""
    output = require_text(record, "output")
    return {"instruction": instruction, "input": input_text, "output": output}


def tokenize_instruction(example: dict, tokenizer, template: TemplateName, max_length: int) -> dict:
    """Prompt + response ids with labels ``-100`` on the prompt.

    Truncation keeps the whole prompt and cuts the end of the response; a prompt that leaves no
    room for a single response token yields an empty row (``length`` 0) that the caller counts.
    """
    prompt = format_prompt(example["instruction"], example["input"], template=template, tokenizer=tokenizer)
    prompt_ids = encode_prompt(tokenizer, prompt, template)
    response_ids = encode_response(tokenizer, example["output"])
    if len(prompt_ids) >= max_length:
        return {"input_ids": [], "labels": [], "length": 0, "row": example["_row"], "source": example["_source"]}
    response_ids = response_ids[: max_length - len(prompt_ids)]
    return {
        "input_ids": prompt_ids + response_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + response_ids,
        "length": len(prompt_ids) + len(response_ids),
        "row": example["_row"],
        "source": example["_source"],
    }


class InstructionDataModule(TokenizedDataModule):
    """Instruction-tuning data: Alpaca-GPT4 from the Hub or local files, masked to the response.

    Args:
        train_files: a Hub dataset id (default ``vicgalle/alpaca-gpt4``) or one or more local
            ``.json`` / ``.jsonl`` / ``.parquet`` / ``.csv`` files with ``instruction``, ``input``,
            ``output`` (or ``messages: [{role, content}, ...]``).
        val_files: separate validation files; if unset, ``val_fraction`` of the training examples.
        split: split of a Hub dataset to read.
        num_examples: keep this many training examples after a seeded shuffle (the study: 10,000).
        val_fraction: share of the examples held out for validation when ``val_files`` is unset.
        max_length: tokens per row (prompt + response); the response's end is cut.
        template: ``alpaca`` or the tokenizer's ``chat`` template (the same for SFT, DPO, evaluation).
        on_bad_row: ``error`` stops at the first bad row naming file, row and field; ``skip``
            drops bad rows and prints a summary.
        **kwargs: batching options of :class:`~datamodules.base.TokenizedDataModule`.
    """

    def __init__(
        self,
        tokenizer_name_or_path: str,
        train_files: str | list[str] = "vicgalle/alpaca-gpt4",
        val_files: str | list[str] | None = None,
        split: str = "train",
        num_examples: int | None = None,
        val_fraction: float = 0.05,
        max_length: int = 1024,
        template: TemplateName = "alpaca",
        on_bad_row: BadRowPolicy = "error",
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
        group_by_length: bool = True,
        pack: bool = True,
        cache_dir: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__(
            tokenizer_name_or_path,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            seed=seed,
            group_by_length=group_by_length,
            pack=pack,
            cache_dir=cache_dir,
            trust_remote_code=trust_remote_code,
        )
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
        self.train_files = as_list(train_files)
        self.val_files = as_list(val_files)
        self.split = split
        self.num_examples = num_examples
        self.val_fraction = val_fraction
        self.max_length = max_length
        self.template = template
        self.on_bad_row = on_bad_row
        self.report: PreparationReport | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        self.load_tokenizer()
        report = PreparationReport("instruction data", self.on_bad_row)
        train = collect(self.train_files, parse_instruction_row, report, self.split)
        random.Random(self.seed).shuffle(train)
        if self.num_examples is not None:
            train = train[: self.num_examples]
        if self.val_files:
            val = collect(self.val_files, parse_instruction_row, report, self.split)
        else:
            n_val = round(len(train) * self.val_fraction)
            val, train = train[:n_val], train[n_val:]
        self.train_dataset = self._tokenize_and_filter(train, report)
        self.val_dataset = self._tokenize_and_filter(val, report) if val else None
        report.kept = len(self.train_dataset) + (len(self.val_dataset) if self.val_dataset else 0)
        self.report = report
        report.log()

    def _tokenize_and_filter(self, examples: list[dict], report: PreparationReport):
        tokenizer, template, max_length = self.tokenizer, self.template, self.max_length
        dataset = self.tokenize(
            examples,
            lambda ex: tokenize_instruction(ex, tokenizer, template, max_length),
            {"template": template, "max_length": max_length, "kind": "instruction"},
        )
        too_long = {i for i, n in enumerate(dataset["length"]) if n == 0}
        for i in sorted(too_long):
            row = Row(dataset[i]["source"], dataset[i]["row"], None)
            report.reject(row, "instruction", "prompt longer than max_length", f"max_length={max_length}")
        if too_long:
            dataset = dataset.select([i for i in range(len(dataset)) if i not in too_long])
        if len(dataset) == 0:
            raise DataError(f"No instruction example fits max_length={max_length}. {report.summary()}")
        return dataset

    def collator(self) -> SFTCollator:
        return SFTCollator(self.load_tokenizer().pad_token_id, pack=self.pack)

    def train_dataloader(self):
        return self._loader(self.train_dataset, self.batch_size, True, self.collator())

    def val_dataloader(self):
        if self.val_dataset is None:
            return []
        return self._loader(self.val_dataset, self.eval_batch_size, False, self.collator())
