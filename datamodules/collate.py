"""Batch collation: right-pad each batch to its own longest row, or pack rows padding-free.

Padded batches are ``(B, T)`` with ``attention_mask``; packed batches are ``(1, sum of lengths)``
with ``position_ids`` restarting at 0 for every row and no ``attention_mask``, which transformers
turns into a block-diagonal causal mask (no attention across rows), so no compute is spent on
padding. ``labels`` are aligned with ``input_ids`` (Hugging Face convention): the model shifts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from common.constants import IGNORE_INDEX


def pad_right(rows: list[list[int]], value: int) -> torch.Tensor:
    """Stack variable-length rows into ``(B, T_max)``, filling the tail with ``value``."""
    longest = max(len(row) for row in rows)
    out = torch.full((len(rows), longest), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


EXAMPLE_LENGTHS = "example_lengths"
"""Packed batches' key of ``[[n0, n1, ...]]``: the examples' lengths as Python ints, which stay on the host when
Lightning moves the batch's tensors to the device, so the packed attention reads them in every layer without a copy
from the device (``lightning_modules.packed_attention``)."""


def build_batch(input_rows: list[list[int]], label_rows: list[list[int]], pad_token_id: int, pack: bool) -> dict:
    """Padded or packed tensors for rows of ``input_ids`` and their ``labels``.

    Two rows ``[a b c]`` and ``[d e]`` (``p``: prompt tokens, labelled ``-100``; ``_``: pad)::

        padded (B, T)                      packed (1, N): the rows end to end, no padding
        input_ids      [[a b c],           input_ids      [[a b c d e]]
                        [d e _]]           position_ids   [[0 1 2 0 1]]   <- restarts at 0: a new row
        attention_mask [[1 1 1],           row_lengths     [3 2]
                        [1 1 0]]           (no attention_mask: attention stays inside each row)
        labels         [[-100 b c],        labels         [[-100 b c -100 e]]
                        [-100 e -100]]

    Returns:
        ``input_ids``, ``labels``, ``num_loss_tokens`` (response tokens, for normalising) and
        ``num_real_tokens`` (non-pad tokens, for throughput); plus ``attention_mask`` when padded,
        or ``position_ids``, ``row_lengths`` and :data:`EXAMPLE_LENGTHS` when packed.
    """
    lengths = [len(row) for row in input_rows]
    num_loss_tokens = sum(sum(label != IGNORE_INDEX for label in row) for row in label_rows)
    if pack:
        batch = {
            "input_ids": torch.tensor([tok for row in input_rows for tok in row], dtype=torch.long)[None],  # (1, N)
            "labels": torch.tensor([tok for row in label_rows for tok in row], dtype=torch.long)[None],  # (1, N)
            "position_ids": torch.cat([torch.arange(n) for n in lengths])[None],  # (1, N)
            "row_lengths": torch.tensor(lengths, dtype=torch.long),  # (B,)
            EXAMPLE_LENGTHS: [lengths],  # the same as Python ints, per packed row: the attention's (host) copy
        }
    else:
        input_ids = pad_right(input_rows, pad_token_id)  # (B, T)
        batch = {
            "input_ids": input_ids,
            "labels": pad_right(label_rows, IGNORE_INDEX),  # (B, T)
            "attention_mask": pad_right([[1] * n for n in lengths], 0),  # (B, T)
        }
    batch["num_loss_tokens"] = torch.tensor(num_loss_tokens)
    batch["num_real_tokens"] = torch.tensor(sum(lengths))
    return batch


RESPONSE_SOURCES, RESPONSE_TARGETS, RESPONSE_ROWS = "response_sources", "response_targets", "response_rows"
"""A shared-prompt batch's ``(M,)`` response tokens, in row order (the B chosen rows, then the B rejected): the flat
position whose hidden state predicts each, the token, and its row. Its first rejected token is predicted from the
prompt's last position, not from the token before it in the sequence, so the usual shift of ``labels`` does not
hold there."""


def build_shared_prompt_batch(examples: list[dict]) -> dict:
    """One packed ``(1, N)`` row holding each pair's prompt once: ``prompt, chosen, rejected`` per pair.

    Prefix sharing (Wang et al. 2024, "Accelerating Direct Preference Optimization with Prefix Sharing",
    https://arxiv.org/abs/2410.20305): the prompt's tokens are computed once for both responses. The rejected
    response continues the prompt's positions and attends to the prompt and to itself, never to the chosen one,
    so every response token sees exactly what it sees in its own row ``prompt + response``. One pair, prompt
    ``p q``, chosen ``a b``, rejected ``x y z``::

        input_ids     p q a b x y z
        position_ids  0 1 2 3 2 3 4        <- the rejected response restarts after the prompt
        rows          pair 0 chosen = prompt + a b (row 0); pair 0 rejected = prompt + x y z (row B)
        response tokens a b x y z are predicted from positions 1 2 1 4 5 (x from q, the prompt's last token)

    :data:`EXAMPLE_LENGTHS` holds ``(prompt, chosen, rejected)`` lengths per pair, which the packed attention
    (``lightning_modules.packed_attention``) reads; ``row_lengths`` the 2B rows' lengths as the unshared batch has
    them (``prompt + response``), and ``num_real_tokens`` their sum: throughput counts the data's tokens, so the
    tokens sharing does not compute show as speed. ``labels`` mark the response tokens (for counting; the loss
    reads :data:`RESPONSE_SOURCES` and its companions).

    Raises:
        ValueError: a pair with an empty prompt (nothing to share, and no position to predict its first token).
    """
    ids, positions, labels, segments = [], [], [], []
    chosen_rows, rejected_rows = [], []  # per pair: (sources, targets)
    for example in examples:
        prompt, chosen, rejected = example["prompt_ids"], example["chosen_ids"], example["rejected_ids"]
        if not prompt:
            raise ValueError(f"share_prompt: pair {example.get('pair_index')} has an empty prompt")
        start, n_prompt, n_chosen = len(ids), len(prompt), len(chosen)
        ids += prompt + chosen + rejected
        positions += [*range(n_prompt + n_chosen), *range(n_prompt, n_prompt + len(rejected))]
        labels += [IGNORE_INDEX] * n_prompt + chosen + rejected
        last_prompt = start + n_prompt - 1
        chosen_rows.append(([last_prompt + j for j in range(n_chosen)], chosen))
        after_chosen = last_prompt + n_chosen  # the rejected tokens follow the chosen ones in the sequence
        rejected_rows.append(([last_prompt] + [after_chosen + j for j in range(1, len(rejected))], rejected))
        segments.append((n_prompt, n_chosen, len(rejected)))
    rows = chosen_rows + rejected_rows
    row_lengths = [p + c for p, c, _ in segments] + [p + r for p, _, r in segments]
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long)[None],  # (1, N)
        "labels": torch.tensor(labels, dtype=torch.long)[None],  # (1, N)
        "position_ids": torch.tensor(positions, dtype=torch.long)[None],  # (1, N)
        "row_lengths": torch.tensor(row_lengths, dtype=torch.long),  # (2B,)
        EXAMPLE_LENGTHS: [segments],
        RESPONSE_SOURCES: torch.tensor([i for sources, _ in rows for i in sources], dtype=torch.long),  # (M,)
        RESPONSE_TARGETS: torch.tensor([t for _, targets in rows for t in targets], dtype=torch.long),  # (M,)
        RESPONSE_ROWS: torch.tensor([r for r, (_, targets) in enumerate(rows) for _ in targets], dtype=torch.long),
        "num_loss_tokens": torch.tensor(sum(c + r for _, c, r in segments)),
        "num_real_tokens": torch.tensor(sum(row_lengths)),
    }


@dataclass
class SFTCollator:
    """Collate tokenised instruction examples (``input_ids`` + ``labels``) into one batch."""

    pad_token_id: int
    pack: bool = False

    def __call__(self, examples: list[dict]) -> dict:
        return build_batch(
            [ex["input_ids"] for ex in examples], [ex["labels"] for ex in examples], self.pad_token_id, self.pack
        )


@dataclass
class PreferenceCollator:
    """Collate preference pairs into one batch of ``2B`` rows: the B chosen rows, then the B rejected.

    One forward pass over both halves serves the policy (and the reference); rows ``i`` and
    ``B + i`` are the two answers to the same prompt. Each example holds ``prompt_ids``,
    ``chosen_ids`` and ``rejected_ids`` (responses already end with EOS). For B = 2 pairs::

        row 0   prompt_0 + chosen_0      \
        row 1   prompt_1 + chosen_1      /  chosen half:   logps[:B]
        row 2   prompt_0 + rejected_0    \
        row 3   prompt_1 + rejected_1    /  rejected half: logps[B:]

    Padded, that is a ``(2B, T)`` batch; packed, the four rows end to end in one ``(1, N)`` row (see
    :func:`build_batch`), in the same order; with ``share_prompt`` (packed only), each pair's prompt once, followed
    by its two responses (:func:`build_shared_prompt_batch`), the rows' log-probs unchanged.
    """

    pad_token_id: int
    pack: bool = False
    share_prompt: bool = False

    def __call__(self, examples: list[dict]) -> dict:
        if self.share_prompt:
            batch = build_shared_prompt_batch(examples)
        else:
            inputs, labels = [], []
            for key in ("chosen_ids", "rejected_ids"):
                for ex in examples:
                    prompt, response = ex["prompt_ids"], ex[key]
                    inputs.append(prompt + response)
                    labels.append([IGNORE_INDEX] * len(prompt) + response)
            batch = build_batch(inputs, labels, self.pad_token_id, self.pack)
        if "reference_chosen_logps" in examples[0]:
            for key in ("reference_chosen_logps", "reference_rejected_logps"):
                batch[key] = torch.tensor([ex[key] for ex in examples], dtype=torch.float32)
        batch["pair_index"] = torch.tensor([ex["pair_index"] for ex in examples], dtype=torch.long)
        if "desirable" in examples[0]:  # KTO's unpaired rows: (B,) labels of the first half's completions
            batch["desirable"] = torch.tensor([bool(ex["desirable"]) for ex in examples], dtype=torch.bool)
        return batch
