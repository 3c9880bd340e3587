"""Every registered preference loss against its formula, by hand, and against TRL's code for the same loss.

The hand values use one pair picked so the arithmetic is short: pi_c = -3, pi_r = -9, ref_c = -4, ref_r = -6,
|y_c| = 2, |y_r| = 3, so the log-ratios are +1 (chosen) and -3 (rejected) and h = 4. The TRL checks write out
TRL 1.x's lines (trl/trainer/dpo_trainer.py ``_compute_loss``, experimental CPO's ``simpo``, experimental ORPO's
``odds_ratio_loss``) on a random batch, in TRL's own variable names; TRL itself is not imported.
"""

import math
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from common.settings import LossTerm
from lightning_modules.preference_losses import (
    LOSSES,
    PairLogps,
    UnpairedLogps,
    combine,
    kto,
    metric_names,
    needs_reference,
    resolve_losses,
)

PAIR = PairLogps(
    policy_chosen=torch.tensor([-3.0]),
    policy_rejected=torch.tensor([-9.0]),
    chosen_lengths=torch.tensor([2]),
    rejected_lengths=torch.tensor([3]),
    reference_chosen=torch.tensor([-4.0]),
    reference_rejected=torch.tensor([-6.0]),
)
PAIR_REFERENCE = (PAIR.reference_chosen, PAIR.reference_rejected)
H = 4.0  # (pi_c - ref_c) - (pi_r - ref_r) = 1 - (-3)


def logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def sigma(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def value(name: str, logps: PairLogps = PAIR, **options) -> torch.Tensor:
    return LOSSES[name].fn(logps, **options).losses


# ---- each loss by hand ----------------------------------------------------------------------------------------

HAND = {
    # name: (options, expected loss of PAIR)
    "sigmoid": ({"beta": 0.5}, -logsigmoid(0.5 * H)),
    "sigmoid, cDPO eps 0.2": ({"beta": 0.5, "label_smoothing": 0.2}, -0.8 * logsigmoid(2.0) - 0.2 * logsigmoid(-2.0)),
    "robust": ({"beta": 0.5, "label_smoothing": 0.1}, (-0.9 * logsigmoid(2.0) + 0.1 * logsigmoid(-2.0)) / 0.8),
    "hinge": ({"beta": 0.1}, 1 - 0.1 * H),
    "hinge, past the margin": ({"beta": 0.5}, 0.0),  # relu(1 - 2)
    # (1 / 2 - (-3) / 3 - 1 / (2 * 0.25))^2 = (0.5 + 1 - 2)^2
    "ipo": ({"beta": 0.25}, 0.25),
    # (4 - 2)^2
    "ipo_sum": ({"beta": 0.25}, 4.0),
    "exo_pair": (
        {"beta": 0.5, "label_smoothing": 0.01},
        sigma(2.0) * (logsigmoid(2.0) - math.log(0.99)) + sigma(-2.0) * (logsigmoid(-2.0) - math.log(0.01)),
    ),
    # r_c = 0.5, r_r = -1.5
    "nca_pair": ({"beta": 0.5}, -logsigmoid(0.5) - 0.5 * logsigmoid(-0.5) - 0.5 * logsigmoid(1.5)),
    "bco_pair": ({"beta": 0.5}, -logsigmoid(0.5) - logsigmoid(1.5)),
    # (1 - 1)^2 + (-3 + 1)^2 with 1 / (2 * 0.5) = 1
    "sppo_hard": ({"beta": 0.5}, 4.0),
    # one pair: sorting changes nothing; policy margin 6, reference margin 2, d = 4
    "aot_pair": ({"beta": 0.5}, -logsigmoid(2.0)),
    "aot_unpaired": ({"beta": 0.5}, -logsigmoid(2.0)),
    "apo_zero": ({"beta": 0.5}, 1 - sigma(0.5) + sigma(-1.5)),
    "apo_down": ({"beta": 0.5}, sigma(0.5) + 1 - sigma(2.0)),
    # z = 2, m = sigma(2 / 0.05)
    "discopop": ({"beta": 0.5, "tau": 0.05}, (1 - sigma(40.0)) * -logsigmoid(2.0) + sigma(40.0) * math.exp(-2.0)),
    # 0.5 * (1 / 2 - (-3) / 3) = 0.75
    "sigmoid_norm": ({"beta": 0.5}, -logsigmoid(0.75)),
    # mean log-probs -1.5 and -3: z = 2 * 1.5 - 0.5 = 2.5
    "simpo": ({"beta": 2.0, "gamma": 0.5}, -logsigmoid(2.5)),
    # NLL 3 / 2; log odds (-1.5 + 3) - (log(1 - e^-1.5) - log(1 - e^-3))
    "orpo": (
        {"beta": 0.1},
        1.5 - 0.1 * logsigmoid(1.5 - (math.log(1 - math.exp(-1.5)) - math.log(1 - math.exp(-3.0)))),
    ),
    "sft": ({}, 1.5),
}


@pytest.mark.parametrize("case", list(HAND))
def test_each_loss_matches_its_formula_by_hand(case):
    options, expected = HAND[case]
    name = case.split(",")[0]
    assert_close(value(name, **options), torch.tensor([expected]), rtol=1e-6, atol=1e-6)


def test_every_registered_loss_is_checked_by_hand():
    assert {case.split(",")[0] for case in HAND} == set(LOSSES)


def test_the_hand_values_are_what_the_comments_say():
    assert HAND["ipo"][1] == pytest.approx((0.5 + 1 - 2) ** 2)
    assert HAND["hinge"][1] == pytest.approx(0.6)


# ---- the edge cases: the losses' known values -----------------------------------------------------------------


def equal_pairs(reference: bool = True) -> PairLogps:
    """Two pairs whose policy equals the reference, chosen and rejected alike (all log-ratios 0)."""
    logps = torch.tensor([-5.0, -7.5])
    lengths = torch.tensor([4, 6])
    return PairLogps(logps, logps, lengths, lengths, logps if reference else None, logps if reference else None)


@pytest.mark.parametrize(
    "name, options, expected",
    [
        ("sigmoid", {}, math.log(2)),
        ("sigmoid", {"beta": 0.0, "label_smoothing": 0.3}, math.log(2)),  # beta 0: sigma(0) whatever eps
        ("robust", {"label_smoothing": 0.0}, math.log(2)),
        ("hinge", {}, 1.0),
        ("ipo", {"beta": 0.5}, 1.0),  # (0 - 1)^2
        ("ipo_sum", {"beta": 0.5}, 1.0),
        ("bco_pair", {}, 2 * math.log(2)),
        ("nca_pair", {}, 2 * math.log(2)),
        ("apo_zero", {}, 1.0),  # 1 - 1/2 + 1/2
        ("apo_down", {}, 1.0),
        ("discopop", {}, 0.5 * math.log(2) + 0.5),  # m = 1/2: half logistic (ln 2), half exponential (1)
        ("sigmoid_norm", {}, math.log(2)),
        ("simpo", {"gamma": 0.0}, math.log(2)),
        ("simpo", {"gamma": 1.0}, -logsigmoid(-1.0)),
    ],
)
def test_equal_log_probs_give_the_losses_known_values(name, options, expected):
    assert_close(value(name, equal_pairs(), **options), torch.full((2,), expected))


def test_equal_log_ratios_give_zero_rewards():
    terms = LOSSES["sigmoid"].fn(equal_pairs())
    assert terms.chosen_rewards.abs().sum() == 0 and terms.rejected_rewards.abs().sum() == 0


def test_reference_free_losses_need_no_reference_and_the_others_refuse_to_go_without():
    no_reference = equal_pairs(reference=False)
    for name, spec in LOSSES.items():
        if spec.needs_reference:
            with pytest.raises(ValueError, match="no reference"):
                spec.fn(no_reference)
        else:
            assert torch.isfinite(spec.fn(no_reference).losses).all(), name
    assert {name for name, spec in LOSSES.items() if not spec.needs_reference} == {"simpo", "orpo", "sft"}


def test_sft_is_the_token_mean_over_the_batch_not_the_row_mean():
    # chosen responses of 2 and 3 tokens summing to -2 and -6 nats: (2 + 6) / 5 = 1.6 (the row mean would be 1.5)
    rejected = torch.tensor([-1.0, -1.0])
    logps = PairLogps(torch.tensor([-2.0, -6.0]), rejected, torch.tensor([2, 3]), torch.tensor([1, 1]))
    assert_close(value("sft", logps).mean(), torch.tensor(1.6))


def test_the_sft_gradient_is_one_over_the_batchs_chosen_tokens():
    chosen = torch.tensor([-2.0, -6.0], requires_grad=True)
    logps = PairLogps(chosen, torch.tensor([-1.0, -1.0]), torch.tensor([2, 3]), torch.tensor([1, 1]))
    value("sft", logps).mean().backward()
    assert_close(chosen.grad, torch.tensor([-0.2, -0.2]))


@pytest.mark.parametrize("name", [name for name in LOSSES if name != "apo_down"])
def test_raising_the_chosen_log_prob_lowers_the_loss(name):
    # apo_down is left out on purpose: it lowers the chosen likelihood too, when chosen answers are worse than the
    # model's own (its eq. 8); its gradient in pi_c changes sign with the margins.
    chosen = torch.tensor([-3.0], requires_grad=True)
    logps = PairLogps(chosen, PAIR.policy_rejected, PAIR.chosen_lengths, PAIR.rejected_lengths, *PAIR_REFERENCE)
    value(name, logps).sum().backward()
    assert chosen.grad.item() < 0


def test_rewards_are_detached():
    chosen = torch.tensor([-3.0], requires_grad=True)
    logps = PairLogps(chosen, PAIR.policy_rejected, PAIR.chosen_lengths, PAIR.rejected_lengths, *PAIR_REFERENCE)
    for name, spec in LOSSES.items():
        terms = spec.fn(logps)
        assert terms.chosen_rewards is None or not terms.chosen_rewards.requires_grad, name


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("sigmoid", {"beta": -0.1}, "beta must be >= 0"),
        ("ipo", {"beta": 0.0}, "beta must be > 0"),
        ("sppo_hard", {"beta": 0.0}, "beta must be > 0"),
        ("sigmoid", {"label_smoothing": 0.7}, r"label_smoothing must be in \[0.0, 0.5\]"),
        ("robust", {"label_smoothing": 0.5}, r"label_smoothing must be in \[0.0, 0.5\)"),
        ("exo_pair", {"label_smoothing": 0.0}, "EXO's eps"),
        ("discopop", {"tau": 0.0}, "tau"),
    ],
)
def test_bad_option_values_raise(name, options, message):
    with pytest.raises(ValueError, match=message):
        LOSSES[name].fn(PAIR, **options)


