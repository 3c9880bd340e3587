"""Export the trained weights in Hugging Face format at the end of fit."""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning as L
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
            # "bf16-mixed (CPU with native bf16: AVX512_BF16)": what the run computed in, and why
            "precision": str(getattr(trainer, "precision_choice", trainer.precision)),
            # Hub commits (or local files' SHA-256) of the model and data, and the tokenised data's fingerprint
            "provenance": run_provenance(pl_module, datamodule),
        }
        out = pl_module.export_pretrained(self.dirpath, tokenizer, info, state_dict)
        config = Path(log_dir or "") / "config.yaml"
        if config.is_file():
            shutil.copyfile(config, out / "training_config.yaml")
        # After the config copy: the card's settings table is read from training_config.yaml.
        write_export_card(out)
        rank_zero_info(f"Exported {info['stage']} weights in Hugging Face format to {out}")
