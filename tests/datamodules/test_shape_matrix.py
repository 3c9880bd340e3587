"""Every data shape x template x bad-row policy x consumer ends in training data, a counted skip, or one error
naming the file, the row and the reason: never any other exception.

Shapes: Alpaca rows with and without ``input``, flat preference pairs, chats with a system turn, multi-turn chats,
UltraFeedback-style rows (message lists and scores). Consumers: SFT (``InstructionDataModule``), DPO
(``PreferenceDataModule``), the reward model (the same module, then ``RewardModule`` scores every batch, so each kept
row reaches the Bradley-Terry loss), KTO (``UnpairedDataModule``), the evaluation's prompt files (each row with its
``category``) and its held-out sets (always ``skip``). The real data modules on three-row files, with a word-level
tokenizer that has a chat template (chat_helpers.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chat_helpers import ASK, CHAT, SYSTEM

from common.errors import UserError
from datamodules import InstructionDataModule, PreferenceDataModule, UnpairedDataModule
from evaluation.prompts import read_prompts
from evaluation.scoring import HeldOutData, read_instruction_examples, read_preference_pairs

FIVE, SIX = {"role": "assistant", "content": "five"}, {"role": "assistant", "content": "six"}
SHAPES = {
    "alpaca": {"instruction": "Add two and three", "input": "", "output": "five"},
    "alpaca_input": {"instruction": "Add", "input": "two and three", "output": "five"},
    "flat_pair": {"prompt": "Add two and three", "chosen": "five", "rejected": "six"},
    "chat_system": {"messages": [SYSTEM, ASK, FIVE], "chosen": [SYSTEM, ASK, FIVE], "rejected": [SYSTEM, ASK, SIX]},
    "multi_turn": {"messages": CHAT, "chosen": CHAT, "rejected": [*CHAT[:-1], SIX]},
    "ultrafeedback": {
        "prompt": "Add two and three",
        "chosen": [ASK, FIVE],
        "rejected": [ASK, SIX],
        "score_chosen": 8.0,
        "score_rejected": 3.0,
    },
}
INSTRUCTION_SHAPES = {"alpaca", "alpaca_input", "chat_system", "multi_turn"}  # what an SFT row can be
PAIR_SHAPES = {"flat_pair", "chat_system", "multi_turn", "ultrafeedback"}  # what a preference row can be
PROMPT_SHAPES = {"alpaca", "alpaca_input", "flat_pair", "ultrafeedback"}  # a prompt or an instruction; no chats
ROWS = 3


def rows_of(shape: str, consumer: str) -> list[dict]:
    """The shape's row as the consumer reads it (a chat row holds both an SFT and a pair reading of it)."""
    row = dict(SHAPES[shape])
    if shape in ("chat_system", "multi_turn"):
        keep = ("messages",) if consumer in ("sft", "held_out_sft", "eval_prompts") else ("chosen", "rejected")
        row = {key: row[key] for key in keep}
    if consumer == "eval_prompts":
        row = {"category": "reasoning", **row}  # what every prompt file row carries
    return [row] * ROWS


def write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def read(consumer: str, tokenizer: Path, file: str, template: str, policy: str, cache: Path) -> int:
    """The consumer's rows from ``file``: how many it keeps (the reward model: how many rows it scored)."""
    common = {"template": template, "on_bad_row": policy, "max_length": 64, "cache_dir": str(cache)}
    if consumer == "sft":
        data = InstructionDataModule(str(tokenizer), train_files=file, val_fraction=0.0, **common)
    elif consumer in ("dpo", "kto", "reward"):
        kind = UnpairedDataModule if consumer == "kto" else PreferenceDataModule
        data = kind(str(tokenizer), train_files=file, max_prompt_length=32, batch_size=2, **common)
    elif consumer == "held_out_pairs":
        return len(read_preference_pairs(HeldOutData(files=file), template))
    elif consumer == "eval_prompts":
        return len(read_prompts(file, policy))
    else:
        return len(read_instruction_examples(HeldOutData(files=file), template))
    data.setup("fit")
    if consumer == "reward":
        return scored_rows(tokenizer, data)
    return len(data.train_dataset)


def scored_rows(model_dir: Path, data: PreferenceDataModule) -> int:
    """``RewardModule`` on every training batch: the pairs whose two rewards reached a finite loss."""
    import torch

    from lightning_modules.losses import bradley_terry_loss
    from lightning_modules.reward import RewardModule

    module, pairs = RewardModule(str(model_dir)), 0
    with torch.no_grad():
        for batch in data.train_dataloader():
            rewards = module.rewards(batch)  # chosen rows, then rejected
            chosen, rejected = rewards.view(2, -1)
            assert torch.isfinite(bradley_terry_loss(chosen, rejected)).all()
            pairs += chosen.numel()
    return pairs