# ---- TRL's code for the same losses, written out, on a random batch ---------------------------------------------


def random_batch(seed: int = 0, pairs: int = 6) -> PairLogps:
    generator = torch.Generator().manual_seed(seed)
    logps = -torch.rand(4, pairs, generator=generator, dtype=torch.float64).float() * 20 - 0.5
    lengths = torch.randint(1, 30, (2, pairs), generator=generator)
    return PairLogps(logps[0], logps[1], lengths[0], lengths[1], logps[2], logps[3])


def trl_dpo_losses(loss_type: str, b: PairLogps, beta: float, label_smoothing: float = 0.0, tau: float = 0.05):
    """TRL 1.x ``DPOTrainer._compute_loss``'s per-sequence loss for ``loss_type`` (reverse KL, no WPO / LD)."""
    chosen_logps, rejected_logps = b.policy_chosen, b.policy_rejected
    ref_chosen_logps, ref_rejected_logps = b.reference_chosen, b.reference_rejected
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    chosen_scores, rejected_scores = chosen_logratios, rejected_logratios
    delta_score = chosen_scores - rejected_scores
    chosen_len, rejected_len = b.chosen_lengths.float(), b.rejected_lengths.float()
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * delta_score)
    if loss_type == "hinge":
        return torch.relu(1 - beta * delta_score)
    if loss_type == "ipo":
        ipo_delta = chosen_scores / chosen_len.clamp(min=1.0) - rejected_scores / rejected_len.clamp(min=1.0)
        return (ipo_delta - 1 / (2 * beta)) ** 2
    if loss_type == "exo_pair":
        epsilon = torch.tensor(label_smoothing)
        qw, log_qw = torch.sigmoid(beta * delta_score), F.logsigmoid(beta * delta_score)
        log_pw = torch.log1p(-epsilon)
        ql, log_ql = torch.sigmoid(-beta * delta_score), F.logsigmoid(-beta * delta_score)
        log_pl = torch.log(epsilon)
        return qw * (log_qw - log_pw) + ql * (log_ql - log_pl)
    if loss_type == "nca_pair":
        chosen_rewards, rejected_rewards = beta * chosen_scores, beta * rejected_scores
        return (
            -F.logsigmoid(chosen_rewards) - 0.5 * F.logsigmoid(-chosen_rewards) - 0.5 * F.logsigmoid(-rejected_rewards)
        )
    if loss_type == "robust":
        clean_loss_term = -(1 - label_smoothing) * F.logsigmoid(beta * delta_score)
        flipped_loss_term = -label_smoothing * F.logsigmoid(-beta * delta_score)
        return (clean_loss_term - flipped_loss_term) / (1 - 2 * label_smoothing)
    if loss_type == "bco_pair":
        return -F.logsigmoid(beta * chosen_scores) - F.logsigmoid(-beta * rejected_scores)
    if loss_type == "sppo_hard":
        return (chosen_scores - 0.5 / beta) ** 2 + (rejected_scores + 0.5 / beta) ** 2
    if loss_type == "aot":
        logratios_sorted, _ = torch.sort(chosen_logps - rejected_logps, dim=0)
        ref_logratios_sorted, _ = torch.sort(ref_chosen_logps - ref_rejected_logps, dim=0)
        delta = logratios_sorted - ref_logratios_sorted
        return -F.logsigmoid(beta * delta) * (1 - label_smoothing) - F.logsigmoid(-beta * delta) * label_smoothing
    if loss_type == "aot_unpaired":
        delta = torch.sort(chosen_logratios, dim=0)[0] - torch.sort(rejected_logratios, dim=0)[0]
        return -F.logsigmoid(beta * delta) * (1 - label_smoothing) - F.logsigmoid(-beta * delta) * label_smoothing
    if loss_type == "apo_zero":
        return 1 - torch.sigmoid(beta * chosen_logratios) + torch.sigmoid(beta * rejected_logratios)
    if loss_type == "apo_down":
        return torch.sigmoid(beta * chosen_logratios) + 1 - torch.sigmoid(beta * delta_score)
    if loss_type == "discopop":
        logits = delta_score * beta
        log_ratio_modulation = torch.sigmoid(logits / tau)
        return -F.logsigmoid(logits) * (1 - log_ratio_modulation) + torch.exp(-logits) * log_ratio_modulation
    if loss_type == "sigmoid_norm":
        delta = chosen_scores / chosen_len.clamp(min=1.0) - rejected_scores / rejected_len.clamp(min=1.0)
        return -F.logsigmoid(beta * delta)
    raise AssertionError(loss_type)


