"""Attention over packed batches: each packed example attends causally to itself only, at its own cost.

A packed batch is ``(1, N)``: several examples laid end to end, ``position_ids`` restarting at 0 at each
(``datamodules.collate.build_batch``). Transformers' stock ``sdpa`` would build an ``(N, N)`` block-diagonal
mask for it; :func:`packed_sdpa_attention` runs one causal call per example instead. The trainers switch a
model to it with :func:`use_packed_sdpa`, which also registers it with transformers.

The examples' lengths reach the attention as Python ints, computed once per batch (:func:`batch_lengths`) and passed
through the decoder's keyword arguments as :data:`LENGTHS_KWARG`, which transformers hands on to every layer's
attention (and to its recompute under gradient checkpointing). Reading them from ``position_ids`` inside the
attention instead would copy a device tensor to the host in every layer: 32 synchronisations of the GPU per forward
of Mistral-7B, 31 more in a checkpointed backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from datamodules.collate import EXAMPLE_LENGTHS

PACKED_SDPA = "sdpa_packed"
"""Attention implementation that runs each packed example on its own (registered by :func:`use_packed_sdpa`)."""
LENGTHS_KWARG = "packed_example_lengths"
"""The decoder keyword argument that carries :func:`batch_lengths` to :func:`packed_sdpa_attention`."""


def packed_lengths(position_ids: torch.Tensor | None, rows: int, length: int) -> list[list[int]]:
    """Length of every example in every row: a new one starts wherever the position does not follow the
    previous one (the rule transformers uses to detect packed rows)."""
    if position_ids is None:
        return [[length]] * rows
    starts = torch.ones(rows, length, dtype=torch.bool, device=position_ids.device)
    starts[:, 1:] = position_ids.expand(rows, -1).diff(dim=-1) != 1
    lengths = []
    for row in starts:
        bounds = torch.nonzero(row).flatten().tolist() + [length]
        lengths.append([end - start for start, end in zip(bounds[:-1], bounds[1:], strict=True)])
    return lengths


def batch_lengths(batch: dict) -> list[list[int]] | None:
    """The length of every packed example of ``batch``, one list per row, as Python ints; ``None`` when the batch is
    padded (it has an ``attention_mask``) or has no ``position_ids``.

    Taken from the collator's :data:`~datamodules.collate.EXAMPLE_LENGTHS` (host ints) when the batch has it;
    otherwise read once from ``row_lengths`` or ``position_ids`` (one host copy for the whole batch: batches built
    elsewhere, such as the GPU check's).
    """
    if "attention_mask" in batch or batch.get("position_ids") is None:
        return None
    if EXAMPLE_LENGTHS in batch:
        return batch[EXAMPLE_LENGTHS]
    if "row_lengths" in batch:
        return [batch["row_lengths"].tolist()]  # the collator packs into one row: [[n0, n1, ...]]
    rows, length = batch["input_ids"].shape
    return packed_lengths(batch["position_ids"], rows, length)


def length_kwargs(model: torch.nn.Module, batch: dict) -> dict[str, list[list[int]]]:
    """``{LENGTHS_KWARG: lengths}`` for a decoder call on ``batch`` when ``model`` runs :data:`PACKED_SDPA` and the
    batch is packed, else ``{}`` (other attention implementations would not know the argument)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "_attn_implementation", None) != PACKED_SDPA:
        return {}
    lengths = batch_lengths(batch)
    return {} if lengths is None else {LENGTHS_KWARG: lengths}


