"""LD-DPO's ``ld_alpha`` and WPO's ``wpo``: options of every loss on the reference's log-ratios.

By hand on one pair, then against TRL 1.x's lines (``DPOTrainer.concatenated_forward``'s ``ld_alpha`` and
``use_weighting`` blocks) written out on a padded random batch with an empty prompt (where TRL's position count
and the paper's agree), then through the module on a real batch, where the tails are recomputed from a full forward
of the padded batch (the module's own path runs the head on response positions only).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from preference_helpers import LORA, first_batch, preference_data
from torch.testing import assert_close

from common.constants import IGNORE_INDEX
from common.settings import LossTerm
from lightning_modules.dpo import DPOModule
from lightning_modules.losses import pair_tail_logps, wpo_token_log_weights
from lightning_modules.preference_losses import PairLogps, combine, metric_names, resolve_losses

# pi_c = -3 of which -1 beyond the shared length, pi_r = -9 of which -4; ref_c = -4, ref_r = -6.
PAIR = PairLogps(
    policy_chosen=torch.tensor([-3.0]),
    policy_rejected=torch.tensor([-9.0]),
    chosen_lengths=torch.tensor([3]),
    rejected_lengths=torch.tensor([5]),
    reference_chosen=torch.tensor([-4.0]),
    reference_rejected=torch.tensor([-6.0]),
    policy_chosen_tail=torch.tensor([-1.0]),
    policy_rejected_tail=torch.tensor([-4.0]),
    chosen_wpo_log_weight=torch.tensor([-0.2]),
    rejected_wpo_log_weight=torch.tensor([-0.3]),
)


def logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def one(entry: dict):
    (term,) = resolve_losses([entry], default_beta=0.1)
    return term


# ---- by hand --------------------------------------------------------------------------------------------------


def test_pair_tails_by_hand():
    """Pair 0: chosen 3 tokens, rejected 1 (l_p = 1); pair 1: chosen 2, rejected 4 (l_p = 2)."""
    per_token = torch.tensor([-1.0, -2.0, -3.0, -1.0, -1.0, -5.0, -1.0, -2.0, -3.0, -4.0])
    row_index = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    lengths = torch.tensor([3, 2, 1, 4])
    assert_close(pair_tail_logps(per_token, row_index, lengths), torch.tensor([-5.0, 0.0, 0.0, -7.0]))


def test_ld_alpha_by_hand():
    """alpha 0.5: pi_c' = -3 - 0.5 * (-1) = -2.5, pi_r' = -9 - 0.5 * (-4) = -7; log-ratios 1.5 and -1, h = 2.5."""
    terms = one({"name": "sigmoid", "beta": 0.5, "ld_alpha": 0.5})(PAIR)
    assert_close(terms.losses, torch.tensor([-logsigmoid(0.5 * 2.5)]))
    assert_close(terms.chosen_rewards, torch.tensor([0.75]))
    assert_close(terms.rejected_rewards, torch.tensor([-0.5]))
    # alpha 0: only the shared part counts, pi_c' = -2, pi_r' = -5, h = 2 - 1 = 1
    assert_close(one({"name": "sigmoid", "beta": 0.5, "ld_alpha": 0.0})(PAIR).losses, torch.tensor([-logsigmoid(0.5)]))


def test_ld_alpha_one_is_the_loss_without_it():
    for name in ("sigmoid", "ipo", "hinge", "apo_zero"):
        assert_close(one({"name": name, "ld_alpha": 1.0})(PAIR).losses, one({"name": name})(PAIR).losses)


def test_wpo_by_hand():
    """w = min(1, exp(-0.2 - 0.3)) = exp(-0.5); the loss is DPO's (h = 4) times w, and the weight is logged."""
    terms = one({"name": "sigmoid", "beta": 0.5, "wpo": True})(PAIR)
    assert_close(terms.losses, torch.tensor([-logsigmoid(2.0) * math.exp(-0.5)]))
    assert_close(terms.metrics["wpo_weight"], torch.tensor(math.exp(-0.5)))
    # log-weights summing above 0 clamp at 1
    likely = PairLogps(**{**PAIR.__dict__, "chosen_wpo_log_weight": torch.tensor([0.4])})
    assert_close(one({"name": "sigmoid", "beta": 0.5, "wpo": True})(likely).losses, torch.tensor([-logsigmoid(2.0)]))


