"""The reward-model module: where the reward is read, its loss, that it learns, and that its export reloads."""

import json
import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from preference_helpers import first_batch, preference_data
from torch.testing import assert_close
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from common.errors import ConfigError, ModelLoadError
from common.settings import LoadSettings, LoraSettings, OptimizerSettings
from lightning_modules.reward import RewardModule, last_token_mask, reward_pad_token


def nudge(module: RewardModule, scale: float = 0.05) -> RewardModule:
    """Move every trained weight (the zero-initialised head too), so rewards differ from row to row."""
    torch.manual_seed(0)
    with torch.no_grad():
        for param in module.model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * scale)
    return module.eval()


def pair_metrics(rewards: torch.Tensor) -> tuple[float, float]:
    """Mean Bradley-Terry loss and accuracy of a (2B,) reward vector, chosen first, by hand."""
    pairs = rewards.shape[0] // 2
    differences = (rewards[:pairs] - rewards[pairs:]).tolist()
    loss = sum(math.log(1 + math.exp(-d)) for d in differences) / pairs  # -logsigmoid(d) = log(1 + e^-d)
    return loss, sum(d > 0 for d in differences) / pairs


def test_last_token_mask_padded_and_packed():
    padded = {
        "input_ids": torch.zeros(2, 4, dtype=torch.long),
        "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]),
    }
    assert last_token_mask(padded).tolist() == [[False, False, True, False], [False, False, False, True]]
    packed = {"input_ids": torch.zeros(1, 5, dtype=torch.long), "position_ids": torch.tensor([[0, 1, 2, 0, 1]])}
    assert last_token_mask(packed).tolist() == [[False, False, True, False, True]]


def test_the_export_pad_token_is_never_eos():
    def tokenizer(pad, unk):
        return SimpleNamespace(
            name_or_path="t",
            eos_token_id=2,
            pad_token=pad and pad[0],
            pad_token_id=pad and pad[1],
            unk_token=unk and unk[0],
            unk_token_id=unk and unk[1],
        )

    assert reward_pad_token(tokenizer(("<pad>", 5), ("<unk>", 0))) == "<pad>"
    assert reward_pad_token(tokenizer(("</s>", 2), ("<unk>", 0))) == "<unk>"  # pad = EOS (Mistral via load_tokenizer)
    with pytest.raises(ModelLoadError, match="pad token other than EOS"):
        reward_pad_token(tokenizer(("</s>", 2), None))


def test_a_4bit_base_is_refused_before_anything_loads(tmp_path):
    """The export merges the LoRA into the base: merged into 4-bit weights it would be rounded."""
    with pytest.raises(ConfigError, match="the reward model does not support a 4-bit base"):
        RewardModule(str(tmp_path / "nowhere"), lora=LoraSettings(), load=LoadSettings(load_in_4bit=True))


def test_reward_is_the_score_at_each_rows_last_token_padded_or_packed(tiny_model_dir, repo, tmp_path):
    module = nudge(RewardModule(str(tiny_model_dir)))
    padded = first_batch(preference_data(tiny_model_dir, repo, tmp_path, pack=False))
    packed = first_batch(preference_data(tiny_model_dir, repo, tmp_path, pack=True))
    assert "attention_mask" in padded and "attention_mask" not in packed
    with torch.no_grad():
        from_padded = module.rewards(padded)  # (2B,)
        from_packed = module.rewards(packed)
        # By hand: each row alone, unpadded; the head's score at every position, read at the last one.
        expected = []
        for ids, mask in zip(padded["input_ids"], padded["attention_mask"], strict=True):
            row = ids[mask.bool()][None]  # (1, T_row)
            hidden = module.model.model(input_ids=row).last_hidden_state  # (1, T_row, H)
            expected.append(module.model.score(hidden)[0, -1, 0])  # (T_row,) scores -> the last token's
    assert from_padded.shape == (16,)
    assert from_padded.std() > 0
    assert_close(from_padded, torch.stack(expected))
    assert_close(from_packed, from_padded)


