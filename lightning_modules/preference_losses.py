"""The preference losses, one pure function each, and the registry the modules look them up in.

Every loss takes a :class:`PairLogps` (per-sequence summed log-probs of the chosen and rejected responses
under the policy and, where the loss needs it, the frozen reference, plus the response lengths) and returns
a :class:`LossTerms`: per-pair losses ``(B,)``, the implicit rewards it defines, and the numbers its paper
reports. Nothing here knows about models or batches. A run trains on a weighted list of them,
``loss = sum_k w_k * mean_i losses_k[i]`` (:func:`combine`; TRL's ``loss_type`` list with ``loss_weights``).

Adding a loss is one function and one line in :data:`LOSSES`. Its keyword-only arguments are its options: the
config (``model.losses``, :class:`~common.settings.LossTerm`) may set exactly those, and the function checks
their values.

Notation in the formulas: ``pi_c, pi_r`` the policy's summed log-probs of the chosen and rejected responses,
``ref_c, ref_r`` the reference's, ``|y_c|, |y_r|`` their token counts, ``h = (pi_c - ref_c) - (pi_r - ref_r)``,
``sigma`` the logistic function and ``eps`` the label smoothing. Where TRL 1.x has the same loss
(``DPOConfig.loss_type``), the formula here is TRL's, and the tests check both on the same numbers.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PairLogps:
    """The log-probs a pairwise preference loss is a function of; every tensor is ``(B,)`` fp32.

    Attributes:
        policy_chosen: ``pi_c``, summed log p_policy(y_c | x).
        policy_rejected: ``pi_r``.
        chosen_lengths: ``|y_c|``, response token counts.
        rejected_lengths: ``|y_r|``.
        reference_chosen: ``ref_c``; ``None`` when no loss of the run needs the reference.
        reference_rejected: ``ref_r``.
        policy_chosen_tail: the part of ``pi_c`` from the chosen response's tokens beyond the pair's shared length
            ``l_p = min(|y_c|, |y_r|)`` (for ``ld_alpha``); ``None`` when no loss of the run uses it.
        policy_rejected_tail: the same part of ``pi_r``.
        chosen_wpo_log_weight: WPO's ``(1 / |y_c|) sum_t log(p(y_t) / sum_v p(v)^2)`` under the policy (detached;
            for ``wpo``); ``None`` when no loss of the run uses it.
        rejected_wpo_log_weight: the same for the rejected response.
    """

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor
    reference_chosen: torch.Tensor | None = None
    reference_rejected: torch.Tensor | None = None
    policy_chosen_tail: torch.Tensor | None = None
    policy_rejected_tail: torch.Tensor | None = None
    chosen_wpo_log_weight: torch.Tensor | None = None
    rejected_wpo_log_weight: torch.Tensor | None = None

    def logratios(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pi_c - ref_c, pi_r - ref_r)``, each ``(B,)``."""
        if self.reference_chosen is None or self.reference_rejected is None:
            raise ValueError("this loss compares the policy with the reference, but no reference log-probs were given.")
        return self.policy_chosen - self.reference_chosen, self.policy_rejected - self.reference_rejected

    def mean_logps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Length-normalised policy log-probs ``(pi_c / |y_c|, pi_r / |y_r|)``, each ``(B,)``."""
        chosen = self.policy_chosen / self.chosen_lengths.clamp(min=1)
        return chosen, self.policy_rejected / self.rejected_lengths.clamp(min=1)

    def length_desensitised(self, alpha: float) -> PairLogps:
        """LD-DPO, Liu et al. 2024 (https://arxiv.org/abs/2409.06411): the policy's log-probs with the tokens
        beyond the pair's shared length ``l_p`` down-weighted by ``alpha``.

        ``pi' = sum_{t <= l_p} log p(y_t) + alpha * sum_{t > l_p} log p(y_t) = pi - (1 - alpha) * tail``, for the
        chosen and the rejected response; the reference's log-probs are left whole (as TRL's ``ld_alpha``, so a
        precomputed reference cache serves with and without it). ``alpha`` is in [0, 1]; 1 is the loss without
        it. TRL's padded path counts the positions from the start of the prompt + completion row, so its split is the
        response's first ``l_p`` tokens only when the prompt is empty; this counts them from the response's first
        token, as the paper defines ``l_p``.
        """
        if self.policy_chosen_tail is None or self.policy_rejected_tail is None:
            raise ValueError("ld_alpha needs the log-probs beyond the shared length, which were not computed.")
        return replace(
            self,
            policy_chosen=self.policy_chosen - (1 - alpha) * self.policy_chosen_tail,
            policy_rejected=self.policy_rejected - (1 - alpha) * self.policy_rejected_tail,
        )

    def wpo_weights(self) -> torch.Tensor:
        """WPO's per-pair weights, Zhou et al. 2024 (https://arxiv.org/abs/2406.11827), eq. 2 with TRL's clamp:
        ``w = min(1, exp(w_c + w_r))``, ``w_y = (1 / |y|) sum_t log(p(y_t) / sum_v p(v)^2)`` (``(B,)``, detached).

        A pair the policy itself would likely sample (on-policy-like) weighs up to 1, an off-policy one less.
        """
        if self.chosen_wpo_log_weight is None or self.rejected_wpo_log_weight is None:
            raise ValueError("wpo needs the policy's per-token WPO log-weights, which were not computed.")
        return torch.exp(self.chosen_wpo_log_weight + self.rejected_wpo_log_weight).clamp(max=1).detach()


@dataclass
class LossTerms:
    """What one loss gives for a batch of pairs.

    Attributes:
        losses: ``(B,)`` per-pair losses (the batch loss is their mean).
        chosen_rewards: ``(B,)`` implicit rewards of the chosen responses (detached), ``None`` if the loss
            defines none (``sft``).
        rejected_rewards: ``(B,)`` the same for the rejected responses.
        metrics: scalars its paper reports (detached), logged as ``<stage>/<name>``.
    """

    losses: torch.Tensor
    chosen_rewards: torch.Tensor | None = None
    rejected_rewards: torch.Tensor | None = None
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


# ---- helpers shared by several losses ------------------------------------------------------------------------


def _check_beta(beta: float, strictly_positive: bool = False) -> None:
    if beta < 0 or (strictly_positive and beta == 0):
        raise ValueError(f"beta must be {'> 0' if strictly_positive else '>= 0'}, got {beta}.")


def _check_smoothing(label_smoothing: float, low: float, high: float, high_open: bool = False) -> None:
    inside = low <= label_smoothing < high if high_open else low <= label_smoothing <= high
    if not inside:
        bracket = ")" if high_open else "]"
        raise ValueError(f"label_smoothing must be in [{low}, {high}{bracket}, got {label_smoothing}.")


def _with_reference_rewards(losses: torch.Tensor, logps: PairLogps, beta: float) -> LossTerms:
    """The DPO family's implicit rewards ``beta * (pi - ref)`` (summed, as TRL logs them) beside the losses."""
    chosen, rejected = logps.logratios()
    return LossTerms(losses, beta * chosen.detach(), beta * rejected.detach())