TRL_NAMES = {  # ours -> TRL's DPOConfig.loss_type
    "sigmoid": "sigmoid", "robust": "robust", "hinge": "hinge", "ipo": "ipo", "exo_pair": "exo_pair",
    "nca_pair": "nca_pair", "bco_pair": "bco_pair", "sppo_hard": "sppo_hard", "aot_pair": "aot",
    "aot_unpaired": "aot_unpaired", "apo_zero": "apo_zero", "apo_down": "apo_down", "discopop": "discopop",
    "sigmoid_norm": "sigmoid_norm",
}  # fmt: skip


@pytest.mark.parametrize("name", list(TRL_NAMES))
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_the_dpo_family_equals_trls_code(name, beta):
    batch = random_batch()
    smoothing = {"robust": 0.1, "exo_pair": 1e-3, "aot_pair": 0.05, "aot_unpaired": 0.05}.get(name)
    options = {"beta": beta} | ({"label_smoothing": smoothing} if smoothing is not None else {})
    expected = trl_dpo_losses(TRL_NAMES[name], batch, beta, smoothing or 0.0)
    assert_close(value(name, batch, **options), expected, rtol=1e-6, atol=1e-6)
    # TRL's rewards: beta * (pi - ref), summed over tokens
    terms = LOSSES[name].fn(batch, **options)
    assert_close(terms.chosen_rewards, beta * (batch.policy_chosen - batch.reference_chosen))


