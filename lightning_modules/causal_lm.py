"""What the SFT and DPO modules share: the response-only forward pass, optimiser, lean checkpoints, export."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torchmetrics import MeanMetric

from common.atomic import atomic_folder
from common.constants import IGNORE_INDEX
from common.errors import ConfigError
from common.onednn import cap_primitive_cache
from common.provenance import run_provenance
from common.settings import OptimizerSettings
from datamodules.collate import RESPONSE_ROWS, RESPONSE_SOURCES, RESPONSE_TARGETS
from lightning_modules.decoder_layers import check_checkpointing_options
from lightning_modules.loading import decoder_and_head
from lightning_modules.optim import configure_adamw
from lightning_modules.packed_attention import length_kwargs, use_packed_sdpa
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
    packed_sdpa: bool = True  # stock sdpa -> PACKED_SDPA (each packed example on its own); False: sdpa's (N, N) mask

    def __init__(
        self, packed_sdpa: bool = True, gradient_checkpointing: bool = False, checkpoint_last_layer: bool = False
    ) -> None:
        """The options of the decoder's layers every trainer takes (documented on each trainer), checked here once;
        the trainer itself records its arguments (``save_hyperparameters`` reads the calling constructor's)."""
        super().__init__()
        check_checkpointing_options(gradient_checkpointing, checkpoint_last_layer)
        self.packed_sdpa = packed_sdpa
        # Frozen base weights are not in the checkpoint (see on_save_checkpoint).
        self.strict_loading = False

    def response_forward(self, model: torch.nn.Module, batch: dict) -> ResponseOutputs:
        """Run the transformer body, then the LM head on response positions only.

        Projecting every position onto a 32k vocabulary costs as much as a layer of a 7B model and
        its logits dominate activation memory; prompt and padding positions carry no loss, so they
        skip the head entirely.
        """
        decoder, head = decoder_and_head(model)
        if self.packed_sdpa:
            use_packed_sdpa(model)
        lengths = length_kwargs(model, batch)
        shared = RESPONSE_SOURCES in batch
        if shared and not lengths:  # stock attention would let each response see the other, or not the prompt
            raise ConfigError(
                "data.share_prompt: the model must run the packed attention, which knows the shared-prompt layout: "
                "set model.packed_sdpa: true and keep attn_implementation at sdpa, or set data.share_prompt: false."
            )
        hidden = decoder(
            input_ids=batch["input_ids"],
            attention_mask=batch.get("attention_mask"),
            position_ids=batch.get("position_ids"),
            use_cache=False,
            **lengths,
        ).last_hidden_state  # (B, T, H)
        if shared:  # each response token is predicted from a listed position (a rejected one's first: the prompt's)
            return ResponseOutputs(
                logits=head(hidden[0, batch[RESPONSE_SOURCES]]),
                targets=batch[RESPONSE_TARGETS],
                row_index=batch[RESPONSE_ROWS],
                num_rows=num_examples(batch),
            )
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

    def setup(self, stage: str) -> None:
        # Before the run's first bf16 matmul on a CPU (a DPO reference pass runs in its setup, after this).
        cap_primitive_cache(self.trainer.strategy.root_device.type, str(self.trainer.precision))

    def configure_optimizers(self) -> dict:
        config = configure_adamw(self, self.optimizer_settings, int(self.trainer.estimated_stepping_batches))
        # The fused AdamW kernel updates all tensors in one pass; torch's default on CPU is a loop over tensors,
        # about 6x slower (2.2 s against 0.35 s a step for 17M weights on a 2-core CPU).
        if self.optimizer_settings.fused:
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
        with atomic_folder(out_dir) as staging:
            self.save_weights(staging, state_dict)
            if tokenizer is not None:
                tokenizer.save_pretrained(staging)
            details = {"kind": "lora_adapter" if self.uses_lora else "full_model", **(info or {})}
            (staging / "export_info.json").write_text(json.dumps(details, indent=2, default=str))
        return Path(out_dir)

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
