"""The KTO module: the step-0 value, learning on the tiny rows, the precomputed reference, wrong data refused."""

import lightning as L
import pytest
from preference_helpers import LORA, Recorder, preference_data

from common.errors import ConfigError
from common.settings import LossTerm, OptimizerSettings
from datamodules import UnpairedDataModule
from lightning_modules.kto import KTOModule


def unpaired_data(model_dir, repo, tmp_path, **kwargs) -> UnpairedDataModule:
    """The shipped tiny pairs, each split into a desirable and an undesirable row."""
    return preference_data(model_dir, repo, tmp_path, data_class=UnpairedDataModule, **kwargs)


@pytest.mark.parametrize("reference", ["adapter", "precomputed"])
def test_at_step_zero_each_row_loses_half_its_weight(reference, tiny_sft_export, repo, tmp_path, cpu_trainer):
    """The policy is the reference: r = 0 and z_0 = 0, so every loss is w * (1 - sigma(0)) = w / 2."""
    data = unpaired_data(tiny_sft_export, repo, tmp_path, num_val_examples=16)
    module = KTOModule(
        str(tiny_sft_export), lora=LORA, reference=reference, desirable_weight=1.0, undesirable_weight=1.0,
        reference_cache_dir=str(tmp_path / "ref"),
    )  # fmt: skip
    trainer = cpu_trainer(max_steps=1, limit_val_batches=2)
    trainer.validate(module, datamodule=data, verbose=False)
    metrics = {k: v.item() for k, v in trainer.callback_metrics.items()}
    assert metrics["val/loss"] == pytest.approx(0.5, abs=1e-5)
    assert metrics["val/kl"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["val/rewards/chosen"] == pytest.approx(0.0, abs=1e-5)


def test_kto_lowers_its_loss_on_the_tiny_rows(tiny_sft_export, repo, tmp_path, cpu_trainer):
    L.seed_everything(0, verbose=False)
    data = unpaired_data(tiny_sft_export, repo, tmp_path, num_examples=64)
    module = KTOModule(
        str(tiny_sft_export), lora=LORA, reference="adapter", beta=0.5,
        optimizer=OptimizerSettings(lr=1e-2, warmup_steps=2),
    )  # fmt: skip
    recorder = Recorder()
    cpu_trainer(max_steps=20, callbacks=[recorder], limit_val_batches=0).fit(module, datamodule=data)
    first, last = recorder.rows[:4], recorder.rows[-4:]
    mean = lambda rows, key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    assert mean(last, "train/loss") < mean(first, "train/loss")
    assert mean(last, "train/rewards/margins") > 0
    assert "train/kl" in recorder.rows[-1]


def test_kto_refuses_pairwise_data_and_dpo_loss_options(tiny_sft_export, repo, tmp_path, cpu_trainer):
    with pytest.raises(ConfigError, match="model.losses: KTOModule's loss is KTO"):
        KTOModule(str(tiny_sft_export), lora=LORA, losses=[LossTerm("sigmoid")])
    with pytest.raises(ConfigError, match="desirable_weight and undesirable_weight must be >= 0"):
        KTOModule(str(tiny_sft_export), lora=LORA, desirable_weight=-1.0)
    module = KTOModule(str(tiny_sft_export), lora=LORA, reference="adapter")
    pairs = preference_data(tiny_sft_export, repo, tmp_path)
    with pytest.raises(ConfigError, match="set data.class_path: datamodules.UnpairedDataModule"):
        cpu_trainer(max_steps=1).fit(module, datamodule=pairs)


def test_kto_with_shared_prompts_scores_its_rows_as_unshared(tiny_sft_export, repo, tmp_path):
    """A KTO example's two completions (its own, the mismatched one) follow the same prompt, so the shared layout
    serves it too: the same log-probs of both halves, fp32, 1e-5."""
    import torch
    from torch.testing import assert_close

    logps = {}
    for share in (False, True):
        data = unpaired_data(tiny_sft_export, repo, tmp_path, share_prompt=share)
        batch = data.collator()([data.train_dataset[i] for i in range(6)])
        assert batch["desirable"].shape == (6,)
        module = KTOModule(str(tiny_sft_export), lora=LORA, reference="adapter").eval()
        with torch.no_grad():
            logps[share] = (module.sequence_stats(module.model, batch).logps, module.reference_logps(batch))
    assert_close(logps[True][0], logps[False][0], atol=1e-5, rtol=0)
    assert_close(logps[True][1], logps[False][1], atol=1e-5, rtol=0)
