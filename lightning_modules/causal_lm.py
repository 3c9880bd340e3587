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
import torch.nn.functional as F
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torchmetrics import MeanMetric
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from common.provenance import run_provenance
from lightning_modules.loading import decoder_and_head
from lightning_modules.losses import IGNORE_INDEX
from lightning_modules.optim import OptimizerSettings, configure_adamw
from lightning_modules.sharding import data_parallel_mesh, gather_full_state, is_sharded, shard_causal_lm


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


PACKED_SDPA = "sdpa_packed"
"""Attention implementation that runs each packed example on its own (registered with transformers below)."""


def packed_lengths(position_ids: torch.Tensor | None, rows: int, length: int) -> list[list[int]]:
    """Length of every example in every row: a new one starts wherever the position does not follow the
    previous one (the rule transformers uses to detect packed rows)."""
    if position_ids is None:
        return [[length]] * rows
    starts = torch.ones(rows, length, dtype=torch.bool, device=position_ids.device)
    starts[:, 1:] = position_ids.expand(rows, -1).diff(dim=-1) != 1
    lengths = []
    for row in starts:
        bounds = torch.nonzero(row).flatten().tolist() + [length]
        lengths.append([end - start for start, end in zip(bounds[:-1], bounds[1:], strict=True)])
    return lengths


def packed_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    position_ids: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """``sdpa`` with causal attention inside each packed example and none across examples.

    Transformers' ``sdpa`` turns a packed ``(1, N)`` batch into an ``(N, N)`` block-diagonal mask: memory and
    compute quadratic in the whole batch and no causal skipping, slower than padding. Here each example is one
    ``is_causal`` call on its piece of ``(B, heads, N, head_dim)``: the same result at the cost of the examples'
    own lengths. Masked batches (padding, a KV cache) and non-causal modules go to the stock ``sdpa``.
    """
    rows, _, length, _ = query.shape
    causal = kwargs.get("is_causal", getattr(module, "is_causal", True))
    if attention_mask is not None or key.shape[2] != length or length == 1 or not causal:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    gqa = query.shape[1] != key.shape[1]
    outputs = []
    row_lengths = packed_lengths(position_ids, rows, length)
    # split (not slicing): its backward is one concatenation, not a zero-filled full-size gradient per example
    for lengths, *row in zip(row_lengths, query.split(1), key.split(1), value.split(1), strict=True):
        pieces = []
        for q, k, v in zip(*(t.split(lengths, dim=2) for t in row), strict=True):
            n = q.shape[2]
            band = None
            if sliding_window is not None and n > sliding_window:
                band = torch.ones(n, n, dtype=torch.bool, device=q.device).tril().triu(1 - sliding_window)
            pieces.append(
                F.scaled_dot_product_attention(
                    q, k, v, attn_mask=band, dropout_p=dropout, scale=scaling, is_causal=band is None, enable_gqa=gqa
                )
            )  # (1, heads, n, head_dim)
        outputs.append(torch.cat(pieces, dim=2))  # (1, heads, N, head_dim)
    out = torch.cat(outputs)  # (B, heads, N, head_dim)
    return out.transpose(1, 2).contiguous(), None  # (B, N, heads, head_dim)


def packed_sdpa_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    attention_mask: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor | None:
    """No mask when :func:`packed_sdpa_attention` separates the examples itself (no padding, no cache)."""
    if attention_mask is None and q_length == kv_length and not q_offset and not kv_offset:
        return None
    return sdpa_mask(
        batch_size, q_length, kv_length, q_offset=q_offset, kv_offset=kv_offset, attention_mask=attention_mask, **kwargs
    )


AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
AttentionMaskInterface.register(PACKED_SDPA, packed_sdpa_mask)