def _token_level_nll(logps: PairLogps) -> torch.Tensor:
    """``(B,)`` shares of the chosen tokens' NLL whose *mean* is ``-sum_i pi_c^i / sum_i |y_c^i|``.

    The NLL of SFT, RPO and ORPO is normalised over the batch's chosen tokens (a long answer weighs more, as in
    SFT), not per pair; each pair's share is ``-pi_c^i * B / sum_j |y_c^j|``, so that the batch mean every
    loss goes through gives exactly that token-level value.
    """
    pairs = logps.policy_chosen.shape[0]
    return -logps.policy_chosen * pairs / logps.chosen_lengths.sum().clamp(min=1)


# ---- the DPO family: a reference, a function of the log-ratios --------------------------------------------------


def sigmoid(logps: PairLogps, *, beta: float = 0.1, label_smoothing: float = 0.0) -> LossTerms:
    """DPO, Rafailov et al. 2023 (https://arxiv.org/abs/2305.18290), eq. 7, with cDPO's label smoothing.

    ``loss = -(1 - eps) * log sigma(beta * h) - eps * log sigma(-beta * h)``

    ``eps`` is the assumed rate of flipped labels (conservative DPO, Mitchell 2023,
    https://ericmitchell.ai/cdpo.pdf), in [0, 0.5]; at 0 this is TRL's ``sigmoid`` (which dropped smoothing).
    Equal log-ratios give ``ln 2``.
    """
    _check_beta(beta)
    _check_smoothing(label_smoothing, 0.0, 0.5)
    chosen, rejected = logps.logratios()
    h = chosen - rejected  # (B,)
    losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    return _with_reference_rewards(losses, logps, beta)


