"""Loss functions of the study, as pure functions of tensors.

Nothing here knows about models, batches or Lightning: each function takes logits or
log-probabilities and returns losses, so every formula can be checked by hand in a test.
The LightningModules do the averaging and logging. The pairwise preference losses (DPO and the methods it is
compared with) are in :mod:`lightning_modules.preference_losses`, with their registry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.constants import IGNORE_INDEX


def token_logps(logits: torch.Tensor, targets: torch.Tensor, chunk_size: int = 4096) -> torch.Tensor:
    """Log-probability of each target token, ``log softmax(logits)[target]``.

    Computed as ``logit[target] - logsumexp(logits)`` in fp32, a chunk of positions at a time, so
    the full vocabulary-sized fp32 log-softmax of the batch is never held at once (with bf16
    logits it would be twice the size of the logits themselves).

    Args:
        logits: ``(..., V)`` scores, any float dtype.
        targets: ``(...)`` token ids; must be valid ids (replace ignored positions before calling).
        chunk_size: number of positions converted to fp32 at a time.

    Returns:
        ``(...)`` fp32 log-probabilities.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1])  # (N, V)
    flat_targets = targets.reshape(-1)  # (N,)
    pieces = []
    for start in range(0, flat_logits.shape[0], chunk_size):
        chunk = flat_logits[start : start + chunk_size].float()  # (n, V) fp32
        picked = chunk.gather(-1, flat_targets[start : start + chunk_size, None]).squeeze(-1)
        pieces.append(picked - torch.logsumexp(chunk, dim=-1))
    if not pieces:
        return flat_logits.new_zeros(targets.shape, dtype=torch.float32)
    return torch.cat(pieces).reshape(targets.shape)


def wpo_token_log_weights(logits: torch.Tensor, targets: torch.Tensor, chunk_size: int = 4096) -> torch.Tensor:
    """WPO's per-token log-weight, ``log(p(y_t) / sum_v p(v)^2)`` (Zhou et al. 2024, https://arxiv.org/abs/2406.11827,
    eq. 2): the target's probability relative to the distribution's own collision probability, i.e. how typical
    ``y_t`` is of what the policy samples.

    With ``z`` the logits, ``log p(y_t) - log sum_v p(v)^2 = z_t + logsumexp(z) - logsumexp(2 z)``, in fp32, a chunk
    of positions at a time (as :func:`token_logps`). No gradient: WPO's weights are constants of each step.

    Args:
        logits: ``(..., V)`` scores, any float dtype.
        targets: ``(...)`` valid token ids.
        chunk_size: positions converted to fp32 at a time.

    Returns:
        ``(...)`` fp32 log-weights (<= 0 only on average: a token likelier than the collision probability gives > 0).
    """
    flat_logits = logits.detach().reshape(-1, logits.shape[-1])  # (N, V)
    flat_targets = targets.reshape(-1)  # (N,)
    pieces = []
    for start in range(0, flat_logits.shape[0], chunk_size):
        chunk = flat_logits[start : start + chunk_size].float()  # (n, V) fp32
        picked = chunk.gather(-1, flat_targets[start : start + chunk_size, None]).squeeze(-1)
        pieces.append(picked + torch.logsumexp(chunk, dim=-1) - torch.logsumexp(2 * chunk, dim=-1))
    if not pieces:
        return flat_logits.new_zeros(targets.shape, dtype=torch.float32)
    return torch.cat(pieces).reshape(targets.shape)


