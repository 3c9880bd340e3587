"""Chats with a system turn and several exchanges, for SFT and preference pairs.

Ids are checked against a hand-written word-level vocabulary and a small role-aware chat template, so
every expected id below can be read off ``VOCAB`` (chat_helpers.py).
"""

from __future__ import annotations

import json

import pytest
from chat_helpers import ASK, CHAT, CHAT_TEMPLATE, FIRST, PROMPT_IDS, SYSTEM

from common.constants import IGNORE_INDEX
from datamodules.instruction import InstructionDataModule, parse_instruction_row, tokenize_instruction
from datamodules.preference import PreferenceDataModule, parse_preference_row, tokenize_preference
from datamodules.sources import BadRow, DataError


def example(record: dict, parse) -> dict:
    return {**parse(record), "_row": 1, "_source": "test"}


def test_system_and_earlier_turns_are_the_prompt_and_the_final_turn_the_response(chat_tokenizer):
    row = tokenize_instruction(example({"messages": CHAT}, parse_instruction_row), chat_tokenizer, "chat", 64)
    assert row["input_ids"] == PROMPT_IDS + [17, 2]  # ... "five" EOS: BOS once, EOS once
    assert row["labels"] == [IGNORE_INDEX] * len(PROMPT_IDS) + [17, 2]


def test_every_assistant_turn_is_labelled_when_asked(chat_tokenizer):
    row = tokenize_instruction(example({"messages": CHAT}, parse_instruction_row), chat_tokenizer, "chat", 64, "all")
    assert row["input_ids"] == PROMPT_IDS[:11] + [11, 12, 2] + PROMPT_IDS[14:] + [17, 2]
    # "Hello!</s>" as the template writes it (the newline after it is no token here), then "five</s>".
    assert row["labels"] == [IGNORE_INDEX] * 11 + [11, 12, 2] + [IGNORE_INDEX] * 8 + [17, 2]


def test_truncation_of_a_multi_turn_row_keeps_the_prompt_and_counts_what_does_not_fit(chat_tokenizer):
    record = example({"messages": CHAT}, parse_instruction_row)
    assert tokenize_instruction(record, chat_tokenizer, "chat", len(PROMPT_IDS) + 1)["labels"][-1] == 17
    assert tokenize_instruction(record, chat_tokenizer, "chat", len(PROMPT_IDS))["length"] == 0


def test_a_preference_pair_shares_the_conversation_and_differs_in_the_final_turn(chat_tokenizer):
    record = {
        "chosen": CHAT,
        "rejected": [*CHAT[:-1], {"role": "assistant", "content": "six"}],
        "prompt": "Add two and three",
    }
    row = tokenize_preference(example(record, parse_preference_row), chat_tokenizer, "chat", 64, 32)
    assert (row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) == (PROMPT_IDS, [17, 2], [18, 2])


def test_a_system_turn_with_the_alpaca_template_replaces_its_opening_sentence(chat_tokenizer):
    record = {"messages": [SYSTEM, ASK, {"role": "assistant", "content": "five"}]}
    row = tokenize_instruction(example(record, parse_instruction_row), chat_tokenizer, "alpaca", 64)
    # "<s>Be brief.\n\n### Instruction:\nAdd two and three\n\n### Response:\n" then "five</s>"
    assert row["input_ids"] == [1, 7, 8, 9, 19, 20, 6, 13, 14, 15, 16, 19, 21, 6, 17, 2]
    assert row["labels"] == [IGNORE_INDEX] * 14 + [17, 2]


@pytest.mark.parametrize(
    ("rejected", "detail"),
    [
        (
            [
                SYSTEM,
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hi"},
                ASK,
                {"role": "assistant", "content": "six"},
            ],
            "first at turn 2",
        ),
        ([ASK, {"role": "assistant", "content": "six"}], "first at turn 0"),
    ],
)
def test_chosen_and_rejected_that_differ_before_the_final_turn_are_a_bad_row(rejected, detail):
    with pytest.raises(BadRow) as raised:
        parse_preference_row({"chosen": CHAT, "rejected": rejected})
    assert raised.value.field == "rejected"
    assert raised.value.reason == "conversation differs from chosen before the final turn"
    assert detail in raised.value.detail


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([*FIRST, SYSTEM, ASK, {"role": "assistant", "content": "five"}], "roles out of order"),  # late system
        ([SYSTEM, *FIRST, ASK], "roles out of order"),  # ends with the user
        ([SYSTEM, {"role": "user", "content": "Hi"}], "no assistant turn"),
    ],
)
def test_malformed_chats_name_the_reason(messages, reason):
    with pytest.raises(BadRow, match=reason):
        parse_instruction_row({"messages": messages})


