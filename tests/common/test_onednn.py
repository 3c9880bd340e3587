"""The oneDNN primitive-cache cap: set for bf16 on a CPU only, never over the user's own value, and by a real fit."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from common.onednn import CACHE_VARIABLES, CPU_BF16_CACHE_CAPACITY, cap_primitive_cache


@pytest.fixture
def clean(monkeypatch):
    for name in CACHE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_a_cpu_bf16_run_is_capped(clean):
    assert cap_primitive_cache("cpu", "bf16-mixed") is True
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(CPU_BF16_CACHE_CAPACITY) == "64"


@pytest.mark.parametrize(("device", "precision"), [("cpu", "32-true"), ("cpu", None), ("cuda", "bf16-mixed")])
def test_fp32_and_gpu_runs_are_left_alone(clean, device, precision):
    assert cap_primitive_cache(device, precision) is False
    assert not any(name in os.environ for name in CACHE_VARIABLES)


@pytest.mark.parametrize("name", CACHE_VARIABLES)
def test_the_users_value_wins(clean, monkeypatch, name):
    monkeypatch.setenv(name, "512")
    assert cap_primitive_cache("cpu", "bf16-true") is False
    assert os.environ[name] == "512" and len([n for n in CACHE_VARIABLES if n in os.environ]) == 1


def test_a_bf16_fit_on_a_cpu_sets_it_before_training(tiny_model_dir, tmp_path):
    """Through the module's ``setup`` (the benchmark builds its Trainer without the CLI), in a fresh process."""
    script = f"""
import os, lightning as L, torch
from lightning_modules.sft import SFTModule
from common.settings import LoraSettings
seen = {{}}
class Probe(L.Callback):
    def on_train_start(self, trainer, module):
        seen["cap"] = os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY")
module = SFTModule({str(tiny_model_dir)!r}, lora=LoraSettings(r=2, alpha=4))
ids = torch.randint(3, 100, (4, 16))
batch = {{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids,
         "num_real_tokens": torch.tensor(64), "num_loss_tokens": torch.tensor(60)}}
data = torch.utils.data.DataLoader([batch], batch_size=None)
trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", max_steps=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, callbacks=[Probe()])
trainer.fit(module, train_dataloaders=data)
print("cap", seen["cap"])
"""
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARIABLES}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "cap 64"
