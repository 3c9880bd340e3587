"""Collation against literal tensors: padded, packed, and preference batches (chosen rows first)."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from datamodules.collate import PreferenceCollator, SFTCollator

X = -100  # IGNORE_INDEX, short so the literal rows line up
PAD = EOS = 2  # Mistral has no pad token: EOS pads, so padding must be told apart by position

# Two examples of different lengths: BOS, prompt tokens (label X), response tokens, EOS.
LONG = {"input_ids": [1, 5, 6, 7, 2], "labels": [X, X, X, 7, 2]}
SHORT = {"input_ids": [1, 8, 2], "labels": [X, 8, 2]}


def test_sft_padded_batch_is_right_padded_to_the_longest_row():
    batch = SFTCollator(pad_token_id=PAD, pack=False)([LONG, SHORT])
    assert set(batch) == {"input_ids", "labels", "attention_mask", "num_loss_tokens", "num_real_tokens"}
    assert_close(batch["input_ids"], torch.tensor([
        [1, 5, 6, 7, 2],
        [1, 8, 2, PAD, PAD],  # short row, padded with EOS ids
    ]))
    assert_close(batch["labels"], torch.tensor([
        [X, X, X, 7, 2],
        [X, 8, 2, X, X],  # its real EOS keeps its label; the padding does not get one
    ]))
    assert_close(batch["attention_mask"], torch.tensor([
        [1, 1, 1, 1, 1],
        [1, 1, 1, 0, 0],
    ]))
    assert batch["num_loss_tokens"].item() == 4  # 7, 2 | 8, 2
    assert batch["num_real_tokens"].item() == 8  # 5 + 3, padding excluded


def test_sft_packed_batch_is_one_row_with_restarting_positions():
    batch = SFTCollator(pad_token_id=PAD, pack=True)([LONG, SHORT])
    assert "attention_mask" not in batch  # transformers derives the block-diagonal mask from position_ids
    assert_close(batch["input_ids"], torch.tensor([[1, 5, 6, 7, 2, 1, 8, 2]]))  # (1, 5 + 3)
    assert_close(batch["labels"], torch.tensor([[X, X, X, 7, 2, X, 8, 2]]))
    assert_close(batch["position_ids"], torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]]))  # restart per row
    assert_close(batch["row_lengths"], torch.tensor([5, 3]))
    assert batch["example_lengths"] == [[5, 3]]  # Python ints for the attention: they stay on the host
    assert batch["num_loss_tokens"].item() == 4
    assert batch["num_real_tokens"].item() == 8


PAIRS = [
    # prompt [1, 5]; chosen "6 </s>"; rejected "7 8 </s>"
    {"prompt_ids": [1, 5], "chosen_ids": [6, 2], "rejected_ids": [7, 8, 2], "pair_index": 0},
    # prompt [1, 9, 10]; chosen "11 </s>"; rejected just "</s>"
    {"prompt_ids": [1, 9, 10], "chosen_ids": [11, 2], "rejected_ids": [2], "pair_index": 1},
]


def test_preference_batch_has_chosen_rows_then_rejected_rows():
    batch = PreferenceCollator(pad_token_id=0, pack=False)(PAIRS)
    assert_close(batch["input_ids"], torch.tensor([
        [1, 5, 6, 2, 0],  # chosen of pair 0
        [1, 9, 10, 11, 2],  # chosen of pair 1
        [1, 5, 7, 8, 2],  # rejected of pair 0 (row B + 0)
        [1, 9, 10, 2, 0],  # rejected of pair 1 (row B + 1)
    ]))
    assert_close(batch["labels"], torch.tensor([
        [X, X, 6, 2, X],
        [X, X, X, 11, 2],
        [X, X, 7, 8, 2],
        [X, X, X, 2, X],
    ]))
    assert_close(batch["attention_mask"], torch.tensor([
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0],
    ]))
    assert_close(batch["pair_index"], torch.tensor([0, 1]))
    assert batch["num_loss_tokens"].item() == 8  # 2 + 2 + 3 + 1
    assert batch["num_real_tokens"].item() == 18  # 4 + 5 + 5 + 4
    assert "reference_chosen_logps" not in batch


def test_preference_batch_packed_and_with_reference_logps():
    pairs = [
        {**pair, "reference_chosen_logps": chosen, "reference_rejected_logps": rejected}
        for pair, chosen, rejected in zip(PAIRS, [-1.5, -2.0], [-3.0, -0.5], strict=True)
    ]
    batch = PreferenceCollator(pad_token_id=0, pack=True)(pairs)
    assert_close(batch["input_ids"], torch.tensor([[
        1, 5, 6, 2,  # chosen 0
        1, 9, 10, 11, 2,  # chosen 1
        1, 5, 7, 8, 2,  # rejected 0
        1, 9, 10, 2,  # rejected 1
    ]]))
    assert_close(batch["labels"], torch.tensor([[X, X, 6, 2, X, X, X, 11, 2, X, X, 7, 8, 2, X, X, X, 2]]))
    assert_close(batch["position_ids"], torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2, 3]]))
    assert_close(batch["row_lengths"], torch.tensor([4, 5, 5, 4]))
    assert batch["example_lengths"] == [[4, 5, 5, 4]]
    assert_close(batch["reference_chosen_logps"], torch.tensor([-1.5, -2.0]))
    assert_close(batch["reference_rejected_logps"], torch.tensor([-3.0, -0.5]))
