"""Reward model: a scalar score head on a causal LM's body, fitted to preference pairs (Bradley-Terry)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

from common.errors import ConfigError
from common.settings import LoadSettings, LoraSettings, OptimizerSettings
from datamodules.collate import RESPONSE_SOURCES
from datamodules.tokenizer import load_tokenizer
from lightning_modules.causal_lm import CausalLMModule, num_examples
from lightning_modules.decoder_layers import enable_checkpointing
from lightning_modules.loading import ModelLoadError, add_lora, load_trainable_base, training_load_settings
from lightning_modules.losses import bradley_terry_loss
from lightning_modules.packed_attention import length_kwargs, use_packed_sdpa
from lightning_modules.sharding import ShardingError

METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins")
SCORED_POSITION = "the last token of template(prompt) + response + EOS, as in training (right padding)"


def last_token_mask(batch: dict) -> torch.Tensor:
    """``(B, T)`` True at the last token of every example of a padded or packed batch, one per example.

    Padded (``attention_mask``): the last real token of each row::

        attention_mask [[1, 1, 1, 0],      ->  [[0, 0, 1, 0],
                        [1, 1, 1, 1]]           [0, 0, 0, 1]]

    Packed ``(1, N)`` (``position_ids`` restarting at 0 per example, no mask): the token before each
    restart, and the row's last token::

        position_ids   [[0, 1, 2, 0, 1]]   ->  [[0, 0, 1, 0, 1]]

    Read in row-major order, the True positions follow the examples' order.
    """
    if "attention_mask" in batch:
        real = batch["attention_mask"].bool()  # (B, T)
        real_next = torch.zeros_like(real)
        real_next[:, :-1] = real[:, 1:]
        return real & ~real_next
    if "position_ids" in batch:
        position_ids = batch["position_ids"]  # (1, N)
        last = torch.ones_like(position_ids, dtype=torch.bool)
        last[:, :-1] = position_ids[:, 1:] == 0
        return last
    last = torch.zeros_like(batch["input_ids"], dtype=torch.bool)  # unpadded rows of one length
    last[:, -1] = True
    return last


def reward_pad_token(tokenizer) -> str:
    """The pad token the export declares: the tokenizer's own when it differs from EOS, else its ``unk``.

    Hugging Face's sequence classifiers score the rightmost token that is not ``config.pad_token_id`` and
    ignore the attention mask. Every training row ends with EOS, so with pad = EOS (``load_tokenizer``'s
    choice for Mistral and the tiny base, which have no pad token) they would score the token before it.

    Raises:
        ModelLoadError: the tokenizer has neither a pad token distinct from EOS nor an ``unk`` token.
    """
    for token, token_id in (
        (tokenizer.pad_token, tokenizer.pad_token_id),
        (tokenizer.unk_token, tokenizer.unk_token_id),
    ):
        if token_id is not None and token_id != tokenizer.eos_token_id:
            return token
    raise ModelLoadError(
        f"{tokenizer.name_or_path}: the reward model needs a pad token other than EOS (its export is scored at the "
        "last non-pad token, and every row ends with EOS), and this tokenizer has neither a distinct pad token nor "
        "an unk token. Add one to the tokenizer (tokenizer.add_special_tokens) and save it with the base model."
    )


class RewardModule(CausalLMModule):
    """A reward model (Ouyang et al. 2022, https://arxiv.org/abs/2203.02155) trained with
    :func:`~lightning_modules.losses.bradley_terry_loss` on preference pairs.

    The base causal LM is loaded as ``AutoModelForSequenceClassification`` with one output: its body and a
    linear ``score`` head (zero-initialised, so every reward starts at 0 and the loss at ln 2). The reward
    of a row (prompt + response + EOS) is the head's output at the row's last token, found from the batch
    layout (``attention_mask`` when padded, ``position_ids`` when packed), never from a pad-token search.
    The head runs in fp32 on those positions only. With LoRA the head is trained in full (peft
    ``modules_to_save``) and the export merges the adapter: the export folder loads with
    ``AutoModelForSequenceClassification.from_pretrained`` alone.

    Args:
        model_name_or_path: the base: Hub id (``mistralai/Mistral-7B-v0.1``) or local ``save_pretrained`` folder
            of a causal LM (an SFT stage's full-model export works too).
        lora: LoRA settings; ``null`` for full fine-tuning.
        load: how the weights are loaded, as in ``SFTModule``, but not ``load_in_4bit`` (the export merges the
            LoRA into the base weights, and merged into 4-bit ones it is rounded); ``null``: float32 weights,
            ``sdpa``, no remote code (the same numbers on any machine).
        gradient_checkpointing: recompute each decoder layer's activations in the backward pass to save memory,
            every layer but the last (:func:`~lightning_modules.decoder_layers.enable_checkpointing`).
        optimizer: AdamW and learning-rate schedule settings.
        revision: for a Hub model, the branch, tag or commit to load (``None``: the default branch). It is
            resolved once to a commit, which is loaded and recorded (export_info.json, saved config, card).
    """

    final_metrics = ("val/loss", "val/rewards/accuracies", "val/rewards/margins")

    def __init__(
        self,
        model_name_or_path: str,
        lora: LoraSettings | None = None,
        load: LoadSettings | None = None,
        gradient_checkpointing: bool = False,
        optimizer: OptimizerSettings | None = None,
        revision: str | None = None,
    ) -> None:
        super().__init__()
        # Logged once at the end of fit, with the final metrics (CausalLMModule.on_fit_end), not at the start.
        self.save_hyperparameters(logger=False)
        self.model_name_or_path = model_name_or_path
        self.uses_lora = lora is not None
        self.optimizer_settings = optimizer or OptimizerSettings()
        load = training_load_settings(load, lora)
        if load.load_in_4bit:
            raise ConfigError(
                "load.load_in_4bit: the reward model does not support a 4-bit base: its export merges the LoRA into "
                "the base weights, and merged into 4-bit ones it is rounded, so the export would not score as "
                "trained. Set model.load.load_in_4bit: false."
            )
        model, self.commit, source = load_trainable_base(model_name_or_path, revision, num_labels=1, **load.kwargs())
        self.provenance = {"model": source}
        tokenizer = load_tokenizer(model_name_or_path, trust_remote_code=load.trust_remote_code, revision=self.commit)
        self.pad_token = reward_pad_token(tokenizer)
        # What the export declares, so Hugging Face's own forward scores the same token as rewards() does.
        model.config.pad_token_id = tokenizer.convert_tokens_to_ids(self.pad_token)
        nn.init.zeros_(model.score.weight)
        model.score.float()  # a (1, H) head: fp32 costs nothing and keeps rewards out of bf16 rounding
        if gradient_checkpointing:
            enable_checkpointing(model)
        if lora is not None:
            model = add_lora(model, lora, task_type="SEQ_CLS")
            for param in model.parameters():
                if param.requires_grad:  # peft's trained copy of the head takes the frozen base's dtype
                    param.data = param.data.float()
        self.model = model
        # from_pretrained returns the model in eval mode and Lightning keeps each submodule's mode.
        self.model.train()
        self.add_running_means(METRICS)

    def rewards(self, batch: dict) -> torch.Tensor:
        """``(R,)`` fp32 reward of every example of the batch, in order (preference batches: chosen rows first)."""
        if RESPONSE_SOURCES in batch:
            raise ConfigError("data.share_prompt: the reward model scores each row's last token, which the shared-"
                              "prompt layout does not keep in place: set data.share_prompt: false.")  # fmt: skip
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        use_packed_sdpa(self.model)
        hidden = base.base_model(
            input_ids=batch["input_ids"],
            attention_mask=batch.get("attention_mask"),
            position_ids=batch.get("position_ids"),
            use_cache=False,
            **length_kwargs(self.model, batch),
        ).last_hidden_state  # (B, T, H)
        last = hidden[last_token_mask(batch)]  # (R, H)
        if last.shape[0] != num_examples(batch):
            raise ValueError(f"found {last.shape[0]} row ends for {num_examples(batch)} examples: malformed batch")
        with torch.autocast(hidden.device.type, enabled=False):
            return base.score(last.float()).squeeze(-1)  # (R,)

    def _shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        rewards = self.rewards(batch)  # (2B,)
        pairs = rewards.shape[0] // 2
        chosen_rewards, rejected_rewards = rewards[:pairs], rewards[pairs:]
        loss = bradley_terry_loss(chosen_rewards, rejected_rewards).mean()
        chosen, rejected = chosen_rewards.detach(), rejected_rewards.detach()
        values = {
            "loss": loss.detach(),
            "rewards/chosen": chosen.mean(),
            "rewards/rejected": rejected.mean(),
            "rewards/accuracies": (chosen > rejected).float().mean(),
            "rewards/margins": (chosen - rejected).mean(),
        }
        self.log_running_means(values, stage, pairs)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def configure_model(self) -> None:
        """Refuse FSDP2 sharding: the export merges the LoRA into a deep copy of the whole model, which needs
        every weight on one process. The reward model trains on one device or with DDP."""
        if isinstance(self.trainer.strategy, ModelParallelStrategy):
            raise ShardingError(
                "trainer.strategy: the reward model does not shard (its export merges the LoRA into the whole "
                "model); train it with strategy: auto or ddp."
            )

    def export_pretrained(
        self,
        out_dir: str | os.PathLike,
        tokenizer=None,
        info: dict | None = None,
        state_dict: dict[str, torch.Tensor] | None = None,
    ) -> Path:
        """Save a plain sequence classifier (LoRA merged in), its tokenizer and ``export_info.json``.

        The folder loads with ``AutoModelForSequenceClassification.from_pretrained`` and scores a right-padded
        batch at the same token as training: its config and tokenizer declare :func:`reward_pad_token`, not EOS.
        """
        if tokenizer is None:
            tokenizer = load_tokenizer(self.model_name_or_path, revision=self.commit)
        tokenizer = copy.deepcopy(tokenizer)  # the data module keeps its own (pad = EOS) for collation
        tokenizer.pad_token = self.pad_token
        tokenizer.padding_side = "right"
        metrics = self._trainer.callback_metrics if self._trainer is not None else {}
        accuracy = metrics.get("val/rewards/accuracies")
        details = {
            "kind": "reward_model",
            "base": self.model_name_or_path,
            "trained": "LoRA, merged" if self.uses_lora else "full fine-tuning",
            "held_out_pair_accuracy": None if accuracy is None else float(accuracy),
            "scored_position": SCORED_POSITION,
            "pad_token": self.pad_token,
            **(info or {}),
        }
        return super().export_pretrained(out_dir, tokenizer, details, state_dict)

    def save_weights(self, folder: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """The full classifier; with LoRA, a merged copy (the module keeps its adapter, e.g. to go on training).
        ``state_dict`` is always ``None`` here: the reward model is never sharded (:meth:`configure_model`)."""
        model = copy.deepcopy(self.model).merge_and_unload() if self.uses_lora else self.model
        model.save_pretrained(folder, safe_serialization=True)
