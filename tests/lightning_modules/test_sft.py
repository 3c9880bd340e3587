"""SFTModule on the tiny random Mistral, on CPU: it learns, LoRA touches only the adapter, exports
reload to the same logits, packing does not change the loss, checkpoints stay lean."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.testing import assert_close

from common.settings import LoadSettings, LoraSettings, OptimizerSettings
from datamodules.collate import SFTCollator
from datamodules.instruction import InstructionDataModule
from lightning_modules.losses import sft_loss
from lightning_modules.sft import SFTModule

STEPS = 30


class LossRecorder(L.Callback):
    """Keeps the training loss of every step, and whether every submodule was in training mode."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.all_training: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.all_training.append(all(m.training for m in pl_module.model.modules()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # The logged per-token mean: what training_step returns may be a sum over the batch's tokens.
        self.losses.append(float(trainer.callback_metrics["train/loss"]))


def data_module(tiny_model_dir: Path, repo: Path) -> InstructionDataModule:
    """32 shipped examples in packed batches of 8: 30 steps are about seven epochs, so even a LoRA on a
    random base lowers the loss clearly (here about 6.20 -> 5.95 over the first and last 5 steps)."""
    dm = InstructionDataModule(
        str(tiny_model_dir),
        train_files=str(repo / "data" / "tiny" / "sft_train.jsonl"),
        num_examples=32,
        val_fraction=0.0,
        max_length=256,
        batch_size=8,
        pack=True,
    )
    dm.setup("fit")
    return dm


def fit(cpu_trainer, module: SFTModule, dm: InstructionDataModule, steps: int) -> LossRecorder:
    recorder = LossRecorder()
    cpu_trainer(max_steps=steps, callbacks=[recorder]).fit(module, datamodule=dm)
    return recorder


def snapshot(module: SFTModule) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.model.state_dict().items()}


def collate(dm: InstructionDataModule, n: int, pack: bool) -> dict:
    """The first ``n`` training rows as one padded or packed batch."""
    return SFTCollator(dm.tokenizer.pad_token_id, pack=pack)([dm.train_dataset[i] for i in range(n)])