def test_sft_equals_trls_cross_entropy_over_the_chosen_tokens():
    # TRL's "sft": F.cross_entropy(chosen_logits[mask], chosen_labels[mask]), the mean over every chosen token
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, 7, generator=generator)
    labels = torch.randint(0, 7, (3, 5), generator=generator)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]]).bool()
    trl = F.cross_entropy(logits[mask], labels[mask])
    token_logps = torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1) * mask
    ones = torch.ones(3)
    ours = value("sft", PairLogps(token_logps.sum(-1), -ones, mask.sum(-1), ones.long())).mean()
    assert_close(ours, trl)


def test_simpo_equals_trls_cpo_simpo():
    batch, beta, gamma, label_smoothing = random_batch(2), 2.0, 1.6, 0.0
    # CPOTrainer: average_log_prob=True for simpo; logits = (c - r) - simpo_gamma / beta; -logsigmoid(beta * logits)
    policy_chosen_logps = batch.policy_chosen / batch.chosen_lengths
    policy_rejected_logps = batch.policy_rejected / batch.rejected_lengths
    logits = (policy_chosen_logps - policy_rejected_logps) - gamma / beta
    expected = -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    terms = LOSSES["simpo"].fn(batch, beta=beta, gamma=gamma)
    assert_close(terms.losses, expected, rtol=1e-6, atol=1e-6)
    assert_close(terms.chosen_rewards, beta * policy_chosen_logps)


def test_orpo_equals_trls_odds_ratio_loss_plus_nll():
    batch, beta = random_batch(3), 0.1

    def log1mexp(x):  # TRL's, branching at -ln 2
        return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))

    # ORPOTrainer: average_log_prob=True; loss = policy_nll_loss - losses.mean(), losses = beta * logsigmoid(log_odds)
    policy_chosen_logps = batch.policy_chosen / batch.chosen_lengths
    policy_rejected_logps = batch.policy_rejected / batch.rejected_lengths
    log_odds = (policy_chosen_logps - policy_rejected_logps) - (
        log1mexp(policy_chosen_logps) - log1mexp(policy_rejected_logps)
    )
    policy_nll_loss = -batch.policy_chosen.sum() / batch.chosen_lengths.sum()
    expected = policy_nll_loss - (beta * F.logsigmoid(log_odds)).mean()
    terms = LOSSES["orpo"].fn(batch, beta=beta)
    assert_close(terms.losses.mean(), expected, rtol=1e-6, atol=1e-6)
    assert_close(terms.metrics["log_odds_chosen"], log_odds.mean())
    assert_close(terms.metrics["log_odds_ratio"], F.logsigmoid(log_odds).mean())


# ---- the weighted list -----------------------------------------------------------------------------------------


