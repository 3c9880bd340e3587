"""What the SFT and DPO modules share: the response-only forward pass, optimiser, lean checkpoints, export."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch

from lightning_modules.loading import decoder_and_head
from lightning_modules.losses import IGNORE_INDEX
from lightning_modules.optim import OptimizerSettings, configure_adamw


@dataclass
class ResponseOutputs:
    """Logits at response positions only.

    Attributes:
        logits: ``(N, V)`` scores at the N positions whose next token is a response token.
        targets: ``(N,)`` the response tokens they predict.
        row_index: ``(N,)`` which example (row of the padded batch, or segment of the packed one)
            each position belongs to.
        num_rows: number of examples in the batch.
    """

    logits: torch.Tensor
    targets: torch.Tensor
    row_index: torch.Tensor
    num_rows: int


def row_numbers(batch: dict) -> torch.Tensor:
    """``(B, T)`` example number of every token, for padded or packed batches."""
    if "position_ids" in batch and "attention_mask" not in batch:
        # Packed: a new example starts wherever the position restarts at 0.
        return torch.cumsum(batch["position_ids"] == 0, dim=-1) - 1  # (1, N)
    rows, length = batch["input_ids"].shape
    return torch.arange(rows, device=batch["input_ids"].device)[:, None].expand(rows, length)


def num_examples(batch: dict) -> int:
    return len(batch["row_lengths"]) if "row_lengths" in batch else batch["input_ids"].shape[0]


class CausalLMModule(L.LightningModule):
    """Base class of the trainers: holds ``self.model`` (a causal LM, maybe PEFT-wrapped).

    Checkpoints keep only the trainable weights when the base is frozen (LoRA): a 7B base is
    reloaded from its source, not written into every checkpoint.
    """

    model: torch.nn.Module
    optimizer_settings: OptimizerSettings
    uses_lora: bool
    trained_adapter: str = "default"

    def __init__(self) -> None:
        super().__init__()
        # Frozen base weights are not in the checkpoint (see on_save_checkpoint).
        self.strict_loading = False

    def response_forward(self, model: torch.nn.Module, batch: dict) -> ResponseOutputs:
        """Run the transformer body, then the LM head on response positions only.

        Projecting every position onto a 32k vocabulary costs as much as a layer of a 7B model and
        its logits dominate activation memory; prompt and padding positions carry no loss, so they
        skip the head entirely.
        """
        decoder, head = decoder_and_head(model)
        hidden = decoder(
            input_ids=batch["input_ids"],
            attention_mask=batch.get("attention_mask"),
            position_ids=batch.get("position_ids"),
            use_cache=False,
        ).last_hidden_state  # (B, T, H)
        targets = batch["labels"][:, 1:]  # (B, T-1): position t predicts token t+1
        mask = targets != IGNORE_INDEX
        logits = head(hidden[:, :-1][mask])  # (N, V)
        return ResponseOutputs(
            logits=logits,
            targets=targets[mask],
            row_index=row_numbers(batch)[:, :-1][mask],
            num_rows=num_examples(batch),
        )

    def configure_optimizers(self) -> dict:
        return configure_adamw(self, self.optimizer_settings, int(self.trainer.estimated_stepping_batches))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.uses_lora:
            trainable = {name for name, p in self.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def export_pretrained(self, out_dir: str | os.PathLike, tokenizer=None, info: dict | None = None) -> Path:
        """Save the adapter (LoRA) or the full model, plus the tokenizer, in Hugging Face format.

        Written into a temporary sibling folder and renamed into place, so a crash leaves either
        the previous export or the new one, never half of one. ``export_info.json`` records what
        was exported; its presence marks the export complete.
        """
        out = Path(out_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
        if self.uses_lora:
            adapter = self.trained_adapter
            self.model.save_pretrained(staging, safe_serialization=True, selected_adapters=[adapter])
            # PEFT writes a non-default adapter into a sub-folder; an export holds exactly one adapter.
            if (staging / adapter).is_dir():
                for item in (staging / adapter).iterdir():
                    os.replace(item, staging / item.name)
                (staging / adapter).rmdir()
        else:
            self.model.save_pretrained(staging, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        details = {"kind": "lora_adapter" if self.uses_lora else "full_model", **(info or {})}
        (staging / "export_info.json").write_text(json.dumps(details, indent=2, default=str))
        if out.exists():
            backup = out.with_name(f".{out.name}-old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(out, backup)
            os.replace(staging, out)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, out)
        return out


def settings_dict(settings) -> dict | None:
    """A dataclass as a plain dict (for export metadata), or ``None``."""
    return None if settings is None else asdict(settings)
