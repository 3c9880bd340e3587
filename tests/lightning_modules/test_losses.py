"""The loss formulas against values computed by hand (torchtune style: the math is in the test)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from lightning_modules.losses import (
    bradley_terry_loss,
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