def test_a_weighted_list_is_the_weighted_sum_of_the_losses_means():
    batch = random_batch(4)
    mpo = resolve_losses(
        [{"name": "sigmoid", "weight": 0.8}, {"name": "bco_pair", "weight": 0.2}, {"name": "sft", "weight": 1.0}],
        default_beta=0.1,
    )
    loss, terms = combine(mpo, batch)
    expected = (
        0.8 * value("sigmoid", batch, beta=0.1).mean()
        + 0.2 * value("bco_pair", batch, beta=0.1).mean()
        + 1.0 * value("sft", batch).mean()
    )
    assert_close(loss, expected)
    assert set(terms.metrics) == {"nll", "losses/sigmoid", "losses/bco_pair", "losses/sft"}
    assert metric_names(mpo) == ("nll", "losses/sigmoid", "losses/bco_pair", "losses/sft")
    assert_close(terms.metrics["losses/bco_pair"], value("bco_pair", batch, beta=0.1).mean())
    assert_close(terms.chosen_rewards, 0.1 * (batch.policy_chosen - batch.reference_chosen))


def test_rewards_come_from_the_first_loss_that_defines_them():
    batch = random_batch(5)
    _, terms = combine(resolve_losses([{"name": "sft"}, {"name": "simpo"}], default_beta=2.0), batch)
    assert_close(terms.chosen_rewards, 2.0 * batch.policy_chosen / batch.chosen_lengths)
    _, alone = combine(resolve_losses([{"name": "sft"}], default_beta=0.1), batch)
    assert alone.chosen_rewards is None


def test_resolve_fills_the_module_beta_and_each_loss_default():
    (simpo,) = resolve_losses([{"name": "simpo", "beta": None, "gamma": None}], default_beta=2.5)
    assert simpo.options == {"beta": 2.5, "gamma": 0.5, "label_smoothing": 0.0}
    (ipo,) = resolve_losses([{"name": "ipo", "beta": 0.3}], default_beta=0.1)
    assert ipo.options == {"beta": 0.3, "ld_alpha": None, "wpo": False}  # LD-DPO and WPO off
    (term,) = resolve_losses([asdict(LossTerm("discopop", weight=2.0))], default_beta=0.1)
    assert (term.weight, term.options) == (2.0, {"beta": 0.1, "tau": 0.05, "ld_alpha": None, "wpo": False})


@pytest.mark.parametrize(
    "entries, message",
    [
        ([], "losses is empty"),
        ([{"name": "sigmoid"}, {"name": "dpo"}], r"losses\[1\] \(dpo\): unknown loss; choose one of sigmoid, robust"),
        ([{"name": "hinge", "label_smoothing": 0.1}], r"losses\[0\] \(hinge\): label_smoothing is not an option of"),
        ([{"name": "sft", "beta": 0.1}], r"beta is not an option of sft \(it takes no options\)"),
        ([{"name": "ipo", "beta": 0.0}], r"losses\[0\] \(ipo\): beta must be > 0"),
        ([{"name": "sigmoid", "weight": -1}], r"weight must be >= 0"),
    ],
)
def test_resolve_refuses_bad_lists_naming_the_entry(entries, message):
    with pytest.raises(ValueError, match=message):
        resolve_losses(entries, default_beta=0.1)


def test_a_list_needs_the_reference_when_any_of_its_losses_does():
    assert not needs_reference(resolve_losses([{"name": "simpo"}, {"name": "sft"}], 2.0))
    assert not needs_reference(resolve_losses([{"name": "orpo"}], 0.1))
    assert needs_reference(resolve_losses([{"name": "sft"}, {"name": "sigmoid"}], 0.1))


# ---- KTO ---------------------------------------------------------------------------------------------------------