def test_wpo_token_log_weight_by_hand():
    """Logits (0, ln 3): p = (1/4, 3/4), sum p^2 = 10/16; target 1: log(0.75 / 0.625) = log 1.2; target 0: log 0.4."""
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    assert_close(wpo_token_log_weights(logits, torch.tensor([1, 0])), torch.tensor([math.log(1.2), math.log(0.4)]))


def test_both_options_together_weigh_the_length_desensitised_loss():
    terms = one({"name": "sigmoid", "beta": 0.5, "ld_alpha": 0.5, "wpo": True})(PAIR)
    assert_close(terms.losses, torch.tensor([-logsigmoid(1.25) * math.exp(-0.5)]))


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"name": "simpo", "ld_alpha": 0.5}, r"ld_alpha is not an option of simpo"),
        ({"name": "sft", "wpo": True}, r"wpo is not an option of sft"),
        ({"name": "sigmoid", "ld_alpha": 1.5}, r"losses\[0\] \(sigmoid\): ld_alpha \(LD-DPO's alpha\) must be in"),
        ({"name": "ipo", "ld_alpha": -0.1}, r"must be in \[0, 1\], got -0.1"),
    ],
)
def test_bad_uses_are_refused_naming_the_entry(entry, message):
    with pytest.raises(ValueError, match=message):
        resolve_losses([entry], default_beta=0.1)


def test_the_weight_is_logged_only_when_a_loss_uses_it():
    weighted = resolve_losses([{"name": "sigmoid", "wpo": True}, {"name": "sft"}], 0.1)
    assert "wpo_weight" in metric_names(weighted)
    assert "wpo_weight" not in metric_names(resolve_losses([{"name": "sigmoid", "ld_alpha": 0.5}], 0.1))
    _, terms = combine(weighted, PAIR)
    assert_close(terms.metrics["wpo_weight"], torch.tensor(math.exp(-0.5)))


def test_without_the_computed_parts_the_loss_says_what_is_missing():
    bare = PairLogps(*(getattr(PAIR, name) for name in list(PAIR.__dataclass_fields__)[:6]))
    with pytest.raises(ValueError, match="ld_alpha needs the log-probs beyond the shared length"):
        one({"name": "sigmoid", "ld_alpha": 0.5})(bare)
    with pytest.raises(ValueError, match="wpo needs the policy's per-token WPO log-weights"):
        one({"name": "sigmoid", "wpo": True})(bare)


# ---- against TRL's lines -----------------------------------------------------------------------------------------


def padded_batch(seed: int = 0, pairs: int = 4, length: int = 9, vocab: int = 11):
    """Random logits and right-padded completions of ``2 * pairs`` rows (chosen rows first), no prompt."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2 * pairs, length, vocab, generator=generator) * 2
    labels = torch.randint(0, vocab, (2 * pairs, length), generator=generator)
    lengths = torch.randint(1, length + 1, (2 * pairs,), generator=generator)
    loss_mask = torch.arange(length)[None, :] < lengths[:, None]  # (2B, T)
    return logits, labels, loss_mask


def ours_from_padded(logits, labels, loss_mask):
    """What the module computes: response positions flattened in row order, as ``response_forward`` gives them."""
    rows = loss_mask.shape[0]
    row_index = torch.arange(rows)[:, None].expand_as(loss_mask)[loss_mask]
    flat_logits, targets = logits[loss_mask], labels[loss_mask]
    per_token = F.log_softmax(flat_logits, -1).gather(-1, targets[:, None]).squeeze(-1)
    lengths = loss_mask.sum(-1)
    logps = torch.zeros(rows).index_add(0, row_index, per_token)
    tails = pair_tail_logps(per_token, row_index, lengths)
    weights = torch.zeros(rows).index_add(0, row_index, wpo_token_log_weights(flat_logits, targets)) / lengths
    pairs = rows // 2
    zero = torch.zeros(pairs)
    return PairLogps(
        logps[:pairs],
        logps[pairs:],
        lengths[:pairs],
        lengths[pairs:],
        zero,
        zero,
        tails[:pairs],
        tails[pairs:],
        weights[:pairs],
        weights[pairs:],
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ld_alpha", [0.0, 0.3, 0.9])
def test_ld_alpha_equals_trls_code_without_a_prompt(seed, ld_alpha):
    logits, labels, loss_mask = padded_batch(seed)
    per_token_logps = torch.gather(F.log_softmax(logits, -1), 2, labels[..., None]).squeeze(-1)
    per_token_logps = per_token_logps * loss_mask
    num_examples = loss_mask.shape[0] // 2
    # TRL's lines
    completion_lengths = loss_mask.sum(dim=1)
    chosen_lengths = completion_lengths[:num_examples]
    rejected_lengths = completion_lengths[num_examples:]
    public_lengths = torch.min(chosen_lengths, rejected_lengths)
    public_lengths = torch.cat([public_lengths, public_lengths], dim=0)
    seq_len = per_token_logps.size(1)
    position_ids = torch.arange(seq_len).expand_as(per_token_logps)
    ld_mask = position_ids < public_lengths.unsqueeze(1)
    mask = position_ids < completion_lengths.unsqueeze(1)
    front_mask = (ld_mask & mask).float()
    rear_mask = (~ld_mask & mask).float()
    front_logps = (per_token_logps * front_mask).sum(dim=1)
    rear_logps = (per_token_logps * rear_mask).sum(dim=1)
    all_logps = front_logps + ld_alpha * rear_logps
    # ours
    ours = ours_from_padded(logits, labels, loss_mask).length_desensitised(ld_alpha)
    assert_close(torch.cat([ours.policy_chosen, ours.policy_rejected]), all_logps, atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wpo_weights_equal_trls_code(seed):
    """TRL's ``use_weighting`` block, on per-token log-probs aligned with the logits they come from."""
    logits, labels, loss_mask = padded_batch(seed)
    per_token_logps = torch.gather(F.log_softmax(logits, -1), 2, labels[..., None]).squeeze(-1)
    num_examples = loss_mask.shape[0] // 2
    # TRL's lines
    logprobs = F.log_softmax(logits, dim=-1)
    weights_adjustment_factor = torch.logsumexp(2 * logprobs, dim=-1)
    per_token_logps_adjusted = per_token_logps - weights_adjustment_factor
    all_weights = (per_token_logps_adjusted * loss_mask).sum(-1) / loss_mask.sum(-1)
    chosen_weights = all_weights[:num_examples]
    rejected_weights = all_weights[num_examples:]
    policy_weights = torch.clamp(torch.exp(chosen_weights + rejected_weights), max=1)
    # ours
    assert_close(ours_from_padded(logits, labels, loss_mask).wpo_weights(), policy_weights, atol=1e-6, rtol=1e-5)


