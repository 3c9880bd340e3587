"""Gradient accumulation gives exactly the gradient of one bigger batch (token-level averaging)."""

import torch
from torch.testing import assert_close
from torch.utils.data import DataLoader

from common.settings import LoraSettings, OptimizerSettings
from datamodules.collate import SFTCollator
from datamodules.instruction import tokenize_instruction
from lightning_modules.sft import SFTModule


class GradientRecordingSFT(SFTModule):
    """Keeps a copy of the gradient the optimiser is about to apply."""

    def on_before_optimizer_step(self, optimizer) -> None:
        super().on_before_optimizer_step(optimizer)
        self.applied = {n: p.grad.clone() for n, p in self.named_parameters() if p.grad is not None}


def examples(tokenizer) -> list[dict]:
    # Responses of very different lengths, so a mean of per-micro-batch means would differ.
    rows = [
        ("Say yes.", "Yes."),
        ("Describe the sea.", "The sea is wide and blue and deep, and it moves all day under the sky."),
        ("Name a colour.", "Red."),
        ("Count to five.", "One, two, three, four, five."),
    ]
    return [
        tokenize_instruction(
            {"instruction": i, "input": "", "output": o, "_row": n, "_source": "t"}, tokenizer, "alpaca", 256
        )
        for n, (i, o) in enumerate(rows)
    ]


def applied_gradient(cpu_trainer, tiny_model_dir, batches, accumulate: int) -> dict:
    torch.manual_seed(0)
    module = GradientRecordingSFT(
        str(tiny_model_dir),
        lora=LoraSettings(r=4, alpha=8, dropout=0.0),
        optimizer=OptimizerSettings(lr=1e-3, warmup_steps=1),
    )
    trainer = cpu_trainer(max_steps=1, accumulate_grad_batches=accumulate)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    return module.applied


def test_two_accumulated_micro_batches_equal_one_batch(tiny_model_dir, tiny_tokenizer, cpu_trainer):
    rows = examples(tiny_tokenizer)
    collate = SFTCollator(tiny_tokenizer.pad_token_id)
    one_batch = applied_gradient(cpu_trainer, tiny_model_dir, [collate(rows)], accumulate=1)
    two_micro = applied_gradient(cpu_trainer, tiny_model_dir, [collate(rows[:1]), collate(rows[1:])], accumulate=2)
    assert one_batch.keys() == two_micro.keys() and one_batch
    for name in one_batch:
        assert_close(two_micro[name], one_batch[name], rtol=1e-4, atol=1e-7)