def kto_batch() -> UnpairedLogps:
    """Three rows by hand: log-ratios r = +1, -2, +0.5; mismatched log-ratios 0.2, 0.4, 0.3 (mean 0.3 = z_0)."""
    return UnpairedLogps(
        policy=torch.tensor([-4.0, -9.0, -5.5]),
        reference=torch.tensor([-5.0, -7.0, -6.0]),
        policy_kl=torch.tensor([-10.8, -12.6, -9.7]),
        reference_kl=torch.tensor([-11.0, -13.0, -10.0]),
        desirable=torch.tensor([True, False, True]),
    )


def test_kto_by_hand():
    beta, w_d, w_u, z0 = 0.5, 1.0, 1.5, 0.3
    terms = kto(kto_batch(), beta=beta, desirable_weight=w_d, undesirable_weight=w_u)
    expected = [
        w_d * (1 - sigma(beta * (1.0 - z0))),  # desirable, r = 1
        w_u * (1 - sigma(beta * (z0 - -2.0))),  # undesirable, r = -2
        w_d * (1 - sigma(beta * (0.5 - z0))),  # desirable, r = 0.5
    ]
    assert_close(terms.losses, torch.tensor(expected), rtol=1e-6, atol=1e-6)
    assert_close(terms.metrics["kl"], torch.tensor(z0))
    assert_close(terms.chosen_rewards, torch.tensor([0.5, 0.25]))
    assert_close(terms.rejected_rewards, torch.tensor([-1.0]))


def test_kto_clamps_a_negative_kl_estimate_at_zero_and_passes_no_gradient_through_it():
    batch = kto_batch()
    policy_kl = (batch.reference_kl - 1.0).requires_grad_()  # mismatched log-ratios all -1: z_0 = max(0, -1) = 0
    terms = kto(UnpairedLogps(batch.policy, batch.reference, policy_kl, batch.reference_kl, batch.desirable))
    assert terms.metrics["kl"].item() == 0.0
    assert_close(terms.losses[0], torch.tensor(1 - sigma(0.1 * 1.0)))
    assert not terms.losses.requires_grad  # nothing of the loss depends on the mismatched rows


def test_kto_at_the_reference_is_half_each_rows_weight():
    zeros = torch.zeros(4)
    logps = UnpairedLogps(zeros, zeros, zeros, zeros, torch.tensor([True, True, False, False]))
    terms = kto(logps, desirable_weight=2.0, undesirable_weight=1.0)
    assert_close(terms.losses, torch.tensor([1.0, 1.0, 0.5, 0.5]))  # w * (1 - sigma(0))


def test_kto_equals_trls_code():
    b, beta, desirable_weight, undesirable_weight = kto_batch(), 0.1, 1.0, 1.33
    # TRL KTOTrainer: kl = (KL_logps - ref_KL_logps).mean().detach() ... .clamp(min=0)
    kl = (b.policy_kl - b.reference_kl).mean().detach().clamp(min=0)
    chosen_logratios = b.policy[b.desirable] - b.reference[b.desirable]
    chosen_losses = 1 - F.sigmoid(beta * (chosen_logratios - kl))
    rejected_logratios = b.policy[~b.desirable] - b.reference[~b.desirable]
    rejected_losses = 1 - F.sigmoid(beta * (kl - rejected_logratios))
    losses = torch.cat((desirable_weight * chosen_losses, undesirable_weight * rejected_losses), 0)
    ours = kto(b, beta=beta, desirable_weight=desirable_weight, undesirable_weight=undesirable_weight).losses
    assert_close(ours.mean(), losses.nanmean(), rtol=1e-6, atol=1e-6)
    assert_close(torch.sort(ours).values, torch.sort(losses).values, rtol=1e-6, atol=1e-6)


def test_kto_is_not_a_pairwise_loss():
    with pytest.raises(ValueError, match=r"losses\[0\] \(kto\): KTO trains on unpaired rows: use .*KTOModule"):
        resolve_losses([{"name": "kto"}], default_beta=0.1)
    with pytest.raises(ValueError, match="desirable_weight and undesirable_weight must be >= 0"):
        kto(kto_batch(), undesirable_weight=-1.0)