def use_packed_sdpa(model: torch.nn.Module) -> None:
    """Switch a model on stock ``sdpa`` to :data:`PACKED_SDPA` (identical results; other implementations are kept)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "_attn_implementation", None) == "sdpa":
        base.set_attn_implementation(PACKED_SDPA)


class CausalLMModule(L.LightningModule):
    """Base class of the trainers: holds ``self.model`` (a causal LM, maybe PEFT-wrapped).

    Checkpoints keep only the trainable weights when the base is frozen (LoRA): a 7B base is
    reloaded from its source, not written into every checkpoint.
    """

    model: torch.nn.Module
    optimizer_settings: OptimizerSettings
    uses_lora: bool
    trained_adapter: str = "default"
    final_metrics: tuple[str, ...] = ("val/loss",)  # logged with the hyper-parameters at the end of fit
    provenance: dict  # the model source as loaded (common.provenance); the data module records the data

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
        use_packed_sdpa(model)
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

    def add_running_means(self, names: tuple[str, ...]) -> None:
        """One weighted running mean per logged metric and stage (``train_metrics``, ``val_metrics``).

        ("train" cannot be a ModuleDict key: it is ``nn.Module.train``.)
        """
        self.train_metrics = nn.ModuleDict({metric_key(name): MeanMetric() for name in names})
        self.val_metrics = nn.ModuleDict({metric_key(name): MeanMetric() for name in names})

    def log_running_means(self, values: dict[str, torch.Tensor], stage: str, batch_size: int) -> None:
        """Log ``values`` as ``<stage>/<name>``, weighted by ``batch_size``: per step in training, per epoch in
        validation; ``loss`` also on the progress bar."""
        training = stage == "train"
        for name, value in values.items():
            metric = (self.train_metrics if training else self.val_metrics)[metric_key(name)]
            if training:
                metric(value, weight=batch_size)  # forward: updates the running mean and gives the step's value
            else:
                metric.update(value, weight=batch_size)
            self.log(
                f"{stage}/{name}",
                metric,
                on_step=training,
                on_epoch=not training,
                prog_bar=name == "loss",
                batch_size=batch_size,
            )

    def configure_optimizers(self) -> dict:
        config = configure_adamw(self, self.optimizer_settings, int(self.trainer.estimated_stepping_batches))
        # The fused AdamW kernel updates all tensors in one pass; torch's default on CPU is a loop over tensors,
        # about 6x slower (2.2 s against 0.35 s a step for 17M weights on a 2-core CPU).
        for group in config["optimizer"].param_groups:
            group.update(foreach=False, fused=True)
        return config

    def on_fit_end(self) -> None:
        """Log the run's hyper-parameters once, with its final metrics, so TensorBoard's HPARAMS tab can compare
        runs (Lightning would log them at the start, beside a placeholder ``hp_metric = -1``)."""
        if self.logger is None:
            return
        metrics = {
            name: float(self.trainer.callback_metrics[name])
            for name in self.final_metrics
            if name in self.trainer.callback_metrics
        }
        params = {key: value for key, value in self.hparams.items() if key != "_class_path"}
        choice = getattr(self.trainer, "precision_choice", None)
        params["precision"] = self.trainer.precision if choice is None else choice.precision
        if choice is not None:
            params["precision_reason"] = choice.reason
        params["provenance"] = run_provenance(self, self.trainer.datamodule)
        # {} (no validation ran), not None: None would make the TensorBoard logger write its -1 placeholder.
        self.logger.log_hyperparams(params, metrics=metrics, step=self.trainer.global_step)
        self.logger.save()
        # TensorBoardLogger writes hparams.yaml once, at the start (empty here): rewrite it with what was logged.
        hparams_file = Path(getattr(self.logger, "log_dir", None) or "") / "hparams.yaml"
        if self.trainer.is_global_zero and hparams_file.is_file() and hasattr(self.logger, "hparams"):
            save_hparams_to_yaml(hparams_file, self.logger.hparams)

    def on_train_start(self) -> None:
        """Put a resumed run's training loader back at its place in the epoch.

        Lightning hands the checkpoint's loader state (``ResumableDataLoader``: epoch, batches served) over only
        when it builds the training loader. ``configure_optimizers`` asks for ``estimated_stepping_batches``, which
        builds it before the loops are restored, so the state was dropped and a run resumed mid-epoch started its
        epoch again from the first batch (Lightning issue #20550, open in 2.6). Applied here, before the first
        batch is drawn; a no-op when not resuming or when Lightning applied it itself.
        """
        self.trainer.fit_loop._load_combined_loader_states()

    def configure_model(self) -> None:
        """Under ``ModelParallelStrategy``: shard ``self.model`` with FSDP2 (``lightning_modules.sharding``)."""
        if isinstance(self.trainer.strategy, ModelParallelStrategy):
            shard_causal_lm(self.model, data_parallel_mesh(self.device_mesh))

    def export_state(self) -> dict[str, torch.Tensor] | None:
        """The weights gathered whole on rank 0 when the model is sharded (a collective: every rank calls it before
        rank 0 exports), else ``None``: the export reads the model itself."""
        return gather_full_state(self.model) if is_sharded(self.model) else None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.uses_lora:
            trainable = {name for name, p in self.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def export_pretrained(
        self,
        out_dir: str | os.PathLike,
        tokenizer=None,
        info: dict | None = None,
        state_dict: dict[str, torch.Tensor] | None = None,
    ) -> Path:
        """Save the adapter (LoRA) or the full model, plus the tokenizer, in Hugging Face format.

        ``state_dict``: the weights to write instead of the model's own (:meth:`export_state` of a sharded model).

        Written into a temporary sibling folder and renamed into place, so a crash leaves either
        the previous export or the new one, never half of one. ``export_info.json`` records what
        was exported; its presence marks the export complete.
        """
        out = Path(out_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
        staging.chmod(0o755)  # mkdtemp makes it owner-only; an export is meant to be shared
        self.save_weights(staging, state_dict)
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

    def save_weights(self, folder: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Write the trained adapter (LoRA) or the full model into ``folder`` (the export's staging folder);
        ``state_dict`` (gathered shards) in place of the model's own weights when given."""
        if not self.uses_lora:
            self.model.save_pretrained(folder, safe_serialization=True, state_dict=state_dict)
            return
        adapter = self.trained_adapter
        self.model.save_pretrained(folder, safe_serialization=True, selected_adapters=[adapter], state_dict=state_dict)
        # PEFT writes a non-default adapter into a sub-folder; an export holds exactly one adapter.
        if (folder / adapter).is_dir():
            for item in (folder / adapter).iterdir():
                os.replace(item, folder / item.name)
            (folder / adapter).rmdir()


def metric_key(metric_name: str) -> str:
    """``rewards/chosen`` -> ``rewards_chosen`` (ModuleDict keys cannot hold a slash)."""
    return metric_name.replace("/", "_")


def settings_dict(settings) -> dict | None:
    """A dataclass as a plain dict (for export metadata), or ``None``."""
    return None if settings is None else asdict(settings)
