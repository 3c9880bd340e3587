"""The preference metrics of the evaluation, on hand-picked log-probs with known answers."""

import math

import pytest

from evaluation.metrics import implicit_reward_margins, logp_margins, mean, preference_accuracy


def test_logp_margins_are_chosen_minus_rejected():
    assert logp_margins([-1.0, -5.0, -2.0], [-3.0, -4.0, -2.0]) == pytest.approx([2.0, -1.0, 0.0])


def test_preference_accuracy_from_logps_counts_strict_wins_only():
    # Pair 1: chosen more likely (win); pair 2: rejected more likely; pair 3: a tie, counted wrong.
    margins = logp_margins([-1.0, -5.0, -2.0], [-3.0, -4.0, -2.0])
    assert preference_accuracy(margins) == pytest.approx(1 / 3)
    assert mean(margins) == pytest.approx(1 / 3)


def test_implicit_reward_margin_is_beta_times_the_difference_of_log_ratios():
    beta = 0.1
    policy_chosen, policy_rejected = [-10.0, -8.0], [-12.0, -6.0]
    reference_chosen, reference_rejected = [-11.0, -8.0], [-11.0, -7.0]
    # Pair 1: chosen log-ratio +1, rejected log-ratio -1 -> 0.1 * (1 - (-1)) = 0.2.
    # Pair 2: chosen log-ratio 0, rejected log-ratio +1 -> 0.1 * (0 - 1) = -0.1.
    margins = implicit_reward_margins(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)
    assert margins == pytest.approx([0.2, -0.1])
    assert preference_accuracy(margins) == 0.5


def test_the_reference_against_itself_has_zero_implicit_reward():
    chosen, rejected = [-3.0, -1.5], [-2.0, -4.0]
    assert implicit_reward_margins(chosen, rejected, chosen, rejected, beta=0.5) == [0.0, 0.0]


def test_implicit_reward_margin_matches_the_dpo_loss_rewards():
    import torch

    from lightning_modules.preference_losses import PairLogps, sigmoid

    logps = [
        torch.tensor([-4.0, -7.5]),
        torch.tensor([-6.0, -7.0]),
        torch.tensor([-5.0, -7.0]),
        torch.tensor([-5.5, -6.0]),
    ]
    lengths = torch.ones(2)
    terms = sigmoid(PairLogps(logps[0], logps[1], lengths, lengths, logps[2], logps[3]), beta=0.3)
    expected = (terms.chosen_rewards - terms.rejected_rewards).tolist()
    assert implicit_reward_margins(*(t.tolist() for t in logps), beta=0.3) == pytest.approx(expected)


def test_paired_lists_of_different_lengths_are_an_error():
    with pytest.raises(ValueError, match="differ in length"):
        logp_margins([-1.0], [-1.0, -2.0])
    with pytest.raises(ValueError, match="differ in length"):
        implicit_reward_margins([-1.0], [-1.0], [-1.0, -2.0], [-1.0], beta=0.1)


def test_mean_of_nothing_names_the_metric():
    with pytest.raises(ValueError, match="mean_margin"):
        mean([], "mean_margin")
    assert math.isclose(mean([1, 2, 3, 4]), 2.5)