def robust(logps: PairLogps, *, beta: float = 0.1, label_smoothing: float = 0.0) -> LossTerms:
    """Robust DPO, Chowdhury et al. 2024 (https://arxiv.org/abs/2403.00409), eq. 10: unbiased under label flips of
    rate ``eps`` in [0, 0.5).

    ``loss = (-(1 - eps) * log sigma(beta * h) + eps * log sigma(-beta * h)) / (1 - 2 * eps)``
    """
    _check_beta(beta)
    _check_smoothing(label_smoothing, 0.0, 0.5, high_open=True)
    chosen, rejected = logps.logratios()
    h = chosen - rejected
    eps = label_smoothing
    losses = (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)
    return _with_reference_rewards(losses, logps, beta)


def hinge(logps: PairLogps, *, beta: float = 0.1) -> LossTerms:
    """SLiC's calibration loss, Zhao et al. 2023 (https://arxiv.org/abs/2305.10425), on DPO's log-ratios.

    ``loss = relu(1 - beta * h)``
    """
    _check_beta(beta)
    chosen, rejected = logps.logratios()
    return _with_reference_rewards(torch.relu(1 - beta * (chosen - rejected)), logps, beta)


def ipo(logps: PairLogps, *, beta: float = 0.1) -> LossTerms:
    """IPO, Azar et al. 2023 (https://arxiv.org/abs/2310.12036), eq. 17, on length-normalised log-ratios (TRL's
    ``ipo``; the IPO authors told TRL their results use this form).

    ``loss = ((pi_c - ref_c) / |y_c| - (pi_r - ref_r) / |y_r| - 1 / (2 * beta)) ** 2``, ``beta`` the paper's tau.
    """
    _check_beta(beta, strictly_positive=True)
    chosen, rejected = logps.logratios()
    normalised = chosen / logps.chosen_lengths.clamp(min=1) - rejected / logps.rejected_lengths.clamp(min=1)
    return _with_reference_rewards((normalised - 1 / (2 * beta)) ** 2, logps, beta)


def ipo_sum(logps: PairLogps, *, beta: float = 0.1) -> LossTerms:
    """IPO as eq. 17 of the paper reads, on the summed log-ratios (Azar et al. 2023, https://arxiv.org/abs/2310.12036).

    ``loss = (h - 1 / (2 * beta)) ** 2``: the square grows with the responses' length, so a beta tuned for
    :func:`ipo` is far too small here.
    """
    _check_beta(beta, strictly_positive=True)
    chosen, rejected = logps.logratios()
    return _with_reference_rewards((chosen - rejected - 1 / (2 * beta)) ** 2, logps, beta)


