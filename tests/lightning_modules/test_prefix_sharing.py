"""Prefix sharing (``data.share_prompt``): each pair's prompt computed once for both responses gives the same
log-probs, gradients and training as the unshared packed batch (fp32, 1e-5), and every layout it cannot serve is
refused in one error."""

from __future__ import annotations

import pytest
import torch
from preference_helpers import LORA, Recorder, preference_data
from torch.testing import assert_close
from transformers import MistralConfig, MistralForCausalLM

from common.constants import IGNORE_INDEX
from common.errors import ConfigError
from common.settings import LossTerm
from datamodules.collate import (
    EXAMPLE_LENGTHS,
    RESPONSE_ROWS,
    RESPONSE_SOURCES,
    RESPONSE_TARGETS,
    PreferenceCollator,
    build_shared_prompt_batch,
)
from lightning_modules.dpo import DPOModule
from lightning_modules.packed_attention import LENGTHS_KWARG, use_packed_sdpa
from lightning_modules.reward import RewardModule

PAIRS = [
    {"prompt_ids": [1, 2], "chosen_ids": [3, 4], "rejected_ids": [5, 6, 7], "pair_index": 0},
    {"prompt_ids": [8], "chosen_ids": [9], "rejected_ids": [10, 11], "pair_index": 1},
]


def test_the_layout_by_hand():
    batch = build_shared_prompt_batch(PAIRS)
    # pair 0 at 0..6: prompt 1 2, chosen 3 4, rejected 5 6 7; pair 1 at 7..10: prompt 8, chosen 9, rejected 10 11
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 2, 3, 4, 0, 1, 1, 2]]
    assert batch[EXAMPLE_LENGTHS] == [[(2, 2, 3), (1, 1, 2)]]
    # rows in the unshared order: chosen 0, chosen 1, rejected 0, rejected 1
    assert batch[RESPONSE_TARGETS].tolist() == [3, 4, 9, 5, 6, 7, 10, 11]
    assert batch[RESPONSE_ROWS].tolist() == [0, 0, 1, 2, 2, 2, 3, 3]
    # 3 from 2 (pos 1), 4 from 3; 9 from 8; 5 from 2 (the prompt's last), 6 from 5, 7 from 6; 10 from 8, 11 from 10
    assert batch[RESPONSE_SOURCES].tolist() == [1, 2, 7, 1, 4, 5, 7, 9]
    assert batch["row_lengths"].tolist() == [4, 2, 5, 3]  # prompt + response, as the unshared rows
    assert int(batch["num_real_tokens"]) == 14 and int(batch["num_loss_tokens"]) == 8
    assert batch["labels"].tolist() == [[IGNORE_INDEX] * 2 + [3, 4, 5, 6, 7] + [IGNORE_INDEX, 9, 10, 11]]
    collated = PreferenceCollator(0, pack=True, share_prompt=True)(PAIRS)
    assert collated["pair_index"].tolist() == [0, 1] and collated[RESPONSE_SOURCES].tolist() == [1, 2, 7, 1, 4, 5, 7, 9]


def test_an_empty_prompt_is_refused():
    with pytest.raises(ValueError, match="pair 3 has an empty prompt"):
        build_shared_prompt_batch([{"prompt_ids": [], "chosen_ids": [1], "rejected_ids": [2], "pair_index": 3}])


def random_mistral(sliding_window: int | None) -> MistralForCausalLM:
    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=256, sliding_window=sliding_window,
        attn_implementation="sdpa",
    )  # fmt: skip
    return MistralForCausalLM(config).eval()


@pytest.mark.parametrize("sliding_window", [None, 4], ids=["causal", "sliding-window"])
def test_each_response_sees_what_it_sees_in_its_own_row(sliding_window):
    """The logits predicting every response token equal those of the row ``prompt + response`` run alone; with a
    window of 4, shorter than the rows, the band applies across the shared prompt too."""
    model = random_mistral(sliding_window)
    generator = torch.Generator().manual_seed(3)
    pairs = [
        {name: torch.randint(0, 97, (n,), generator=generator).tolist() for name, n in zip(
            ("prompt_ids", "chosen_ids", "rejected_ids"), sizes, strict=True)} | {"pair_index": i}
        for i, sizes in enumerate([(6, 3, 5), (2, 7, 4), (1, 1, 1)])
    ]  # fmt: skip
    batch = build_shared_prompt_batch(pairs)
    use_packed_sdpa(model)
    with torch.no_grad():
        shared = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False,
                       **{LENGTHS_KWARG: batch[EXAMPLE_LENGTHS]}).logits[0]  # fmt: skip
        expected = []
        for key in ("chosen_ids", "rejected_ids"):
            for pair in pairs:
                row = torch.tensor([pair["prompt_ids"] + pair[key]])
                logits = model(input_ids=row, use_cache=False).logits[0]
                expected.append(logits[len(pair["prompt_ids"]) - 1 : -1])  # the positions predicting the response
    assert_close(shared[batch[RESPONSE_SOURCES]], torch.cat(expected), atol=1e-5, rtol=0)
    # Not vacuous: one causal example per pair would let each rejected response see the chosen one
    leaky = [[p + c + r for p, c, r in batch[EXAMPLE_LENGTHS][0]]]
    with torch.no_grad():
        leaked = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False,
                       **{LENGTHS_KWARG: leaky}).logits[0]  # fmt: skip
    assert (leaked[batch[RESPONSE_SOURCES]] - torch.cat(expected)).abs().max() > 1e-3