def write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_a_multi_turn_row_with_the_alpaca_template_is_an_error_naming_the_fix(chat_tokenizer_dir, tmp_path):
    single = {"messages": [ASK, {"role": "assistant", "content": "five"}]}
    path = write(tmp_path / "chat.jsonl", [single, {"messages": CHAT}])
    data = InstructionDataModule(str(chat_tokenizer_dir), train_files=path, val_fraction=0.0, max_length=64)
    with pytest.raises(DataError, match=r"row 2: field 'messages': .*needs template: chat.*\(template is alpaca\)"):
        data.setup("fit")
    chat = InstructionDataModule(
        str(chat_tokenizer_dir), train_files=path, val_fraction=0.0, max_length=64, template="chat"
    )
    chat.setup("fit")
    assert len(chat.train_dataset) == 2


def short_pairs(tokenizer_dir, path: str, **options) -> PreferenceDataModule:
    """A preference data module on ``path`` with this file's short lengths, skipping bad rows; ``options`` added."""
    return PreferenceDataModule(
        str(tokenizer_dir), train_files=path, max_length=64, max_prompt_length=32, on_bad_row="skip", **options
    )


def multi_turn_pair() -> dict:
    return {"chosen": CHAT, "rejected": [*CHAT[:-1], {"role": "assistant", "content": "six"}]}


def test_a_file_of_multi_turn_pairs_under_the_alpaca_template_and_skip_is_no_usable_rows(chat_tokenizer_dir, tmp_path):
    """Skipped at read time, on the one bad-row path: the "no usable rows" error naming the template fix, not a
    traceback from an empty tokenised dataset (``Column 'prompt_cut' doesn't exist``)."""
    path = write(tmp_path / "prefs.jsonl", [multi_turn_pair()] * 3)
    data = short_pairs(chat_tokenizer_dir, path)
    with pytest.raises(DataError, match=r"prefs.jsonl has no usable rows \(3 rows, all bad\).*needs template: chat"):
        data.setup("fit")
    mixed = write(
        tmp_path / "mixed.jsonl", [multi_turn_pair(), {"prompt": "Add 2 and 3.", "chosen": "5", "rejected": "6"}]
    )
    kept = short_pairs(chat_tokenizer_dir, mixed, max_skipped_fraction=None)
    kept.setup("fit")
    assert len(kept.train_dataset) == 1 and kept.report.examples[next(iter(kept.report.examples))] == [f"{mixed}:1"]


def test_held_out_multi_turn_pairs_the_template_cannot_hold_are_counted_skips(tmp_path, caplog):
    from evaluation.scoring import HeldOutData, read_preference_pairs

    flat = {"prompt": "Add 2 and 3.", "chosen": "5", "rejected": "6"}
    path = write(tmp_path / "held_out.jsonl", [multi_turn_pair(), flat, flat])
    assert len(read_preference_pairs(HeldOutData(files=path), "alpaca")) == 2
    assert "skipped 1 -- a conversation with several user/assistant exchanges needs template: chat" in caplog.text
    assert len(read_preference_pairs(HeldOutData(files=path), "chat")) == 3


def test_a_mismatched_pair_is_skipped_and_counted_in_a_preference_file(chat_tokenizer_dir, tmp_path):
    good = {"chosen": CHAT, "rejected": [*CHAT[:-1], {"role": "assistant", "content": "six"}]}
    bad = {"chosen": CHAT, "rejected": [ASK, {"role": "assistant", "content": "six"}]}
    path = write(tmp_path / "prefs.jsonl", [good, bad, good])
    data = short_pairs(chat_tokenizer_dir, path, template="chat")
    data.setup("fit")
    assert len(data.train_dataset) == 2
    assert "conversation differs from chosen before the final turn: 1 (e.g. " in data.report.summary()
    assert data.report.examples["conversation differs from chosen before the final turn"] == [f"{path}:2"]


def test_every_turn_needs_a_template_that_extends_its_earlier_renders(chat_tokenizer):
    import copy

    counting = copy.deepcopy(chat_tokenizer)
    # Starts with the number of messages: the render of a longer chat does not extend a shorter one's.
    counting.chat_template = "{{ messages | length }}" + CHAT_TEMPLATE
    record = example({"messages": CHAT}, parse_instruction_row)
    with pytest.raises(DataError, match="use assistant_turns: last"):
        tokenize_instruction(record, counting, "chat", 64, "all")
    assert tokenize_instruction(record, counting, "chat", 64)["length"] > 0  # "last" needs no such property
