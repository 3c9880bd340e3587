"""``compile_layers``: torch.compile of each decoder layer gives the eager loss and gradients (fp32, 1e-5)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from common.settings import LoraSettings
from datamodules import InstructionDataModule
from datamodules.collate import SFTCollator
from lightning_modules.decoder_layers import decoder_layers
from lightning_modules.sft import SFTModule


def test_compile_layers_compiles_every_decoder_layer_and_keeps_the_weight_names(tiny_model_dir):
    eager = SFTModule(str(tiny_model_dir))
    compiled = SFTModule(str(tiny_model_dir), compile_layers=True)
    layers = decoder_layers(compiled.model)
    assert len(layers) == 2 and all(layer._compiled_call_impl is not None for layer in layers)
    assert all(layer._compiled_call_impl is None for layer in decoder_layers(eager.model))
    # Checkpoints and exports read the same keys: compiling wraps the call, not the module.
    assert compiled.state_dict().keys() == eager.state_dict().keys()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("lora", "checkpointing"),
    [(None, False), (LoraSettings(r=8, alpha=16, dropout=0.0), True)],
    ids=["full", "lora-checkpointed"],
)
def test_compiled_layers_give_the_eager_loss_and_gradients(lora, checkpointing, tiny_model_dir, repo):
    """Two packed batches of different lengths (dynamic shapes: the second must not fail or differ)."""
    data = InstructionDataModule(
        str(tiny_model_dir), train_files=str(repo / "data/tiny/sft_train.jsonl"), val_fraction=0.0, max_length=256
    )
    data.setup("fit")
    collate = SFTCollator(data.tokenizer.pad_token_id, pack=True)
    batches = [collate([data.train_dataset[i] for i in rows]) for rows in (range(0, 6), range(6, 9))]
    assert batches[0]["input_ids"].shape[1] != batches[1]["input_ids"].shape[1]
    results = {}
    for compiled in (False, True):
        torch.manual_seed(0)  # the same LoRA initialisation
        module = SFTModule(
            str(tiny_model_dir), lora=lora, gradient_checkpointing=checkpointing, compile_layers=compiled
        ).train()
        losses, grads = [], []
        for batch in batches:
            loss, _ = module._loss(batch)
            loss.backward()
            losses.append(loss.detach())
            grads.append({name: p.grad.clone() for name, p in module.named_parameters() if p.requires_grad})
            module.zero_grad()
        results[compiled] = losses, grads
    for step in range(len(batches)):
        assert_close(results[True][0][step], results[False][0][step], atol=1e-5, rtol=0)
        for name, expected in results[False][1][step].items():
            assert_close(results[True][1][step][name], expected, atol=1e-5, rtol=1e-4, msg=f"step {step}: {name}")