def expected(shape: str, consumer: str, template: str) -> str | None:
    """``None``: every row trains; else a fragment of the one error (the file has only rows of this shape)."""
    readable = {"sft": INSTRUCTION_SHAPES, "held_out_sft": INSTRUCTION_SHAPES, "eval_prompts": PROMPT_SHAPES}
    if shape not in readable.get(consumer, PAIR_SHAPES):
        return "missing field"
    if shape == "multi_turn" and template == "alpaca" and consumer != "eval_prompts":  # rendered at generation
        return "needs template: chat"
    return None


CONSUMERS = ("sft", "dpo", "reward", "kto", "eval_prompts", "held_out_pairs", "held_out_sft")
CELLS = [
    (shape, consumer, template, policy)
    for shape in SHAPES
    for consumer in CONSUMERS
    for template in (("-",) if consumer == "eval_prompts" else ("alpaca", "chat"))  # a prompt file has none
    for policy in (("skip",) if consumer.startswith("held_out") else ("error", "skip"))
]


@pytest.mark.parametrize("shape, consumer, template, policy", CELLS, ids=["-".join(cell) for cell in CELLS])
def test_each_cell_trains_or_is_one_error_naming_file_row_and_reason(
    shape, consumer, template, policy, chat_tokenizer_dir, chat_reward_model_dir, tmp_path
):
    file = write(tmp_path / f"{shape}.jsonl", rows_of(shape, consumer))
    fragment = expected(shape, consumer, template)
    tokenizer = chat_reward_model_dir if consumer == "reward" else chat_tokenizer_dir  # the same tokenizer
    if fragment is None:
        kept = read(consumer, tokenizer, file, template, policy, tmp_path / "cache")
        assert kept == (2 * ROWS if consumer == "kto" else ROWS)  # KTO: each pair is two unpaired rows
        return
    with pytest.raises(UserError) as raised:  # anything else is a traceback the user would see
        read(consumer, tokenizer, file, template, policy, tmp_path / "cache")
    message = str(raised.value)
    assert file in message and fragment in message
    if policy == "error":
        assert "row 1: field '" in message  # the first bad row, by number and field
    else:
        assert f"has no usable rows ({ROWS} rows, all bad)" in message and f"{file}:1" in message


@pytest.mark.parametrize("consumer", CONSUMERS)
def test_a_bad_row_among_good_ones_is_a_counted_skip(consumer, chat_tokenizer_dir, chat_reward_model_dir, tmp_path):
    good = "alpaca" if consumer in ("sft", "held_out_sft", "eval_prompts") else "flat_pair"
    rows = [*rows_of(good, consumer)[:2], rows_of("multi_turn", consumer)[0]]
    file = write(tmp_path / "mixed.jsonl", rows)
    if consumer in ("sft", "dpo", "kto"):
        kind = {"sft": InstructionDataModule, "dpo": PreferenceDataModule, "kto": UnpairedDataModule}[consumer]
        options = {"val_fraction": 0.0} if consumer == "sft" else {"max_prompt_length": 32, "batch_size": 2}
        data = kind(
            str(chat_tokenizer_dir), train_files=file, template="alpaca", on_bad_row="skip", max_length=64,
            max_skipped_fraction=None, cache_dir=str(tmp_path / "cache"), **options,
        )  # fmt: skip
        data.setup("fit")
        assert len(data.train_dataset) == (4 if consumer == "kto" else 2)
        (reason,) = data.report.skipped
        assert "needs template: chat" in reason and data.report.examples[reason] == [f"{file}:3"]
    else:
        tokenizer = chat_reward_model_dir if consumer == "reward" else chat_tokenizer_dir
        assert read(consumer, tokenizer, file, "alpaca", "skip", tmp_path / "cache") == 2


def test_the_chat_template_with_a_tokenizer_that_has_none_is_one_error(tiny_model_dir, tmp_path):
    file = write(tmp_path / "pairs.jsonl", rows_of("flat_pair", "dpo"))
    """Checked once when the tokenizer loads (it was a ValueError from the first row's rendering)."""
    with pytest.raises(
        UserError, match=rf"data.template: chat needs a tokenizer with a chat template, and {tiny_model_dir}"
    ):
        read("dpo", tiny_model_dir, file, "chat", "error", tmp_path / "cache")