def exo_pair(logps: PairLogps, *, beta: float = 0.1, label_smoothing: float = 1e-3) -> LossTerms:
    """EXO, Ji et al. 2024 (https://arxiv.org/abs/2402.00856), eq. 16 for two responses: the reverse KL from the
    policy's preference ``q = sigma(beta * h)`` to the labels' ``(1 - eps, eps)``.

    ``loss = q * (log q - log(1 - eps)) + (1 - q) * (log(1 - q) - log eps)``, ``eps`` in (0, 0.5] (the paper:
    1e-3; at 0 the loss is infinite).
    """
    _check_beta(beta)
    if not 0.0 < label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing (EXO's eps) must be in (0, 0.5], got {label_smoothing}.")
    chosen, rejected = logps.logratios()
    logits = beta * (chosen - rejected)
    q_chosen, q_rejected = torch.sigmoid(logits), torch.sigmoid(-logits)
    losses = q_chosen * (F.logsigmoid(logits) - math.log1p(-label_smoothing)) + q_rejected * (
        F.logsigmoid(-logits) - math.log(label_smoothing)
    )
    return _with_reference_rewards(losses, logps, beta)


def nca_pair(logps: PairLogps, *, beta: float = 0.1) -> LossTerms:
    """NCA, Chen et al. 2024 (https://arxiv.org/abs/2402.05369), eq. 12 for two responses: each response's own
    reward, not only their gap, so the chosen one's likelihood is pushed up.

    ``loss = -log sigma(r_c) - 0.5 * log sigma(-r_c) - 0.5 * log sigma(-r_r)``, ``r = beta * (pi - ref)``.
    """
    _check_beta(beta)
    chosen, rejected = logps.logratios()
    r_c, r_r = beta * chosen, beta * rejected
    losses = -F.logsigmoid(r_c) - 0.5 * F.logsigmoid(-r_c) - 0.5 * F.logsigmoid(-r_r)
    return _with_reference_rewards(losses, logps, beta)


def bco_pair(logps: PairLogps, *, beta: float = 0.1) -> LossTerms:
    """BCO on pairs, Jung et al. 2024 (https://arxiv.org/abs/2404.04656), as TRL's ``bco_pair`` (without the
    paper's running-mean reward shift): a binary classifier of chosen (reward > 0) against rejected (< 0).

    ``loss = -log sigma(r_c) - log sigma(-r_r)``, ``r = beta * (pi - ref)``.
    """
    _check_beta(beta)
    chosen, rejected = logps.logratios()
    losses = -F.logsigmoid(beta * chosen) - F.logsigmoid(-beta * rejected)
    return _with_reference_rewards(losses, logps, beta)


def sppo_hard(logps: PairLogps, *, beta: float = 0.1) -> LossTerms:
    """SPPO with hard win probabilities, Wu et al. 2024 (https://arxiv.org/abs/2405.00675), eq. 4.7 with P = 1 for
    the chosen and 0 for the rejected response (TRL's ``sppo_hard``).

    ``loss = (pi_c - ref_c - 1 / (2 * beta)) ** 2 + (pi_r - ref_r + 1 / (2 * beta)) ** 2``
    """
    _check_beta(beta, strictly_positive=True)
    chosen, rejected = logps.logratios()
    losses = (chosen - 0.5 / beta) ** 2 + (rejected + 0.5 / beta) ** 2
    return _with_reference_rewards(losses, logps, beta)


def aot_pair(logps: PairLogps, *, beta: float = 0.1, label_smoothing: float = 0.0) -> LossTerms:
    """AOT (paired), Melnyk et al. 2024 (https://arxiv.org/abs/2406.05882): DPO's loss on the *sorted* margins, a
    distributional (first-order stochastic) dominance of the policy's margins over the reference's (TRL's ``aot``).

    ``d = sort_i(pi_c - pi_r) - sort_i(ref_c - ref_r)``,
    ``loss = -(1 - eps) log sigma(beta d) - eps log sigma(-beta d)``.
    The losses are per rank of the sorted batch, not per pair; their mean is the batch loss.
    """
    _check_beta(beta)
    _check_smoothing(label_smoothing, 0.0, 0.5)
    logps.logratios()  # a reference is needed
    policy_margins, _ = torch.sort(logps.policy_chosen - logps.policy_rejected)
    reference_margins, _ = torch.sort(logps.reference_chosen - logps.reference_rejected)
    d = beta * (policy_margins - reference_margins)
    losses = -(1 - label_smoothing) * F.logsigmoid(d) - label_smoothing * F.logsigmoid(-d)
    return _with_reference_rewards(losses, logps, beta)


def aot_unpaired(logps: PairLogps, *, beta: float = 0.1, label_smoothing: float = 0.0) -> LossTerms:
    """AOT (unpaired), Melnyk et al. 2024 (https://arxiv.org/abs/2406.05882): the chosen log-ratios, sorted, must
    dominate the rejected ones, sorted (TRL's ``aot_unpaired``).

    ``d = sort_i(pi_c - ref_c) - sort_i(pi_r - ref_r)``,
    ``loss = -(1 - eps) log sigma(beta d) - eps log sigma(-beta d)``.
    """
    _check_beta(beta)
    _check_smoothing(label_smoothing, 0.0, 0.5)
    chosen, rejected = logps.logratios()
    d = beta * (torch.sort(chosen).values - torch.sort(rejected).values)
    losses = -(1 - label_smoothing) * F.logsigmoid(d) - label_smoothing * F.logsigmoid(-d)
    return _with_reference_rewards(losses, logps, beta)


def apo_zero(logps: PairLogps, *, beta: float = 0.1) -> LossTerms:
    """APO-zero, D'Oosterlinck et al. 2024 (https://arxiv.org/abs/2408.06266), eq. 7: for chosen answers better than
    the model's own, raise the chosen likelihood and lower the rejected one.

    ``loss = 1 - sigma(beta * (pi_c - ref_c)) + sigma(beta * (pi_r - ref_r))``
    """
    _check_beta(beta)
    chosen, rejected = logps.logratios()
    losses = 1 - torch.sigmoid(beta * chosen) + torch.sigmoid(beta * rejected)
    return _with_reference_rewards(losses, logps, beta)


def apo_down(logps: PairLogps, *, beta: float = 0.1) -> LossTerms:
    """APO-down, D'Oosterlinck et al. 2024 (https://arxiv.org/abs/2408.06266), eq. 8: for chosen answers worse than
    the model's own, lower both likelihoods, the rejected one more.

    ``loss = sigma(beta * (pi_c - ref_c)) + 1 - sigma(beta * h)``
    """
    _check_beta(beta)
    chosen, rejected = logps.logratios()
    losses = torch.sigmoid(beta * chosen) + 1 - torch.sigmoid(beta * (chosen - rejected))
    return _with_reference_rewards(losses, logps, beta)


def discopop(logps: PairLogps, *, beta: float = 0.1, tau: float = 0.05) -> LossTerms:
    """DiscoPOP, Chris Lu et al. 2024 (https://arxiv.org/abs/2406.08414), eq. 5: the log-ratio-modulated loss, a
    blend of DPO's logistic loss and an exponential one.

    ``z = beta * h``, ``m = sigma(z / tau)``, ``loss = (1 - m) * (-log sigma(z)) + m * exp(-z)`` (the paper: tau 0.05).
    """
    _check_beta(beta)
    if tau <= 0:
        raise ValueError(f"tau (DiscoPOP's temperature) must be > 0, got {tau}.")
    chosen, rejected = logps.logratios()
    z = beta * (chosen - rejected)
    modulation = torch.sigmoid(z / tau)
    losses = (1 - modulation) * -F.logsigmoid(z) + modulation * torch.exp(-z)
    return _with_reference_rewards(losses, logps, beta)


def sigmoid_norm(logps: PairLogps, *, beta: float = 0.1) -> LossTerms:
    """Length-normalised DPO (TRL's ``sigmoid_norm``; the reference-based form of SimPO's normalisation, Meng et al.
    2024, https://arxiv.org/abs/2405.14734, ablation).

    ``loss = -log sigma(beta * ((pi_c - ref_c) / |y_c| - (pi_r - ref_r) / |y_r|))``
    """
    _check_beta(beta)
    chosen, rejected = logps.logratios()
    normalised = chosen / logps.chosen_lengths.clamp(min=1) - rejected / logps.rejected_lengths.clamp(min=1)
    return _with_reference_rewards(-F.logsigmoid(beta * normalised), logps, beta)


# ---- reference-free ----------------------------------------------------------------------------------------------


def simpo(logps: PairLogps, *, beta: float = 2.0, gamma: float = 0.5, label_smoothing: float = 0.0) -> LossTerms:
    """SimPO, Meng et al. 2024 (https://arxiv.org/abs/2405.14734), eq. 6: no reference; the reward is the policy's
    mean token log-prob, and the chosen one must win by a target margin ``gamma``.

    ``z = beta * (pi_c / |y_c| - pi_r / |y_r|) - gamma``, ``loss = -(1 - eps) log sigma(z) - eps log sigma(-z)``
    (TRL's CPO with ``loss_type="simpo"``, ``simpo_gamma = gamma``). The paper's Mistral-7B-Base setting: beta 2.0,
    gamma / beta 0.8, i.e. gamma 1.6. Rewards ``beta * pi / |y|``; ``margin`` is the mean of ``z + gamma``.
    """
    _check_beta(beta)
    _check_smoothing(label_smoothing, 0.0, 0.5)
    chosen_mean, rejected_mean = logps.mean_logps()
    z = beta * (chosen_mean - rejected_mean) - gamma
    losses = -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    chosen_rewards, rejected_rewards = beta * chosen_mean.detach(), beta * rejected_mean.detach()
    return LossTerms(losses, chosen_rewards, rejected_rewards, {"margin": (chosen_rewards - rejected_rewards).mean()})


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, without cancellation on either side of ``-ln 2`` (Maechler 2012)."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo(logps: PairLogps, *, beta: float = 0.1) -> LossTerms:
    """ORPO, Hong et al. 2024 (https://arxiv.org/abs/2403.07691), eqs. 6-7: the chosen tokens' NLL plus ``beta``
    (the paper's lambda) times an odds-ratio term; no reference, and it may start from the base model.

    With mean token log-probs ``a = pi / |y|`` and ``odds(y) = p / (1 - p)``:
    ``log_odds = (a_c - a_r) - (log(1 - exp(a_c)) - log(1 - exp(a_r)))``,
    ``loss = nll - beta * log sigma(log_odds)``, ``nll = -sum_i pi_c^i / sum_i |y_c^i|`` over the batch
    (TRL's ORPOTrainer). Rewards ``beta * a``; logs ``nll``, ``log_odds_ratio`` (mean ``log sigma(log_odds)``) and
    ``log_odds_chosen`` (mean ``log_odds``) as TRL does.
    """
    _check_beta(beta)
    chosen_mean, rejected_mean = logps.mean_logps()
    # a mean log-prob of exactly 0 (p = 1) has infinite odds; keep it finite
    chosen_mean, rejected_mean = chosen_mean.clamp(max=-1e-6), rejected_mean.clamp(max=-1e-6)
    log_odds = (chosen_mean - rejected_mean) - (_log1mexp(chosen_mean) - _log1mexp(rejected_mean))  # (B,)
    ratio = F.logsigmoid(log_odds)
    nll = _token_level_nll(logps)
    metrics = {
        "nll": nll.detach().mean(),
        "log_odds_ratio": ratio.detach().mean(),
        "log_odds_chosen": log_odds.detach().mean(),
    }
    return LossTerms(nll - beta * ratio, beta * chosen_mean.detach(), beta * rejected_mean.detach(), metrics)


def sft(logps: PairLogps) -> LossTerms:
    """The chosen responses' token-level NLL: SFT on the chosen answers (TRL's ``sft`` in the loss list).

    ``loss = -sum_i pi_c^i / sum_i |y_c^i|`` over the batch (as the SFT stage normalises). Beside a DPO loss with
    weight ``alpha`` it is RPO (Pang et al. 2024, https://arxiv.org/abs/2404.19733): DPO alone only widens the gap
    and often lowers both likelihoods; the NLL keeps the chosen answers likely. Logged as ``nll``.
    """
    nll = _token_level_nll(logps)
    return LossTerms(nll, metrics={"nll": nll.detach().mean()})


# ---- unpaired: KTO -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnpairedLogps:
    """The log-probs of KTO's unpaired rows; every tensor is ``(B,)`` (summed log-probs, fp32).

    Attributes:
        policy: ``pi``, log p_policy(y | x) of each row's own completion.
        reference: ``ref``, the same under the reference.
        policy_kl: log p_policy(y' | x) of a mismatched completion ``y'`` (another row's) for the same prompt.
        reference_kl: the same under the reference.
        desirable: ``True`` where the completion is desirable, ``False`` where undesirable.
    """

    policy: torch.Tensor
    reference: torch.Tensor
    policy_kl: torch.Tensor
    reference_kl: torch.Tensor
    desirable: torch.Tensor


def kto(
    logps: UnpairedLogps, *, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0
) -> LossTerms:
    """KTO, Ethayarajh et al. 2024 (https://arxiv.org/abs/2402.01306), eq. 8, as TRL's KTOTrainer computes it.

    With ``r = pi - ref`` and the reference point ``z_0 = max(0, mean_j (pi(y'_j | x_j) - ref(y'_j | x_j)))``, the
    batch's mismatched pairs' mean log-ratio (an estimate of ``KL(pi || ref)``, detached: no gradient flows
    through it):

    * desirable ``y``: ``loss = w_D * (1 - sigma(beta * (r - z_0)))``;
    * undesirable ``y``: ``loss = w_U * (1 - sigma(beta * (z_0 - r)))``.

    The paper advises ``w_D * n_D / (w_U * n_U)`` in [1, 4/3] for ``n_D`` desirable and ``n_U`` undesirable rows.
    Under DDP ``z_0`` is each rank's batch mean (TRL averages it over the ranks).

    Returns:
        :class:`LossTerms` with ``(B,)`` losses; ``chosen_rewards`` are ``beta * r`` of the desirable rows,
        ``rejected_rewards`` of the undesirable ones (either may be empty); metric ``kl`` is ``z_0``.
    """
    _check_beta(beta)
    if desirable_weight < 0 or undesirable_weight < 0:
        raise ValueError(
            f"desirable_weight and undesirable_weight must be >= 0, got {desirable_weight}, {undesirable_weight}."
        )
    kl = (logps.policy_kl - logps.reference_kl).mean().detach().clamp(min=0)  # z_0, a scalar
    logratios = logps.policy - logps.reference  # (B,)
    desirable_losses = desirable_weight * (1 - torch.sigmoid(beta * (logratios - kl)))
    undesirable_losses = undesirable_weight * (1 - torch.sigmoid(beta * (kl - logratios)))
    losses = torch.where(logps.desirable, desirable_losses, undesirable_losses)
    rewards = beta * logratios.detach()
    return LossTerms(losses, rewards[logps.desirable], rewards[~logps.desirable], {"kl": kl})


# ---- the registry ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossSpec:
    """A registered loss.

    Attributes:
        fn: the pure function, ``fn(logps, **options) -> LossTerms``.
        needs_reference: it reads the reference's log-probs; a run whose losses all have ``False`` builds no
            reference (no second model, adapter switch or precomputed pass).
        metrics: names of the scalars it logs besides ``loss``, ``rewards/*`` and ``logps/*``.
    """

    fn: Callable[..., LossTerms]
    needs_reference: bool = True
    metrics: tuple[str, ...] = ()

    def options(self) -> dict[str, object]:
        """Its options with their defaults: the function's keyword-only arguments, and for a loss on the reference's
        log-ratios the :data:`SEQUENCE_OPTIONS` as well."""
        parameters = inspect.signature(self.fn).parameters.values()
        own = {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
        return own | (SEQUENCE_OPTIONS if self.needs_reference else {})


SEQUENCE_OPTIONS: dict[str, object] = {"ld_alpha": None, "wpo": False}
"""Options of every loss on the reference's log-ratios, applied around its function (:class:`WeightedLoss`):
``ld_alpha`` (LD-DPO, :meth:`PairLogps.length_desensitised`; ``None``: off) and ``wpo`` (WPO's per-pair weights,
:meth:`PairLogps.wpo_weights`). TRL sets them for the whole run (``ld_alpha``, ``use_weighting``); here each loss of
the list has its own."""


LOSSES: dict[str, LossSpec] = {
    "sigmoid": LossSpec(sigmoid),
    "robust": LossSpec(robust),
    "hinge": LossSpec(hinge),
    "ipo": LossSpec(ipo),
    "ipo_sum": LossSpec(ipo_sum),
    "exo_pair": LossSpec(exo_pair),
    "nca_pair": LossSpec(nca_pair),
    "bco_pair": LossSpec(bco_pair),
    "sppo_hard": LossSpec(sppo_hard),
    "aot_pair": LossSpec(aot_pair),
    "aot_unpaired": LossSpec(aot_unpaired),
    "apo_zero": LossSpec(apo_zero),
    "apo_down": LossSpec(apo_down),
    "discopop": LossSpec(discopop),
    "sigmoid_norm": LossSpec(sigmoid_norm),
    "simpo": LossSpec(simpo, needs_reference=False, metrics=("margin",)),
    "orpo": LossSpec(orpo, needs_reference=False, metrics=("nll", "log_odds_ratio", "log_odds_chosen")),
    "sft": LossSpec(sft, needs_reference=False, metrics=("nll",)),
}
"""Every pairwise loss by its config name (``model.losses[*].name``)."""


@dataclass(frozen=True)
class WeightedLoss:
    """One resolved entry of a run's loss list: the spec, its weight and every option's value."""

    name: str
    weight: float
    options: dict[str, object]

    @property
    def spec(self) -> LossSpec:
        return LOSSES[self.name]

    @property
    def ld_alpha(self) -> float | None:
        return self.options.get("ld_alpha")  # type: ignore[return-value]

    @property
    def wpo(self) -> bool:
        return bool(self.options.get("wpo", False))

    def __call__(self, logps: PairLogps) -> LossTerms:
        """The loss on ``logps``: LD-DPO's down-weighted tails first (``ld_alpha``), WPO's weights on the per-pair
        losses last (``wpo``; TRL's ``use_weighting``), the loss's own function between."""
        own = {key: value for key, value in self.options.items() if key not in SEQUENCE_OPTIONS}
        if self.ld_alpha is not None:
            if not 0.0 <= self.ld_alpha <= 1.0:
                raise ValueError(f"ld_alpha (LD-DPO's alpha) must be in [0, 1], got {self.ld_alpha}.")
            logps = logps.length_desensitised(self.ld_alpha)
        terms = self.spec.fn(logps, **own)
        if self.wpo:
            weights = logps.wpo_weights()  # (B,)
            metrics = terms.metrics | {"wpo_weight": weights.mean()}
            terms = replace(terms, losses=terms.losses * weights, metrics=metrics)
        return terms


def older_spelling(loss_type: str, label_smoothing: float = 0.0, nll_weight: float = 0.0) -> list[dict[str, object]]:
    """The loss list that the older ``loss_type`` / ``label_smoothing`` / ``nll_weight`` keys stand for: the one loss,
    and ``sft`` at ``nll_weight`` (RPO) when it is above 0."""
    older: list[dict[str, object]] = [{"name": loss_type, "label_smoothing": label_smoothing or None}]
    return older + ([{"name": "sft", "weight": nll_weight}] if nll_weight > 0 else [])


def resolve_losses(entries: Sequence[dict[str, object]], default_beta: float) -> list[WeightedLoss]:
    """Check a loss list and fill in each loss's defaults; ``beta`` defaults to ``default_beta`` (the module's).

    Args:
        entries: ``{"name": ..., "weight": ..., <option>: value | None}`` each; ``None``: the loss's default.
        default_beta: the beta of a loss whose entry sets none.

    Returns:
        The resolved list, in order.

    Raises:
        ValueError: an empty list, an unknown name, a negative weight, an option the loss does not take, or a value
            the loss refuses; the message starts with ``losses[i] (name)``.
    """
    if not entries:
        raise ValueError("losses is empty: name at least one loss, e.g. [{name: sigmoid}].")
    resolved = []
    for index, entry in enumerate(entries):
        entry = dict(entry)
        name, weight = str(entry.pop("name")), float(entry.pop("weight", 1.0))  # type: ignore[arg-type]
        where = f"losses[{index}] ({name})"
        if name == "kto":
            raise ValueError(
                f"{where}: KTO trains on unpaired rows: use lightning_modules.kto.KTOModule with "
                "datamodules.UnpairedDataModule (configs/tiny/kto.yaml)."
            )
        if name not in LOSSES:
            raise ValueError(f"{where}: unknown loss; choose one of {', '.join(LOSSES)}.")
        if weight < 0:
            raise ValueError(f"{where}: weight must be >= 0, got {weight}.")
        defaults = LOSSES[name].options()
        given = {key: value for key, value in entry.items() if value is not None}
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            takes = ", ".join(defaults) or "no options"
            raise ValueError(f"{where}: {', '.join(unknown)} is not an option of {name} (it takes {takes}).")
        options = defaults | ({"beta": default_beta} if "beta" in defaults else {}) | given
        term = WeightedLoss(name, weight, options)
        try:  # the values, checked now rather than at the first step
            term(_probe_logps())
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        resolved.append(term)
    return resolved


def _probe_logps() -> PairLogps:
    """One made-up pair, enough for a loss to check its options' values."""
    value = torch.full((1,), -1.0)
    zero = torch.zeros(1)
    return PairLogps(value, value - 1, torch.ones(1), torch.ones(1), value, value - 1, zero, zero, zero, zero)


def needs_tails(losses: Sequence[WeightedLoss]) -> bool:
    """Whether a loss of the list uses LD-DPO (so the policy's :attr:`PairLogps.policy_chosen_tail` are needed)."""
    return any(loss.ld_alpha is not None for loss in losses)


def needs_wpo_weights(losses: Sequence[WeightedLoss]) -> bool:
    """Whether a loss of the list is WPO-weighted (so the policy's per-token WPO log-weights are needed)."""
    return any(loss.wpo for loss in losses)


def needs_reference(losses: Sequence[WeightedLoss]) -> bool:
    """Whether any loss of the list reads the reference's log-probs."""
    return any(loss.spec.needs_reference for loss in losses)


def metric_names(losses: Sequence[WeightedLoss]) -> tuple[str, ...]:
    """The extra scalars a run on ``losses`` logs: each loss's own, and ``losses/<name>`` when there are several."""
    names = [metric for loss in losses for metric in loss.spec.metrics]
    names += ["wpo_weight"] if needs_wpo_weights(losses) else []
    if len(losses) > 1:
        names += [f"losses/{loss.name}" for loss in losses]
    return tuple(dict.fromkeys(names))


def combine(losses: Sequence[WeightedLoss], logps: PairLogps) -> tuple[torch.Tensor, LossTerms]:
    """The weighted sum ``sum_k w_k * mean_i losses_k[i]`` and what the run logs.

    Returns:
        ``(loss, terms)``: the scalar loss, and a :class:`LossTerms` whose rewards are the first loss's that defines
        rewards (``sft`` defines none), whose ``losses`` are the first loss's per-pair values, and whose metrics are
        every loss's, plus ``losses/<name>`` (each term's batch mean, before its weight) when there are several.
    """
    total = logps.policy_chosen.new_zeros(())
    first: LossTerms | None = None
    rewarded: LossTerms | None = None
    metrics: dict[str, torch.Tensor] = {}
    for loss in losses:
        terms = loss(logps)
        mean = terms.losses.mean()
        total = total + loss.weight * mean
        metrics |= terms.metrics
        if len(losses) > 1:
            metrics[f"losses/{loss.name}"] = mean.detach()
        first = first or terms
        if rewarded is None and terms.chosen_rewards is not None:
            rewarded = terms
    assert first is not None  # resolve_losses refuses an empty list
    source = rewarded or first
    return total, LossTerms(first.losses, source.chosen_rewards, source.rejected_rewards, metrics)