# ---- through the module ------------------------------------------------------------------------------------------


def full_forward_token_logps(module: DPOModule, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(2B, T-1)`` per-token log-probs of the padded batch from the whole model's logits, and the response mask."""
    logits = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE_INDEX
    per_token = F.log_softmax(logits.float(), -1).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    return per_token * mask, mask


def test_the_module_computes_tails_and_weights_the_losses_read(tiny_sft_export, repo, tmp_path):
    """At step 0 (policy = reference) DPO is ln 2 whatever the weights; LD-DPO's loss follows from the tails,
    recomputed here from a full forward of the padded batch."""
    data = preference_data(tiny_sft_export, repo, tmp_path, pack=False)
    batch = first_batch(data)
    alpha, beta = 0.5, 0.1
    losses = [LossTerm("sigmoid", ld_alpha=alpha, wpo=True)]
    module = DPOModule(str(tiny_sft_export), lora=LORA, reference="adapter", beta=beta, losses=losses).eval()
    logged = {}
    module.log = lambda name, value, **kwargs: logged.setdefault(name, value)
    with torch.no_grad():
        stats = module.sequence_stats(module.model, batch, policy=True)
        per_token, mask = full_forward_token_logps(module, batch)
        loss = module._shared_step(batch, "val")
    pairs = per_token.shape[0] // 2
    lengths = mask.sum(-1)
    shared = torch.minimum(lengths[:pairs], lengths[pairs:]).repeat(2)
    position = mask.cumsum(-1) - 1  # position within the response
    expected_tails = (per_token * (mask & (position >= shared[:, None]))).sum(-1)
    assert_close(stats.tails, expected_tails, atol=1e-4, rtol=1e-4)
    assert (stats.tails != 0).any() and (stats.tails <= 0).all()
    assert stats.wpo_log_weights is not None and "val/wpo_weight" in logged
    # reference = policy with its full log-probs: h = -(1 - alpha) * (tail_c - tail_r)
    h = -(1 - alpha) * (stats.tails[:pairs] - stats.tails[pairs:])
    weights = torch.exp(stats.wpo_log_weights[:pairs] + stats.wpo_log_weights[pairs:]).clamp(max=1)
    assert_close(loss, (-F.logsigmoid(beta * h) * weights).mean(), atol=1e-5, rtol=1e-5)
    # the reference path is untouched: no tails, no weights
    assert module.sequence_stats(module.model, batch).tails is None
