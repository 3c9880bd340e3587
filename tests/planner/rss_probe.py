"""Measure a few LoRA SFT steps' resident memory, in a process of its own (run by test_measured_rss.py).

    python rss_probe.py build OUT LAYERS        a randomly initialised Mistral-7B-v0.1-shaped model, fp32
    python rss_probe.py measure MODEL ROWS LENGTH CHECKPOINTING STEPS
        prints JSON: rss_before_model, peak_rss_training (bytes)

The peak is the kernel's high-water mark (VmHWM), reset once the model is loaded (``/proc/self/clear_refs``),
so it covers the training steps only; the increase is that peak minus the resident memory before the model
was loaded (imports and the synthetic batches already in memory).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def build(out: str, layers: int) -> None:
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    config = json.loads((REPO / "configs/models/mistral-7b-v0.1.json").read_text())
    config.update(num_hidden_layers=layers, torch_dtype="float32")
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(**config))
    model.save_pretrained(out, safe_serialization=True)


def batches(rows: int, length: int, steps: int, vocab: int = 32000, prompt: int = 16) -> list[dict]:
    """Packed batches of ``rows`` full-length rows, each a 16-token prompt and a response (SFTCollator)."""
    import torch

    from datamodules.collate import SFTCollator
    from lightning_modules.losses import IGNORE_INDEX

    generator = torch.Generator().manual_seed(0)
    collate = SFTCollator(pad_token_id=2, pack=True)
    out = []
    for _ in range(steps):
        examples = []
        for _ in range(rows):
            ids = torch.randint(3, vocab, (length,), generator=generator).tolist()
            examples.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
        out.append(collate(examples))
    return out


def measure(model_dir: str, rows: int, length: int, checkpointing: bool, steps: int) -> dict:
    import lightning as L
    from torch.utils.data import DataLoader

    from common.settings import LoadSettings, LoraSettings
    from lightning_modules.sft import SFTModule

    data = batches(rows, length, steps)
    before = status_kib("VmRSS") * 1024
    module = SFTModule(
        model_dir,
        lora=LoraSettings(r=16, alpha=32, dropout=0.05),
        load=LoadSettings(dtype="float32"),
        gradient_checkpointing=checkpointing,
    )
    loaded = status_kib("VmRSS") * 1024
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak of the steps below only
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    loader = DataLoader(data, batch_size=None)  # the batches are ready: served as they are
    trainer.fit(module, train_dataloaders=loader)
    return {
        "rss_before_model": before,
        "rss_model_loaded": loaded,
        "peak_rss_training": status_kib("VmHWM") * 1024,
        "rss_anon_after": status_kib("RssAnon") * 1024,
        "rss_file_after": status_kib("RssFile") * 1024,
    }


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2], int(sys.argv[3]))
    else:
        _, _, model_dir, rows, length, checkpointing, steps = sys.argv
        print(json.dumps(measure(model_dir, int(rows), int(length), checkpointing == "1", int(steps))))
