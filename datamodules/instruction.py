"""Instruction data for SFT: Alpaca-GPT4 rows or chats (system turn, several exchanges) -> tokenised, masked
examples."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Literal

from common.constants import IGNORE_INDEX
from common.errors import ConfigError
from common.provenance import as_list
from datamodules.base import TokenizedDataModule
from datamodules.collate import SFTCollator
from datamodules.sources import (
    BadRow,
    BadRowPolicy,
    DataError,
    PreparationReport,
    Row,
    check_max_skipped_fraction,
    collect,
    conversation,
    require_text,
)
from datamodules.templates import (
    MULTI_TURN_NEEDS_CHAT,
    TemplateName,
    encode_prompt,
    encode_response,
    format_prompt,
)

AssistantTurns = Literal["last", "all"]
NOT_PREFIX_CONSISTENT = (
    "assistant_turns: all needs a chat template that renders a chat as the prefix of any longer one, and this "
    "tokenizer's does not (it rewrites earlier turns); use assistant_turns: last"
)


def parse_instruction_row(record: dict) -> dict:
    """``{instruction, input, output, system, history}`` from an Alpaca-schema row or a ``messages`` chat row.

    A chat may open with a system turn and hold several exchanges; its final assistant turn is the
    ``output``, its final user turn the ``instruction``, and the turns before that the ``history``.

    Raises:
        BadRow: a missing, empty or wrongly typed field, or a malformed message list.
    """
    if isinstance(record, dict) and "messages" in record and "instruction" not in record:
        chat = conversation(record["messages"], "messages")
        return {
            "instruction": chat.user,
            "input": "",
            "output": chat.assistant,
            "system": chat.system,
            "history": chat.history,
        }
    instruction = require_text(record, "instruction")
    has_input = isinstance(record, dict) and record.get("input") is not None
    input_text = require_text(record, "input", allow_empty=True) if has_input else ""
    output = require_text(record, "output")
    return {"instruction": instruction, "input": input_text, "output": output, "system": None, "history": []}


def encode_every_assistant_turn(tokenizer, example: dict) -> tuple[list[int], list[int]]:
    """Ids and labels of a whole chat with every assistant turn labelled (``assistant_turns: all``).

    The chat template renders each earlier assistant turn with its own end-of-turn text, which is
    labelled as the template writes it; the final turn is ``content + EOS`` as in ``last`` mode::

        [ctx_1][turn_1][ctx_2][turn_2] ... [ctx_n][final + EOS]
         -100   ids     -100   ids          -100   ids

    Each context piece is what the template adds between turns (a user turn and the assistant prefix);
    pieces are found as the differences of renders of growing prefixes of the chat.

    Raises:
        DataError: a chat template whose render of a longer chat does not extend that of a shorter one.
    """
    messages = [{"role": "system", "content": example["system"]}] if example["system"] is not None else []
    messages += [*example["history"], {"role": "user", "content": example["instruction"]}]
    messages.append({"role": "assistant", "content": example["output"]})
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        context = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        if not context.startswith(rendered):
            raise DataError(NOT_PREFIX_CONSISTENT)
        context_ids = tokenizer(context[len(rendered) :], add_special_tokens=False)["input_ids"]
        if i == len(messages) - 1:
            turn_ids = encode_response(tokenizer, message["content"])
        else:
            rendered = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
            if not rendered.startswith(context):
                raise DataError(NOT_PREFIX_CONSISTENT)
            turn_ids = tokenizer(rendered[len(context) :], add_special_tokens=False)["input_ids"]
        ids += context_ids + turn_ids
        labels += [IGNORE_INDEX] * len(context_ids) + turn_ids
    return ids, labels


def tokenize_instruction(
    example: dict, tokenizer, template: TemplateName, max_length: int, assistant_turns: AssistantTurns = "last"
) -> dict:
    """Prompt + response ids with labels ``-100`` on the prompt.

    The prompt is the conversation before the final assistant turn (system turn and earlier exchanges
    included); the response is that final turn. With ``assistant_turns="all"`` and a multi-turn chat,
    every assistant turn is labelled (:func:`encode_every_assistant_turn`).

    Truncation keeps the whole prompt and cuts the end; a prompt that leaves no room for a single
    response token yields an empty row (``length`` 0) that the caller counts.
    """
    empty = {"input_ids": [], "labels": [], "length": 0, "row": example["_row"], "source": example["_source"]}
    if assistant_turns == "all" and example.get("history"):
        ids, labels = encode_every_assistant_turn(tokenizer, example)
        first_label = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
        if first_label >= max_length:
            return empty
        ids, labels = ids[:max_length], labels[:max_length]
        return {**empty, "input_ids": ids, "labels": labels, "length": len(ids)}
    prompt = format_prompt(
        example["instruction"],
        example["input"],
        template=template,
        tokenizer=tokenizer,
        system=example.get("system"),
        history=example.get("history") or (),
    )
    prompt_ids = encode_prompt(tokenizer, prompt, template)
    response_ids = encode_response(tokenizer, example["output"])
    if len(prompt_ids) >= max_length:
        return empty
    response_ids = response_ids[: max_length - len(prompt_ids)]
    return {
        **empty,
        "input_ids": prompt_ids + response_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + response_ids,
        "length": len(prompt_ids) + len(response_ids),
    }


def template_check(template: TemplateName, field: str = "messages") -> Callable[[dict], None]:
    """The row check (:func:`datamodules.sources.collect`'s ``check``) of what ``template`` can render: a chat with
    several exchanges needs ``chat``; ``field`` is the field named when it is refused."""

    def check(example: dict) -> None:
        if template != "chat" and example.get("history"):
            raise BadRow(field, f"{MULTI_TURN_NEEDS_CHAT} (template is {template})")

    return check


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
            Chats with a system turn work with both (Alpaca: the system text replaces the template's
            opening sentence); chats with several exchanges need ``chat``.
        assistant_turns: ``last`` trains on the final assistant turn of each chat (its earlier turns are
            context); ``all`` trains on every assistant turn of a multi-turn chat (``chat`` template).
        on_bad_row: ``error`` stops at the first bad row naming file, row and field; ``skip``
            drops bad rows and prints a summary.
        max_skipped_fraction: with ``on_bad_row: skip``, more than this share of the rows read skipped is an
            error naming the counts per reason and the files (a sign of the wrong file, schema or template);
            ``null``: no ceiling.
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
        assistant_turns: AssistantTurns = "last",
        on_bad_row: BadRowPolicy = "error",
        max_skipped_fraction: float | None = None,
        **kwargs: Any,
    ) -> None:
        # The batching options (batch_size, pack, seed, ...) are TokenizedDataModule's; the CLI reads them from there.
        super().__init__(tokenizer_name_or_path, **kwargs)
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"data: val_fraction must be in [0, 1), got {val_fraction}.")
        check_max_skipped_fraction(max_skipped_fraction)
        self.train_files = as_list(train_files)
        self.val_files = as_list(val_files)
        self.split = split
        self.num_examples = num_examples
        self.val_fraction = val_fraction
        self.max_length = max_length
        self.template = template
        self.assistant_turns = assistant_turns
        self.on_bad_row = on_bad_row
        self.max_skipped_fraction = max_skipped_fraction
        self.report: PreparationReport | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        self.load_tokenizer()
        report = PreparationReport("instruction data", self.on_bad_row, self.max_skipped_fraction)
        commits = self.resolve_sources(self.train_files + self.val_files)
        check = template_check(self.template)
        train = collect(self.train_files, parse_instruction_row, report, self.split, commits, check)
        random.Random(self.seed).shuffle(train)
        if self.num_examples is not None:
            train = train[: self.num_examples]
        if self.val_files:
            val = collect(self.val_files, parse_instruction_row, report, self.split, commits, check)
        else:
            n_val = round(len(train) * self.val_fraction)
            val, train = train[:n_val], train[n_val:]
        self.train_dataset = self._tokenize_and_filter(train, report)
        self.val_dataset = self._tokenize_and_filter(val, report) if val else None
        report.kept = len(self.train_dataset) + (len(self.val_dataset) if self.val_dataset else 0)
        self.provenance["fingerprint"] = {
            "train": self.train_dataset._fingerprint,
            "val": self.val_dataset._fingerprint if self.val_dataset is not None else None,
        }
        self.report = report
        report.finish()

    def _tokenize_and_filter(self, examples: list[dict], report: PreparationReport):
        tokenizer, template, max_length, turns = self.tokenizer, self.template, self.max_length, self.assistant_turns
        dataset = self.tokenize(
            examples,
            lambda ex: tokenize_instruction(ex, tokenizer, template, max_length, turns),
            {"template": template, "max_length": max_length, "kind": "instruction", "assistant_turns": turns},
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