def batch_loss(module: SFTModule, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        out = module.response_forward(module.model, batch)
    return sft_loss(out.logits, out.targets)


def lora_module(tiny_model_dir: Path) -> SFTModule:
    return SFTModule(
        str(tiny_model_dir),
        lora=LoraSettings(r=8, alpha=16, dropout=0.0),
        optimizer=OptimizerSettings(lr=5e-3, warmup_steps=2),
    )


@pytest.fixture(scope="module")
def trained_lora(tiny_model_dir, repo, cpu_trainer):
    """One LoRA run of STEPS steps, shared by the tests that inspect its result."""
    L.seed_everything(0)
    module = lora_module(tiny_model_dir)
    dm = data_module(tiny_model_dir, repo)
    before = snapshot(module)
    fixed = collate(dm, 8, pack=False)
    loss_before = batch_loss(module, fixed)
    recorder = fit(cpu_trainer, module, dm, STEPS)
    return {"module": module, "dm": dm, "before": before, "recorder": recorder,
            "fixed_batch_losses": (loss_before, batch_loss(module, fixed))}


def test_training_loss_goes_down(trained_lora):
    losses = trained_lora["recorder"].losses
    assert len(losses) == STEPS
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.1, f"mean loss of the first 5 steps {first:.3f}, of the last 5 {last:.3f}"
    # The same fixed batch, before and after: less noisy than comparing different batches.
    before, after = trained_lora["fixed_batch_losses"]
    assert after < before - 0.1, f"fixed-batch loss {before:.3f} -> {after:.3f}"


def test_model_trains_in_training_mode(trained_lora):
    """from_pretrained returns eval mode; training must not silently run without (LoRA) dropout or
    gradient checkpointing, which both act only in training mode."""
    assert all(trained_lora["recorder"].all_training)


def test_lora_changes_only_the_adapter_weights(trained_lora):
    before, after = trained_lora["before"], snapshot(trained_lora["module"])
    assert any("lora_" in k for k in before), "the model has no LoRA weights"
    for key, value in before.items():
        if "lora_" in key:
            assert not torch.equal(value, after[key]), f"{key} did not train"
        else:
            assert torch.equal(value, after[key]), f"base weight {key} changed"


def test_load_settings_give_the_frozen_base_its_dtype(tiny_model_dir):
    """``load.dtype`` is the frozen base's dtype; ``load=None`` is float32 on any machine."""
    lora = LoraSettings(r=4, alpha=8, dropout=0.0)
    bf16 = SFTModule(str(tiny_model_dir), load=LoadSettings(dtype="bfloat16"), lora=lora)
    assert {p.dtype for p in bf16.model.parameters() if not p.requires_grad} == {torch.bfloat16}
    assert bf16.hparams["load"] == LoadSettings(dtype="bfloat16")  # saved as given
    default = SFTModule(str(tiny_model_dir), lora=lora)
    assert {p.dtype for p in default.model.parameters() if not p.requires_grad} == {torch.float32}
    assert default.hparams["load"] is None


def test_full_fine_tuning_changes_the_base_weights(tiny_model_dir, repo, tmp_path, cpu_trainer):
    L.seed_everything(0)
    module = SFTModule(str(tiny_model_dir), lora=None, optimizer=OptimizerSettings(lr=5e-3, warmup_steps=2))
    before = snapshot(module)
    fit(cpu_trainer, module, data_module(tiny_model_dir, repo), steps=3)
    after = snapshot(module)
    assert not any("lora_" in k for k in after)
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, f"weights that did not train: {unchanged}"
    # Without LoRA nothing is frozen, so the checkpoint keeps every weight.
    module.trainer.save_checkpoint(tmp_path / "full.ckpt")
    state = torch.load(tmp_path / "full.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert {f"model.{k}" for k in before} <= set(state)


def test_exported_adapter_reloads_with_the_same_logits(trained_lora, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    module, dm = trained_lora["module"], trained_lora["dm"]
    out = module.export_pretrained(tmp_path / "export", dm.tokenizer)
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    reloaded = PeftModel.from_pretrained(base, str(out)).eval()
    module.model.eval()
    batch = collate(dm, 4, pack=False)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        expected = module.model(**inputs).logits  # (B, T, V)
        got = reloaded(**inputs).logits
        with reloaded.disable_adapter():
            base_only = reloaded(**inputs).logits
    assert expected.dtype == got.dtype == torch.float32
    assert_close(got, expected, atol=1e-5, rtol=0)
    # The comparison means something: the trained adapter does change the logits.
    assert (base_only - expected).abs().max() > 1e-3


def test_packed_and_padded_batches_give_the_same_loss(trained_lora):
    module, dm = trained_lora["module"], trained_lora["dm"]
    module.model.eval()
    outs, losses = {}, {}
    for pack in (False, True):
        batch = collate(dm, 6, pack=pack)
        with torch.no_grad():
            outs[pack] = module.response_forward(module.model, batch)
        # Every response token is predicted once; no position predicts the next row's first token.
        assert len(outs[pack].targets) == int(batch["num_loss_tokens"])
        assert outs[pack].num_rows == 6
        losses[pack] = sft_loss(outs[pack].logits, outs[pack].targets)
    assert_close(outs[True].targets, outs[False].targets)
    assert_close(outs[True].row_index, outs[False].row_index)
    # Equal logits need the packed rows not to attend to each other.
    assert_close(outs[True].logits, outs[False].logits, atol=1e-5, rtol=0)
    assert_close(losses[True], losses[False], atol=1e-5, rtol=0)


def test_lora_checkpoint_holds_only_trainable_weights(trained_lora, tiny_model_dir, tmp_path):
    module = trained_lora["module"]
    module.trainer.save_checkpoint(tmp_path / "lora.ckpt")
    state = torch.load(tmp_path / "lora.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    assert set(state) == trainable
    assert all("lora_" in key for key in state)
    # The lean checkpoint is enough: a fresh module (base reloaded from source) gets the same adapter.
    fresh = lora_module(tiny_model_dir)
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    assert not unexpected and not any("lora_" in key for key in missing)
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, module.state_dict()[name]), name
