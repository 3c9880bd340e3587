"""Unpaired preference data for KTO: ``{prompt, completion, label}`` rows, or pairs split into two such rows.

KTO (Ethayarajh et al. 2024, https://arxiv.org/abs/2402.01306) learns from single completions marked desirable
or undesirable, and estimates its reference point, the KL term ``z_0``, from *mismatched* prompt and completion
pairs. Each example here is a row's prompt with two completions: its own (labelled) and a mismatched one, the
completion of the next row of the same split in the split's (seeded, shuffled) order::

    example i   prompt_i + completion_i        -> the loss, with label_i
                prompt_i + completion_{i+1}    -> the KL estimate only (never a target)

so a batch has exactly the layout of a preference batch (:class:`~datamodules.collate.PreferenceCollator`: the B
labelled rows, then the B mismatched ones) plus a ``desirable`` column, and the DPO module's reference strategies,
packing and precomputed cache work unchanged. TRL instead cycles completions by one *within each batch*; fixing
the mismatch per example makes it cacheable, and the batch mean over B mismatched pairs estimates the same
``E_x KL(pi(.|x) || ref(.|x))``.
"""

from __future__ import annotations

from typing import Any

from common.errors import DataError
from datamodules.preference import PreferenceDataModule, parse_preference_row
from datamodules.sources import BadRow, require_text

LABELS: dict[Any, bool] = {True: True, False: False, "desirable": True, "undesirable": False}
"""The label values accepted: TRL's booleans, or the words."""


def parse_unpaired_row(record: dict) -> dict:
    """``{prompt, system, history, completions: [(text, desirable), ...]}`` from one record.

    * Unpaired: ``prompt`` and ``completion`` strings and ``label`` (``true`` / ``false`` or ``desirable`` /
      ``undesirable``): one completion.
    * A preference pair in either schema :func:`~datamodules.preference.parse_preference_row` reads (a
      ``chosen`` field): two completions, the chosen one desirable and the rejected one undesirable.

    Raises:
        BadRow: what :func:`~datamodules.preference.parse_preference_row` raises for a pair; a missing, empty or
            wrongly typed prompt or completion; a label missing or not one of :data:`LABELS`.
    """
    if isinstance(record, dict) and "chosen" in record:
        pair = parse_preference_row(record)
        shared = {key: pair[key] for key in ("prompt", "system", "history")}
        return shared | {"completions": [(pair["chosen"], True), (pair["rejected"], False)]}
    prompt, completion = require_text(record, "prompt"), require_text(record, "completion")
    if "label" not in record:
        raise BadRow("label", "missing field", "true / false, or desirable / undesirable")
    label = record["label"]
    if isinstance(label, str):
        label = label.strip().lower()
    if not isinstance(label, bool | str) or label not in LABELS:
        raise BadRow("label", "not a label", f"{record['label']!r}; expected true / false, or desirable / undesirable")
    return {"prompt": prompt, "system": None, "history": [], "completions": [(completion, LABELS[label])]}


class UnpairedDataModule(PreferenceDataModule):
    """KTO's data: one labelled completion per example, with a mismatched completion for the KL estimate.

    Takes every option of :class:`~datamodules.preference.PreferenceDataModule` (files, splits, lengths, template,
    bad-row policy, batching); ``num_examples`` / ``num_val_examples`` count unpaired rows (a pair gives two), and
    ``batch_size`` rows per batch. A split needs at least two rows (a row's mismatched completion is another's).
    """

    parse_row = staticmethod(parse_unpaired_row)
    unit = "rows"
    report_name = "unpaired data"

    def arrange(self, examples: list[dict]) -> list[dict]:
        """One example per completion, keeping its file and row."""
        return [
            {key: value for key, value in example.items() if key != "completions"}
            | {"completion": text, "desirable": desirable}
            for example in examples
            for text, desirable in example["completions"]
        ]

    def _tokenize(self, examples: list[dict], split: str):
        if len(examples) < 2:
            raise DataError(
                f"[unpaired data] {split}: {len(examples)} row; KTO's KL estimate pairs each prompt with another "
                "row's completion, so a split needs at least 2 rows."
            )
        # example i: its own completion where a pair has the chosen one, the next row's where it has the rejected
        mismatched = [
            example | {"chosen": example["completion"], "rejected": examples[(i + 1) % len(examples)]["completion"]}
            for i, example in enumerate(examples)
        ]
        return super()._tokenize(mismatched, split)
