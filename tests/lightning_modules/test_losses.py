"""The loss formulas against values computed by hand (torchtune style: the math is in the test)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from lightning_modules.losses import (
    bradley_terry_loss,
    chosen_nll_loss,
    dpo_loss,
    sequence_logps,
    sft_loss,
    token_logps,
)


def log_softmax_at(row: list[float], index: int) -> float:
    return row[index] - math.log(sum(math.exp(v) for v in row))


def test_sft_loss_matches_hand_computation_and_ignores_masked_positions():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]]])  # (1, 3, 3)
    labels = torch.tensor([[0, 1, -100]])
    expected = -(log_softmax_at([2.0, 0.0, 0.0], 0) + log_softmax_at([0.0, 1.0, 0.0], 1)) / 2
    assert_close(sft_loss(logits, labels), torch.tensor(expected))
    # Whatever the masked position's logits, the loss does not move.
    logits[0, 2] = torch.tensor([100.0, -100.0, 3.0])
    assert_close(sft_loss(logits, labels), torch.tensor(expected))


def test_sft_loss_averages_over_tokens_not_rows():
    # Row 0 has one response token, row 1 has three: each token weighs 1/4, not each row 1/2.
    logits = torch.zeros(2, 3, 2)
    logits[0, 0] = torch.tensor([0.0, 3.0])
    labels = torch.tensor([[1, -100, -100], [0, 0, 0]])
    token_nll = [-log_softmax_at([0.0, 3.0], 1), math.log(2), math.log(2), math.log(2)]
    assert_close(sft_loss(logits, labels), torch.tensor(sum(token_nll) / 4))
    assert not math.isclose(sft_loss(logits, labels).item(), (token_nll[0] + math.log(2)) / 2)


def test_sft_loss_with_external_token_count_sums_across_micro_batches():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, 7)
    labels = torch.randint(0, 7, (4, 5))
    labels[0, :3] = -100
    labels[2, 1:] = -100
    total = int((labels != -100).sum())
    whole = sft_loss(logits, labels)
    halves = sft_loss(logits[:2], labels[:2], num_tokens=total) + sft_loss(logits[2:], labels[2:], num_tokens=total)
    assert_close(halves, whole)


def test_sft_loss_of_an_all_masked_batch_is_zero():
    assert sft_loss(torch.randn(1, 3, 4), torch.full((1, 3), -100)).item() == 0.0


def test_token_logps_equals_log_softmax_gather_on_random_logits():
    torch.manual_seed(0)
    logits = torch.randn(3, 11, 50, dtype=torch.bfloat16)
    targets = torch.randint(0, 50, (3, 11))
    expected = F.log_softmax(logits.float(), -1).gather(-1, targets[..., None]).squeeze(-1)
    assert_close(token_logps(logits, targets, chunk_size=7), expected)


def test_sequence_logps_sums_over_the_response_mask():
    torch.manual_seed(1)
    logits = torch.randn(2, 6, 9)
    labels = torch.randint(0, 9, (2, 6))
    labels[0, :2] = -100
    labels[1, 4:] = -100
    mask = labels != -100
    per_token = F.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    logps, lengths = sequence_logps(logits, labels, chunk_size=4)
    assert_close(logps, (per_token * mask).sum(-1))
    assert lengths.tolist() == [4, 4]


# Log-probs picked by hand: h = (pc - rc) - (pr - rr) = (-3 - -4) - (-9 - -6) = 1 + 3 = 4
PC, PR, RC, RR = torch.tensor([-3.0]), torch.tensor([-9.0]), torch.tensor([-4.0]), torch.tensor([-6.0])


def logsigmoid(x: float) -> float:
    return -math.log(1 + math.exp(-x))


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_sigmoid_and_cdpo(eps):
    beta, h = 0.5, 4.0
    expected = -(1 - eps) * logsigmoid(beta * h) - eps * logsigmoid(-beta * h)
    losses, chosen, rejected = dpo_loss(PC, PR, RC, RR, beta=beta, label_smoothing=eps)
    assert_close(losses, torch.tensor([expected]))
    assert_close(chosen, torch.tensor([beta * (-3 - -4)]))
    assert_close(rejected, torch.tensor([beta * (-9 - -6)]))


def test_cdpo_with_zero_eps_is_dpo():
    torch.manual_seed(0)
    logps = [torch.randn(5) for _ in range(4)]
    assert_close(
        dpo_loss(*logps, label_smoothing=0.0)[0], -F.logsigmoid(0.1 * ((logps[0] - logps[2]) - (logps[1] - logps[3])))
    )


def test_robust():
    beta, h, eps = 0.5, 4.0, 0.1
    expected = (-(1 - eps) * logsigmoid(beta * h) + eps * logsigmoid(-beta * h)) / (1 - 2 * eps)
    assert_close(
        dpo_loss(PC, PR, RC, RR, beta=beta, loss_type="robust", label_smoothing=eps)[0], torch.tensor([expected])
    )


def test_hinge():
    assert_close(dpo_loss(PC, PR, RC, RR, beta=0.1, loss_type="hinge")[0], torch.tensor([1 - 0.1 * 4.0]))
    assert_close(dpo_loss(PC, PR, RC, RR, beta=0.5, loss_type="hinge")[0], torch.tensor([0.0]))  # relu(1 - 2)


def test_ipo_uses_length_normalised_log_ratios():
    beta = 0.25
    lc, lr = torch.tensor([2]), torch.tensor([3])
    expected = ((-3 - -4) / 2 - (-9 - -6) / 3 - 1 / (2 * beta)) ** 2  # (0.5 + 1 - 2)^2 = 0.25
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=beta, loss_type="ipo", chosen_lengths=lc, rejected_lengths=lr)
    assert_close(losses, torch.tensor([expected]))
    assert expected == pytest.approx(0.25)


def test_policy_equal_to_reference_gives_ln2_and_zero_rewards():
    logps = torch.tensor([-5.0, -7.5])
    losses, chosen, rejected = dpo_loss(logps, logps - 1, logps, logps - 1)
    assert_close(losses, torch.full((2,), math.log(2)))
    assert chosen.abs().sum() == 0 and rejected.abs().sum() == 0


@pytest.mark.parametrize("loss_type", ["sigmoid", "robust", "hinge", "ipo"])
def test_raising_the_chosen_logp_lowers_the_loss(loss_type):
    pc = torch.tensor([-3.0], requires_grad=True)
    kwargs = {"chosen_lengths": torch.tensor([2]), "rejected_lengths": torch.tensor([3])}
    losses, _, _ = dpo_loss(pc, PR, RC, RR, beta=0.1, loss_type=loss_type, **kwargs)
    losses.sum().backward()
    assert pc.grad.item() < 0


def test_rewards_are_detached():
    pc = torch.tensor([-3.0], requires_grad=True)
    _, chosen, _ = dpo_loss(pc, PR, RC, RR)
    assert not chosen.requires_grad


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"loss_type": "kto"}, "Unknown DPO loss_type"),
        ({"beta": -0.1}, "beta"),
        ({"loss_type": "ipo", "beta": 0.0}, "beta"),
        ({"label_smoothing": 0.7}, "label_smoothing"),
        ({"label_smoothing": -0.1}, "label_smoothing"),
        ({"loss_type": "robust", "label_smoothing": 0.5}, "label_smoothing"),
        ({"loss_type": "hinge", "label_smoothing": 0.1}, "label_smoothing"),
        ({"loss_type": "ipo"}, "chosen_lengths"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dpo_loss(PC, PR, RC, RR, **kwargs)


# ---- Bradley-Terry reward-model loss: -logsigmoid(r_c - r_r - m) -------------------------------------------


def neg_logsigmoid(x: float) -> float:
    """-log(1 / (1 + exp(-x))) = log(1 + exp(-x)), by hand."""
    return math.log(1 + math.exp(-x))


def test_bradley_terry_loss_matches_hand_computation():
    chosen = torch.tensor([2.0, 0.5, -1.0])
    rejected = torch.tensor([1.0, 0.5, 2.0])
    # differences 1, 0, -3: log(1 + e^-1) = 0.3133, log 2 = 0.6931, log(1 + e^3) = 3.0486
    expected = torch.tensor([neg_logsigmoid(1.0), math.log(2), neg_logsigmoid(-3.0)])
    assert_close(bradley_terry_loss(chosen, rejected), expected)
    assert expected[2].item() == pytest.approx(3.0486, abs=1e-4)


def test_bradley_terry_margin_is_subtracted_from_the_difference():
    chosen, rejected = torch.tensor([2.0, 3.0]), torch.tensor([1.0, 0.0])
    # scalar margin 0.5: differences 1 - 0.5 = 0.5 and 3 - 0.5 = 2.5
    assert_close(
        bradley_terry_loss(chosen, rejected, margin=0.5), torch.tensor([neg_logsigmoid(0.5), neg_logsigmoid(2.5)])
    )
    # per-pair margins 1 and 4: differences 0 (-> ln 2) and -1
    assert_close(
        bradley_terry_loss(chosen, rejected, margin=torch.tensor([1.0, 4.0])),
        torch.tensor([math.log(2), neg_logsigmoid(-1.0)]),
    )


def test_bradley_terry_is_finite_for_large_differences():
    # -logsigmoid(x) = log(1 + e^-x): e^-x for x >> 0 (e^-100 = 3.7e-44, e^-30 = 9.4e-14), and
    # -x + log(1 + e^x) = -x for x << 0 (x = -100: 100). Computed naively, e^100 overflows fp32 (max 3.4e38): inf.
    losses = bradley_terry_loss(torch.tensor([100.0, -100.0, 30.0]), torch.tensor([0.0, 0.0, 0.0]))
    assert torch.isfinite(losses).all()
    assert_close(losses, torch.tensor([math.exp(-100.0), 100.0, math.exp(-30.0)]))


def test_bradley_terry_gradient_raises_chosen_and_lowers_rejected():
    # d/dr_c -logsigmoid(r_c - r_r) = -(1 - sigmoid(d)) = -sigmoid(-d); at d = 0: -1/2, and +1/2 for r_r.
    chosen = torch.tensor([0.0], requires_grad=True)
    rejected = torch.tensor([0.0], requires_grad=True)
    bradley_terry_loss(chosen, rejected).sum().backward()
    assert_close(chosen.grad, torch.tensor([-0.5]))
    assert_close(rejected.grad, torch.tensor([0.5]))


def test_chosen_nll_is_the_token_mean_over_the_batch_not_the_row_mean():
    # Two chosen responses: 2 tokens summing to -2 nats, 3 tokens summing to -6 nats.
    # Token mean over the batch: (2 + 6) / (2 + 3) = 1.6 (the row mean of 1.0 and 2.0 would be 1.5).
    logps, lengths = torch.tensor([-2.0, -6.0]), torch.tensor([2, 3])
    assert_close(chosen_nll_loss(logps, lengths), torch.tensor(1.6))
    assert_close(chosen_nll_loss(torch.zeros(0), torch.zeros(0, dtype=torch.long)), torch.tensor(0.0))


def test_chosen_nll_gradient_raises_every_chosen_logp_by_one_over_the_token_count():
    logps = torch.tensor([-2.0, -6.0], requires_grad=True)
    chosen_nll_loss(logps, torch.tensor([2, 3])).backward()
    assert_close(logps.grad, torch.tensor([-0.2, -0.2]))  # d/dlogp of -(sum)/5
