"""Supervised fine-tuning: token-level cross-entropy on response tokens, LoRA / QLoRA or full."""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric

from common.errors import ConfigError
from common.settings import LoadSettings, LoraSettings, OptimizerSettings
from lightning_modules.causal_lm import CausalLMModule
from lightning_modules.decoder_layers import compile_decoder_layers, enable_checkpointing
from lightning_modules.loading import add_lora, load_trainable_base, training_load_settings
from lightning_modules.losses import sft_loss


class SFTModule(CausalLMModule):
    """Fine-tune a causal LM on instruction data with :func:`~lightning_modules.losses.sft_loss`.

    Args:
        model_name_or_path: Hub id (``mistralai/Mistral-7B-v0.1``) or local ``save_pretrained`` folder.
        lora: LoRA settings (the study: r=16, alpha=32, dropout 0.05); ``null`` for full fine-tuning.
        load: how the weights are loaded: ``dtype``, ``attn_implementation``, ``load_in_4bit`` (QLoRA: a frozen
            4-bit NF4 base under the LoRA) and ``trust_remote_code``. ``load.dtype: auto``: through
            ``train.py``, what ``trainer.precision`` implies, the compute dtype for a LoRA's frozen base and fp32
            for weights trained under mixed precision; elsewhere the same for ``precision: auto`` on this machine.
            ``null`` or an unset field: ``LoadSettings``' defaults (float32 weights, ``sdpa``, no 4-bit, no remote
            code: the same numbers on any machine).
        packed_sdpa: with packed batches, run each packed example on its own in SDPA (``PACKED_SDPA``, the
            default); ``false``: transformers' ``sdpa`` with a block-diagonal ``(N, N)`` mask (the same numbers,
            slower; the benchmark's baseline for this choice). Only with ``load.attn_implementation: sdpa``.
        gradient_checkpointing: recompute the decoder layers (all but the last) in the backward pass.
        checkpoint_last_layer: with ``gradient_checkpointing``, the last layer too.
        compile_layers: ``torch.compile`` each decoder layer. What these three cost and save:
            :mod:`lightning_modules.decoder_layers`.
        optimizer: AdamW and learning-rate schedule settings.
        revision: for a Hub model, the branch, tag or commit to load (``None``: the default branch). It is
            resolved once to a commit, which is loaded and recorded (export_info.json, saved config, card).
    """

    final_metrics = ("val/loss", "val/perplexity")

    def __init__(
        self,
        model_name_or_path: str,
        lora: LoraSettings | None = None,
        load: LoadSettings | None = None,
        packed_sdpa: bool = True,
        gradient_checkpointing: bool = False,
        checkpoint_last_layer: bool = False,
        compile_layers: bool = False,
        optimizer: OptimizerSettings | None = None,
        revision: str | None = None,
    ) -> None:
        super().__init__(packed_sdpa, gradient_checkpointing, checkpoint_last_layer)
        # Logged once at the end of fit, with the final metrics (CausalLMModule.on_fit_end), not at the start.
        self.save_hyperparameters(logger=False)
        load = training_load_settings(load, lora)
        if load.load_in_4bit and lora is None:
            raise ConfigError("load.load_in_4bit (QLoRA) trains a LoRA adapter on a frozen 4-bit base: set model.lora.")
        self.model_name_or_path = model_name_or_path
        self.uses_lora = lora is not None
        self.optimizer_settings = optimizer or OptimizerSettings()
        model, _, source = load_trainable_base(model_name_or_path, revision, **load.kwargs())
        self.provenance = {"model": source}
        if gradient_checkpointing:
            enable_checkpointing(model, last_layer=checkpoint_last_layer)
        self.model = add_lora(model, lora) if lora is not None else model
        if compile_layers:
            compile_decoder_layers(self.model)
        # from_pretrained returns the model in eval mode and Lightning keeps each submodule's mode,
        # so without this the LoRA dropout would never act during training.
        self.model.train()
        self.val_loss = MeanMetric()
        self._window_tokens = 0  # response tokens seen since the last optimiser step

    def _loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.response_forward(self.model, batch)
        return sft_loss(out.logits, out.targets), batch["num_loss_tokens"]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.response_forward(self.model, batch)
        nll_sum = sft_loss(out.logits, out.targets, num_tokens=1)  # summed over this micro-batch's tokens
        num_tokens = batch["num_loss_tokens"]
        self._window_tokens = self._window_tokens + num_tokens
        self.log("train/loss", nll_sum.detach() / num_tokens.clamp(min=1), prog_bar=True, batch_size=int(num_tokens))
        # Backpropagate the sum; on_before_optimizer_step divides the gradient by the response tokens
        # of the whole accumulation window on all ranks, so K micro-batches equal one batch of K times
        # the rows exactly, however their token counts differ.
        return nll_sum

    def on_before_optimizer_step(self, optimizer) -> None:
        tokens = self.trainer.strategy.reduce(
            torch.as_tensor(self._window_tokens, device=self.device).float(), reduce_op="sum"
        )
        # Lightning divided each micro-batch loss by K, and DDP averaged the gradients over the ranks.
        scale = self.trainer.accumulate_grad_batches * self.trainer.world_size / tokens.clamp(min=1)
        for param in self.parameters():
            if param.grad is not None:
                param.grad.mul_(scale)
        self._window_tokens = 0

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, num_tokens = self._loss(batch)
        # Weighted by tokens: the epoch's val/loss is the mean NLL per response token.
        self.val_loss.update(loss, weight=num_tokens)

    def on_validation_epoch_end(self) -> None:
        mean_nll = self.val_loss.compute()
        self.val_loss.reset()
        self.log("val/loss", mean_nll, prog_bar=True, sync_dist=False)
        self.log("val/perplexity", torch.exp(mean_nll), sync_dist=False)
