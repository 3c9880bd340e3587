"""The tiny-base builder pre-trains in the precision the rule picks (autocast only where bf16 is native)."""

from __future__ import annotations

import json

import pytest
import torch

from common.precision import Hardware
from tiny_world import base
from tiny_world.base import TinyBaseSettings

ZEN3 = Hardware(device="cpu", cpu_capability="AVX2")
ZEN4 = Hardware(device="cpu", cpu_capability="AVX512", cpu_avx512_bf16=True)


@pytest.mark.parametrize(
    ("hardware", "precision", "autocast", "recorded"),
    [
        (ZEN3, "auto", None, "32-true (CPU without native bf16: AVX2)"),
        (ZEN4, "auto", torch.bfloat16, "bf16-mixed (CPU with native bf16: AVX512_BF16)"),
        (ZEN4, "32-true", None, "32-true (requested)"),
    ],
)
def test_pretraining_autocast_follows_the_rule(repo, tmp_path, monkeypatch, hardware, precision, autocast, recorded):
    monkeypatch.setattr(base, "detect_hardware", lambda accelerator: hardware)
    seen = []
    monkeypatch.setattr(base, "pretrain", lambda *args: seen.append(args[-1]))
    out = tmp_path / "base"
    settings = TinyBaseSettings(
        vocab_size=300, hidden=32, layers=1, heads=2, kv_heads=1, max_positions=64,
        pretrain_steps=1, seq_len=16, batch_size=2, lr=1e-3, seed=0, precision=precision,
    )  # fmt: skip
    base.build(out, repo / "data" / "tiny", settings)
    assert seen == [autocast]
    assert json.loads((out / "build_args.json").read_text())["precision"] == recorded


def test_one_pretraining_step_runs_without_autocast(tiny_tokenizer):
    """The fp32 path really trains (the loss is finite and the weights move)."""
    model = base.MistralForCausalLM(
        base.tiny_config(len(tiny_tokenizer), 32, 1, 2, 1, 128)
    )
    before = model.lm_head.weight.detach().clone()
    texts = ["one two three four five six seven eight nine ten"] * 4
    base.pretrain(model, tiny_tokenizer, texts, 1, 8, 2, 1e-2, 0, None)
    assert not torch.equal(before, model.lm_head.weight)
