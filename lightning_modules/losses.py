"""Loss functions of the study, as pure functions of tensors.

Nothing here knows about models, batches or Lightning: each function takes logits or
log-probabilities and returns losses, so every formula can be checked by hand in a test.
The LightningModules do the averaging and logging.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from common.constants import IGNORE_INDEX

DPOLossType = Literal["sigmoid", "robust", "hinge", "ipo"]
DPO_LOSS_TYPES: tuple[str, ...] = ("sigmoid", "robust", "hinge", "ipo")


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


def chosen_nll_loss(policy_chosen_logps: torch.Tensor, chosen_lengths: torch.Tensor) -> torch.Tensor:
    """Token-level negative log-likelihood of the chosen responses, the term RPO adds to DPO.

    ``nll = -sum_i log pi(y_c^i | x^i) / sum_i |y_c^i|``

    RPO (Pang et al. 2024, "Iterative Reasoning Preference Optimization", https://arxiv.org/abs/2404.19733)
    trains on ``dpo + alpha * nll``: DPO alone only widens the *gap* between chosen and rejected, and often
    does so by lowering both, which lets the policy drift to answers that are neither; the NLL term keeps
    the chosen answers likely. Normalised over the batch's chosen tokens, as the SFT loss is (TRL's
    ``rpo_alpha`` does the same).

    Args:
        policy_chosen_logps: ``(B,)`` summed log p_policy(y_c | x).
        chosen_lengths: ``(B,)`` response token counts ``|y_c|``.

    Returns:
        Scalar fp32 loss (0 when the batch holds no chosen token).
    """
    return -policy_chosen_logps.sum() / chosen_lengths.sum().clamp(min=1)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    loss_type: DPOLossType = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Direct Preference Optimization losses, per example.

    All log-probs are per-sequence sums over response tokens, shape ``(B,)``. With
    ``h = (pi_c - ref_c) - (pi_r - ref_r)`` and ``eps = label_smoothing``:

    * ``sigmoid`` -- DPO, Rafailov et al. 2023, https://arxiv.org/abs/2305.18290, with the
      conservative label smoothing of cDPO (Mitchell 2023):
      ``-(1 - eps) * logsigmoid(beta * h) - eps * logsigmoid(-beta * h)``.
    * ``robust`` -- Chowdhury et al. 2024, https://arxiv.org/abs/2403.00409, unbiased under
      label-flip noise of rate ``eps`` in [0, 0.5):
      ``(-(1 - eps) * logsigmoid(beta * h) + eps * logsigmoid(-beta * h)) / (1 - 2 * eps)``.
    * ``hinge`` -- SLiC, Zhao et al. 2023, https://arxiv.org/abs/2305.10425:
      ``relu(1 - beta * h)``.
    * ``ipo`` -- Azar et al. 2023, https://arxiv.org/abs/2310.12036, on length-normalised
      log-ratios: ``((pi_c - ref_c) / |y_c| - (pi_r - ref_r) / |y_r| - 1 / (2 * beta)) ** 2``.

    Args:
        policy_chosen_logps: ``(B,)`` log p_policy(y_c | x).
        policy_rejected_logps: ``(B,)`` log p_policy(y_r | x).
        reference_chosen_logps: ``(B,)`` log p_ref(y_c | x).
        reference_rejected_logps: ``(B,)`` log p_ref(y_r | x).
        beta: strength of the implicit KL penalty (> 0 for ``ipo``, >= 0 otherwise).
        loss_type: one of ``sigmoid``, ``robust``, ``hinge``, ``ipo``.
        label_smoothing: ``eps``, the assumed rate of flipped preference labels: [0, 0.5] for
            ``sigmoid``, [0, 0.5) for ``robust``, 0 for ``hinge`` and ``ipo``.
        chosen_lengths: ``(B,)`` response token counts ``|y_c|``; required for ``ipo``.
        rejected_lengths: ``(B,)`` response token counts ``|y_r|``; required for ``ipo``.

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each ``(B,)``; the rewards are the
        implicit rewards ``beta * (pi - ref)``, detached.

    Raises:
        ValueError: unknown ``loss_type``, negative ``beta``, ``eps`` out of range, or ``ipo``
            without lengths.
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"Unknown DPO loss_type {loss_type!r}; choose one of {', '.join(DPO_LOSS_TYPES)}.")
    if beta < 0 or (loss_type == "ipo" and beta == 0):
        raise ValueError(f"beta must be {'> 0 for ipo' if loss_type == 'ipo' else '>= 0'}, got {beta}.")
    if loss_type == "sigmoid" and not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing (cDPO eps) must be in [0, 0.5], got {label_smoothing}.")
    if loss_type == "robust" and not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing for loss_type='robust' must be in [0, 0.5), got {label_smoothing}.")
    if loss_type in ("hinge", "ipo") and label_smoothing != 0.0:
        raise ValueError(
            f"loss_type={loss_type!r} has no label smoothing; set label_smoothing=0, got {label_smoothing}."
        )

    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    h = chosen_logratios - rejected_logratios
    eps = label_smoothing

    if loss_type == "sigmoid":
        losses = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    elif loss_type == "robust":
        losses = (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)
    else:
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("loss_type='ipo' normalises by response length: pass chosen_lengths and rejected_lengths.")
        normalised = chosen_logratios / chosen_lengths.clamp(min=1) - rejected_logratios / rejected_lengths.clamp(min=1)
        losses = (normalised - 1 / (2 * beta)) ** 2

    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    return losses, chosen_rewards, rejected_rewards


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