@torch.compiler.disable  # a Python loop over examples of data-dependent lengths: eager inside compiled layers
def packed_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    position_ids: torch.Tensor | None = None,
    packed_example_lengths: list[list[int]] | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """``sdpa`` with causal attention inside each packed example and none across examples.

    Transformers' ``sdpa`` turns a packed ``(1, N)`` batch into an ``(N, N)`` block-diagonal mask: memory and
    compute quadratic in the whole batch and no causal skipping, slower than padding. Here each example is one
    ``is_causal`` call on its piece of ``(B, heads, N, head_dim)``: the same result at the cost of the examples'
    own lengths. Masked batches (padding, a KV cache) and non-causal modules go to the stock ``sdpa``.

    ``packed_example_lengths`` (:data:`LENGTHS_KWARG`): the examples' lengths per row, from :func:`batch_lengths`;
    ``None`` (a plain ``model(...)`` call) reads them from ``position_ids`` here, in every layer.
    """
    rows, _, length, _ = query.shape
    causal = kwargs.get("is_causal", getattr(module, "is_causal", True))
    if attention_mask is not None or key.shape[2] != length or length == 1 or not causal:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    gqa = query.shape[1] != key.shape[1]

    def attend(q, k, v, mask=None):  # (1, heads, n, head_dim) -> the same; no mask: causal
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling, is_causal=mask is None, enable_gqa=gqa
        )

    outputs = []
    row_lengths = packed_example_lengths
    if row_lengths is None:
        row_lengths = packed_lengths(position_ids, rows, length)
    # split (not slicing): its backward is one concatenation, not a zero-filled full-size gradient per example
    for lengths, *row in zip(row_lengths, query.split(1), key.split(1), value.split(1), strict=True):
        sizes = [size for item in lengths for size in piece_sizes(item)]
        queries, keys, values = (t.split(sizes, dim=2) for t in row)
        pieces, i = [], 0
        for item in lengths:
            n = sizes[i]
            pieces.append(attend(queries[i], keys[i], values[i], causal_band(n, sliding_window, query.device)))
            if not isinstance(item, int):  # a shared prompt: the rejected response sees the prompt, then itself
                prompt, _, rejected = item
                k = torch.cat([keys[i][:, :, :prompt], keys[i + 1]], dim=2)
                v = torch.cat([values[i][:, :, :prompt], values[i + 1]], dim=2)
                pieces.append(attend(queries[i + 1], k, v, prefix_mask(prompt, rejected, sliding_window, query.device)))
            i += len(piece_sizes(item))
        outputs.append(torch.cat(pieces, dim=2))  # (1, heads, N, head_dim)
    out = torch.cat(outputs)  # (B, heads, N, head_dim)
    return out.transpose(1, 2).contiguous(), None  # (B, N, heads, head_dim)


def piece_sizes(item: int | tuple[int, int, int]) -> tuple[int, ...]:
    """The pieces of the sequence one packed item covers: an example's length, or a shared-prompt pair's
    ``prompt + chosen`` and ``rejected`` (``datamodules.collate.build_shared_prompt_batch``)."""
    return (item,) if isinstance(item, int) else (item[0] + item[1], item[2])


def causal_band(n: int, sliding_window: int | None, device: torch.device) -> torch.Tensor | None:
    """``None`` (plain causal) unless a sliding window is shorter than the example: then the ``(n, n)`` band."""
    if sliding_window is None or n <= sliding_window:
        return None
    return torch.ones(n, n, dtype=torch.bool, device=device).tril().triu(1 - sliding_window)


def prefix_mask(prompt: int, response: int, sliding_window: int | None, device: torch.device) -> torch.Tensor:
    """``(response, prompt + response)``: which keys each token of a response continuing a shared prompt sees.

    The keys are the prompt's (positions ``0 .. prompt - 1``) then the response's own (positions ``prompt ..``), so
    query ``i`` at position ``prompt + i`` sees key position ``j`` when ``j <= prompt + i`` (and, with a sliding
    window, ``prompt + i - j < window``), exactly as in its own row ``prompt + response``.
    """
    query_positions = torch.arange(prompt, prompt + response, device=device)[:, None]
    key_positions = torch.arange(prompt + response, device=device)[None]
    mask = key_positions <= query_positions
    if sliding_window is not None:
        mask &= query_positions - key_positions < sliding_window
    return mask


def packed_sdpa_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    attention_mask: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor | None:
    """No mask when :func:`packed_sdpa_attention` separates the examples itself (no padding, no cache)."""
    if attention_mask is None and q_length == kv_length and not q_offset and not kv_offset:
        return None
    return sdpa_mask(
        batch_size, q_length, kv_length, q_offset=q_offset, kv_offset=kv_offset, attention_mask=attention_mask, **kwargs
    )


def register_packed_sdpa() -> None:
    """Make :data:`PACKED_SDPA` known to transformers (its attention function and its mask); idempotent.

    Called where the kernel is chosen (:func:`use_packed_sdpa`), not on import: importing a module changes
    nothing in transformers' global registries.
    """
    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    AttentionMaskInterface.register(PACKED_SDPA, packed_sdpa_mask)


def use_packed_sdpa(model: torch.nn.Module) -> None:
    """Switch a model on stock ``sdpa`` to :data:`PACKED_SDPA` (identical results; other implementations are kept)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "_attn_implementation", None) == "sdpa":
        register_packed_sdpa()
        base.set_attn_implementation(PACKED_SDPA)