def test_step_zero_is_ln2_and_the_loss_is_the_bradley_terry_mean_of_the_rewards(
    tiny_model_dir, repo, tmp_path, cpu_trainer
):
    data = preference_data(tiny_model_dir, repo, tmp_path)
    module = RewardModule(str(tiny_model_dir))
    t = cpu_trainer(max_steps=1, limit_val_batches=1)
    t.validate(module, datamodule=data, verbose=False)
    # Zero-initialised head: every reward is 0, every pair a tie (-logsigmoid(0) = ln 2), none counted as won.
    assert t.callback_metrics["val/loss"].item() == pytest.approx(math.log(2), abs=1e-6)
    assert t.callback_metrics["val/rewards/chosen"].item() == 0.0
    assert t.callback_metrics["val/rewards/accuracies"].item() == 0.0

    nudge(module)
    with torch.no_grad():
        rewards = module.rewards(first_batch(data))
    loss, accuracy = pair_metrics(rewards)
    pairs = rewards.shape[0] // 2
    t.validate(module, datamodule=data, verbose=False)
    metrics = {k: v.item() for k, v in t.callback_metrics.items()}
    assert metrics["val/loss"] == pytest.approx(loss, abs=1e-5)
    assert metrics["val/rewards/accuracies"] == pytest.approx(accuracy)
    assert metrics["val/rewards/chosen"] == pytest.approx(rewards[:pairs].mean().item(), abs=1e-6)
    assert metrics["val/rewards/rejected"] == pytest.approx(rewards[pairs:].mean().item(), abs=1e-6)
    assert metrics["val/rewards/margins"] == pytest.approx((rewards[:pairs] - rewards[pairs:]).mean().item(), abs=1e-6)


@pytest.fixture(scope="module")
def fitted(tiny_model_dir, repo, tmp_path_factory, cpu_trainer):
    """A full fine-tune of the tiny test model (random weights, 0.16M) on the tiny pairs: 60 steps of 8 pairs."""
    tmp_path = tmp_path_factory.mktemp("reward")
    data = preference_data(tiny_model_dir, repo, tmp_path)
    L.seed_everything(0, verbose=False)
    module = RewardModule(str(tiny_model_dir), optimizer=OptimizerSettings(lr=3e-3, warmup_steps=2))
    with torch.no_grad():
        before = module.rewards(next(iter(data.train_dataloader())))
    fit = cpu_trainer(max_steps=60, limit_val_batches=0)
    fit.fit(module, datamodule=data)
    return SimpleNamespace(module=module.eval(), data=data, before=before, trainer=fit)


def test_a_short_fit_ranks_the_training_pairs_above_chance(fitted):
    # The same (seeded) training pairs before and after: 8 batches of 8.
    loader = fitted.data.train_dataloader()
    with torch.no_grad():
        batches = [b for _, b in zip(range(8), loader, strict=False)]
        after = [pair_metrics(fitted.module.rewards(b)) for b in batches]
    loss = sum(a[0] for a in after) / len(after)
    accuracy = sum(a[1] for a in after) / len(after)
    assert pair_metrics(fitted.before) == (pytest.approx(math.log(2)), 0.0)
    assert loss < math.log(2) - 0.05, loss
    assert accuracy > 0.6, accuracy


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora-merged"])
def test_export_reloads_as_a_plain_sequence_classifier_with_the_same_rewards(lora, fitted, tiny_model_dir, tmp_path):
    if lora:
        module = nudge(RewardModule(str(tiny_model_dir), lora=LoraSettings(r=4, alpha=8, dropout=0.0)))
    else:
        module = fitted.module
    batch = first_batch(fitted.data)  # packed
    with torch.no_grad():
        expected = module.rewards(batch)
    out = module.export_pretrained(tmp_path / "reward", fitted.data.tokenizer, {"stage": "RewardModule"})
    assert not (out / "adapter_config.json").exists()
    info = json.loads((out / "export_info.json").read_text())
    assert info["kind"] == "reward_model" and info["base"] == str(tiny_model_dir)
    assert info["held_out_pair_accuracy"] is None  # no validation ran

    # As a judge reads it: transformers alone, rows right-padded with the export's pad token.
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.pad_token_id == tokenizer.pad_token_id != tokenizer.eos_token_id
    rows = [ids.tolist() for ids in batch["input_ids"][0].split(batch["row_lengths"].tolist())]
    assert all(row[-1] == tokenizer.eos_token_id for row in rows)
    inputs = tokenizer.pad({"input_ids": rows}, return_tensors="pt")  # (2B, T_max), pad on the right
    with torch.no_grad():
        assert_close(model(**inputs).logits[:, 0], expected)
    # The module keeps training as before: the export merged a copy of the adapter.
    if lora:
        assert any("lora_A" in name for name, _ in module.model.named_parameters())