@pytest.mark.parametrize("lora", [None, LORA], ids=["full", "lora"])
def test_dpo_statistics_and_gradients_equal_the_unshared_batch(lora, tiny_sft_export, repo, tmp_path):
    reference = "adapter" if lora else "separate"
    losses = [LossTerm("sigmoid", ld_alpha=0.5, wpo=True)]  # so the policy's LD-DPO tails and WPO weights, too
    module = DPOModule(str(tiny_sft_export), lora=lora, reference=reference, merge_sft_adapter=True, losses=losses)
    module.eval()
    data = preference_data(tiny_sft_export, repo, tmp_path)
    pairs = [data.train_dataset[i] for i in range(6)]
    stats, grads = {}, {}
    for share in (False, True):
        batch = PreferenceCollator(data.tokenizer.pad_token_id, pack=True, share_prompt=share)(pairs)
        if share:
            unshared = sum(len(p["prompt_ids"]) for p in pairs)
            assert batch["input_ids"].shape[1] == int(batch["num_real_tokens"]) - unshared  # each prompt once
        module.zero_grad()
        policy = module.sequence_stats(module.model, batch, policy=True)
        (policy.logps.sum() + policy.tails.sum()).backward()
        grads[share] = {n: p.grad.clone() for n, p in module.model.named_parameters() if p.grad is not None}
        stats[share] = (policy, module.reference_logps(batch))
    shared, plain = stats[True][0], stats[False][0]
    assert shared.logps.shape == (12,)
    assert_close(shared.logps, plain.logps, atol=1e-5, rtol=0)
    assert_close(shared.lengths, plain.lengths)
    assert_close(shared.mean_logits, plain.mean_logits, atol=1e-5, rtol=0)
    assert_close(shared.tails, plain.tails, atol=1e-5, rtol=0)
    assert_close(shared.wpo_log_weights, plain.wpo_log_weights, atol=1e-5, rtol=0)
    assert_close(stats[True][1], stats[False][1], atol=1e-5, rtol=0)  # the reference, too
    assert grads[True].keys() == grads[False].keys() and grads[True]
    for name, grad in grads[True].items():
        assert_close(grad, grads[False][name], atol=1e-5, rtol=1e-4, msg=name)


def test_training_with_a_precomputed_reference_follows_the_unshared_run(tiny_sft_export, repo, tmp_path, cpu_trainer):
    """Three steps through Lightning, the reference's pass over the shared layout too: the same losses."""
    losses = {}
    for share in (False, True):
        torch.manual_seed(0)
        data = preference_data(tiny_sft_export, repo, tmp_path, share_prompt=share, batch_size=4)
        module = DPOModule(str(tiny_sft_export), lora=LORA, reference="precomputed",
                           reference_cache_dir=str(tmp_path / f"ref-{share}"))  # fmt: skip
        recorder = Recorder()
        cpu_trainer(max_steps=3, callbacks=[recorder], limit_val_batches=0).fit(module, datamodule=data)
        losses[share] = torch.tensor([row["train/loss"] for row in recorder.rows])
    assert len(losses[True]) == 3
    assert_close(losses[True], losses[False], atol=1e-5, rtol=0)


def test_layouts_it_cannot_serve_are_refused(tiny_sft_export, tiny_model_dir, repo, tmp_path):
    with pytest.raises(ConfigError, match="share_prompt lays the pairs out in a packed batch: set pack: true"):
        preference_data(tiny_sft_export, repo, tmp_path, share_prompt=True, pack=False)
    data = preference_data(tiny_sft_export, repo, tmp_path, share_prompt=True)
    batch = data.collator()([data.train_dataset[i] for i in range(2)])
    module = DPOModule(str(tiny_sft_export), lora=LORA, packed_sdpa=False)
    with pytest.raises(ConfigError, match="model.packed_sdpa: true"):
        module.sequence_stats(module.model, batch)
    reward = RewardModule(str(tiny_model_dir), lora=LORA)
    with pytest.raises(ConfigError, match="set data.share_prompt: false"):
        reward.rewards(batch)