def pair_tail_logps(per_token: torch.Tensor, row_index: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each response's summed log-probs beyond the pair's shared length ``l_p = min(|y_c|, |y_r|)`` (LD-DPO's
    "excess" part, Liu et al. 2024, https://arxiv.org/abs/2409.06411).

    Args:
        per_token: ``(N,)`` response-token log-probs of a ``2B``-row preference batch (chosen rows first), each row's
            tokens contiguous and in order.
        row_index: ``(N,)`` the row of each token.
        lengths: ``(2B,)`` response token counts.

    Returns:
        ``(2B,)`` sums over each row's tokens at response positions ``>= l_p`` of its pair (0 for the shorter one).
    """
    rows = lengths.shape[0]
    pairs = rows // 2
    shared = torch.minimum(lengths[:pairs], lengths[pairs:]).repeat(2)  # (2B,) l_p of each row's pair
    order = torch.arange(per_token.shape[0], device=per_token.device)  # (N,)
    first = torch.full((rows,), per_token.shape[0], device=per_token.device, dtype=order.dtype)
    first = first.scatter_reduce(0, row_index, order, reduce="amin")  # (2B,) index of each row's first token
    position = order - first[row_index]  # (N,) position within the response
    beyond = position >= shared[row_index]
    return per_token.new_zeros(rows).index_add(0, row_index, per_token * beyond)


def sft_loss(logits: torch.Tensor, labels: torch.Tensor, num_tokens: int | torch.Tensor | None = None) -> torch.Tensor:
    """Token-level cross-entropy over response tokens.

    ``loss = -(1 / N) * sum_{t : labels_t != -100} log p(labels_t | logits_t)``

    ``labels`` are *aligned* with ``logits``: ``labels[..., t]`` is the token that
    ``logits[..., t, :]`` should predict (shift the inputs before calling). Positions labelled
    ``-100`` (prompt, padding) contribute nothing. The sum runs over every response token of the
    batch and is divided by their count ``N``, so a row with a longer response weighs more, as in
    one long document; pass ``num_tokens`` to divide by a count taken over a larger batch (e.g. a
    whole gradient-accumulation window) instead.

    Args:
        logits: ``(..., V)`` scores.
        labels: ``(...)`` target ids or ``-100``.
        num_tokens: normaliser ``N``; defaults to the number of non-ignored labels.

    Returns:
        Scalar fp32 loss (0 when there is no response token, so an empty batch adds no gradient).
    """
    mask = labels != IGNORE_INDEX
    if num_tokens is None:
        num_tokens = mask.sum()
    # Only response positions reach the (vocabulary-sized) softmax.
    logps = token_logps(logits[mask], labels[mask])  # (N,)
    return -logps.sum() / torch.clamp(torch.as_tensor(num_tokens, device=logps.device), min=1)


def sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor, chunk_size: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence sum of response-token log-probabilities, ``sum_t log p(y_t | x, y_<t)``.

    Args:
        logits: ``(B, T, V)`` scores, aligned with ``labels`` (already shifted).
        labels: ``(B, T)`` target ids, ``-100`` outside the response.
        chunk_size: positions converted to fp32 at a time (see :func:`token_logps`).

    Returns:
        ``(logps, lengths)``: ``(B,)`` fp32 summed log-probs and ``(B,)`` response token counts.
    """
    mask = labels != IGNORE_INDEX  # (B, T)
    per_token = torch.zeros(labels.shape, dtype=torch.float32, device=logits.device)
    per_token[mask] = token_logps(logits[mask], labels[mask], chunk_size)
    return per_token.sum(-1), mask.sum(-1)


def bradley_terry_loss(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, margin: torch.Tensor | float | None = None
) -> torch.Tensor:
    """Pairwise reward-model loss, per pair: the negative log-likelihood of the preference.

    Under the Bradley-Terry model (Bradley & Terry 1952) the chosen response wins with probability
    ``sigmoid(r_c - r_r)``; a reward model is fitted by maximising it over the labelled pairs
    (Ouyang et al. 2022, InstructGPT, https://arxiv.org/abs/2203.02155, eq. 1):

    ``loss = -logsigmoid(r_c - r_r - m)``

    with an optional margin ``m`` (Llama 2, Touvron et al. 2023: a larger ``m`` for pairs rated further
    apart). ``logsigmoid`` stays finite for any reward difference: ``-logsigmoid(-100)`` is 100, not inf.
    Equal rewards give ``ln 2``.

    Args:
        chosen_rewards: ``(B,)`` scalar rewards ``r_c`` of the chosen responses.
        rejected_rewards: ``(B,)`` rewards ``r_r`` of the rejected responses to the same prompts.
        margin: ``m``, a number or a ``(B,)`` tensor; ``None``: no margin.

    Returns:
        ``(B,)`` losses (average them for the batch loss).
    """
    difference = chosen_rewards - rejected_rewards  # (B,)
    if margin is not None:
        difference = difference - margin
    return -F.logsigmoid(difference)
