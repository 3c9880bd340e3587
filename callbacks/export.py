"""Export the trained weights in Hugging Face format at the end of fit."""

from __future__ import annotations

import resource
import shutil
import sys
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from callbacks.export_card import write_export_card
from common.provenance import run_provenance
from datamodules.tokenizer import load_tokenizer


class HFExportCallback(L.Callback):
    """Save the adapter (LoRA) or full model, and the tokenizer, with ``save_pretrained``.

    The folder loads with ``PeftModel.from_pretrained`` (adapter) or
    ``AutoModelForCausalLM.from_pretrained`` (full model), no Lightning code needed. Only rank 0
    writes; the write is atomic (see ``CausalLMModule.export_pretrained``). The folder's README.md is
    our model card (``callbacks.export_card``), in place of the empty template peft writes.

    Args:
        dirpath: export folder, e.g. ``outputs/sft``.
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath
        self._started: float | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Before the module's own setup, so a precomputed reference pass counts in the run's time.
        self._started = time.monotonic()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank must ask, not only rank 0
        state_dict = pl_module.export_state()  # FSDP2: every rank takes part in gathering the shards
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        tokenizer = getattr(datamodule, "tokenizer", None) or load_tokenizer(pl_module.model_name_or_path)
        info = {
            "stage": type(pl_module).__name__,
            "source_model": pl_module.model_name_or_path,
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "template": getattr(datamodule, "template", None),
            # DPO: how the SFT adapter sits under the trained one, {"applied": "merged" | "stacked", "dtype": ...}
            "sft_adapter": getattr(pl_module, "sft_adapter", None),
            # a preference run from the base model, with no SFT stage (ORPO's setting): "base"
            **({"start": "base"} if getattr(pl_module, "from_base", False) else {}),
            # "bf16-mixed (CPU with native bf16: AVX512_BF16)": what the run computed in, and why
            "precision": str(getattr(trainer, "precision_choice", trainer.precision)),
            # Hub commits (or local files' SHA-256) of the model and data, and the tokenised data's fingerprint
            "provenance": run_provenance(pl_module, datamodule),
            # what the run cost, for the methods study's table: this process only (a resumed run, from its resume)
            "cost": run_cost(self._started, pl_module.device),
        }
        out = pl_module.export_pretrained(self.dirpath, tokenizer, info, state_dict)
        config = Path(log_dir or "") / "config.yaml"
        if config.is_file():
            shutil.copyfile(config, out / "training_config.yaml")
        # After the config copy: the card's settings table is read from training_config.yaml.
        write_export_card(out)
        rank_zero_info(f"Exported {info['stage']} weights in Hugging Face format to {out}")


def run_cost(started: float | None, device: torch.device) -> dict[str, float | None]:
    """What this training process cost so far: wall seconds since ``started`` (the trainer's setup, so loading the
    model is left out and a precomputed reference pass is in), its peak resident memory, and on a GPU the peak
    memory torch allocated there.

    Returns:
        ``{"fit_seconds", "peak_rss_bytes", "peak_gpu_bytes"}`` (``None`` where not measured).
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {
        "fit_seconds": None if started is None else round(time.monotonic() - started, 1),
        "peak_rss_bytes": float(peak if sys.platform == "darwin" else peak * 1024),
        "peak_gpu_bytes": float(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None,
    }
