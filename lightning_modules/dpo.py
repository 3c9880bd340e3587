"""Direct Preference Optimization from the SFT model, with three reference-model strategies."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from common.atomic import atomic_torch_save
from common.errors import ConfigError
from common.provenance import source_record
from common.settings import LoadSettings, LoraSettings, LossTerm, OptimizerSettings
from lightning_modules import reference as reference_cache
from lightning_modules.causal_lm import CausalLMModule
from lightning_modules.decoder_layers import compile_decoder_layers, enable_checkpointing
from lightning_modules.loading import (
    DPO_ADAPTER,
    SFT_ADAPTER,
    add_lora,
    check_sft_export,
    load_causal_lm,
    load_sft_model,
    load_trainable_base,
    training_load_settings,
)
from lightning_modules.losses import pair_tail_logps, token_logps, wpo_token_log_weights
from lightning_modules.preference_losses import (
    PairLogps,
    WeightedLoss,
    combine,
    metric_names,
    needs_reference,
    needs_tails,
    needs_wpo_weights,
    older_spelling,
    resolve_losses,
)

ReferenceStrategy = Literal["separate", "adapter", "precomputed"]
METRICS = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "logits/chosen",
    "logits/rejected",
)


@dataclass
class SequenceStats:
    """Per-row statistics of a ``2B``-row preference batch (chosen rows first)."""

    logps: torch.Tensor  # (2B,) summed response log-probs
    lengths: torch.Tensor  # (2B,) response token counts
    mean_logits: torch.Tensor  # (2B,) mean logit over response tokens and vocabulary (detached)
    tails: torch.Tensor | None = None  # (2B,) the part of logps beyond the pair's shared length (LD-DPO)
    wpo_log_weights: torch.Tensor | None = None  # (2B,) WPO's mean per-token log-weight (detached)


class DPOModule(CausalLMModule):
    """DPO (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290) and the pairwise methods it competes with, on
    top of the SFT model.

    The loss is a weighted list of the registered preference losses (``losses``,
    :data:`~lightning_modules.preference_losses.LOSSES`): DPO's ``sigmoid`` by default, or IPO, SimPO, ORPO, RPO
    (``sigmoid`` + ``sft``), MPO and the others. The policy is the SFT model plus a new trainable LoRA (or all
    weights, ``lora: null``); when a loss of the list needs a reference, it is the frozen SFT model, provided by
    one of three strategies:

    * ``separate``: a second frozen copy in eval mode (twice the weights in memory);
    * ``adapter``: the policy with the DPO adapter switched off under ``torch.no_grad()`` (LoRA only;
      no second copy);
    * ``precomputed``: reference log-probs of every pair computed once before training and cached on
      disk (no reference forward per step, no reference weights during training).

    When every loss is reference-free (``simpo``, ``orpo``, ``sft``) there is no reference at all: no second copy,
    no adapter switch, no precomputed pass, whatever ``reference`` says. Chosen and rejected responses go through
    one concatenated forward pass.

    Args:
        model_name_or_path: the SFT stage's export folder (LoRA adapter or full model); with ``from_base``, the base
            model (a Hub id or a folder).
        from_base: start from the base model, not from an SFT export: ORPO's own setting (Hong et al. 2024 train
            the base model on the preference pairs alone, the NLL term doing SFT's job). With a loss that needs a
            reference, the reference is the base model too.
        revision: with ``from_base``, the Hub branch, tag or commit of the base (resolved once to a commit, loaded
            and recorded, as the SFT stage does); ``null``: the default branch.
        lora: the new DPO adapter; ``null`` trains all weights.
        reference: ``separate``, ``adapter`` or ``precomputed``; unused when every loss is reference-free.
        beta: the losses' temperature (the study: 0.1), unless a loss entry sets its own.
        losses: the weighted loss list, e.g. ``[{name: sigmoid, weight: 0.8}, {name: bco_pair, weight: 0.2},
            {name: sft, weight: 1.0}]`` (MPO); ``null``: the one loss ``loss_type`` names (+ ``sft`` at
            ``nll_weight``). An ``sft`` term (RPO's NLL) is normalised by each rank's chosen tokens under DDP and the
            ranks' gradients averaged (as TRL does), not by the global token count as the SFT loss is: a 2-process
            run differs from 1 process in the 5th digit, where plain DPO matches to 1e-5.
        loss_type: the shorter spelling of a one-loss list, ``losses: [{name: <loss_type>}]``; only without
            ``losses``.
        label_smoothing: with ``loss_type``: that loss's ``label_smoothing`` (cDPO / robust ``eps``).
        nll_weight: with ``loss_type``: adds ``{name: sft, weight: nll_weight}`` (RPO's alpha, TRL's old
            ``rpo_alpha``); 0 adds nothing.
        merge_sft_adapter: ``true`` merges a LoRA SFT export into the base weights (measured first, refused when
            rounding to the weights' dtype would lose the update: :mod:`lightning_modules.merging`); ``false`` keeps
            it as a frozen stacked adapter, as 4-bit weights require. Unset: stacked when a DPO LoRA trains on
            frozen weights that are not float32 (a merge into bf16 moves each SFT-updated weight by up to half an
            ulp, ~6e-5 at 0.02: more than a DPO update at lr 5e-7, so the policy would start from another model
            than the SFT one SFT trained and evaluation scores, stacked), merged into float32 weights and for full
            fine-tuning. The export's ``export_info.json`` records which (``sft_adapter``).
        reference_cache_dir: folder of the precomputed-reference cache.
        load: how the weights are loaded, as in ``SFTModule`` (``load_in_4bit``: a QLoRA base, 4-bit NF4, under the
            SFT adapter kept stacked); ``null``: float32 weights, ``sdpa``, no 4-bit, no remote code (the same
            numbers on any machine).
        packed_sdpa: with packed batches, run each packed example on its own in SDPA (``PACKED_SDPA``, the
            default); ``false``: transformers' ``sdpa`` with a block-diagonal ``(N, N)`` mask (the same numbers,
            slower; the benchmark's baseline for this choice). Only with ``load.attn_implementation: sdpa``.
        gradient_checkpointing: recompute the decoder layers (all but the last) in the backward pass.
        checkpoint_last_layer: with ``gradient_checkpointing``, the last layer too.
        compile_layers: ``torch.compile`` each decoder layer. What these three cost and save:
            :mod:`lightning_modules.decoder_layers`.
        optimizer: AdamW and schedule (the study: lr 5e-7).
    """

    final_metrics = ("val/loss", "val/rewards/accuracies", "val/rewards/margins")

    def __init__(
        self,
        model_name_or_path: str,
        from_base: bool = False,
        revision: str | None = None,
        lora: LoraSettings | None = None,
        reference: ReferenceStrategy = "precomputed",
        beta: float = 0.1,
        losses: list[LossTerm] | None = None,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
        nll_weight: float = 0.0,
        merge_sft_adapter: bool | None = None,
        reference_cache_dir: str = "runs/reference_cache",
        load: LoadSettings | None = None,
        packed_sdpa: bool = True,
        gradient_checkpointing: bool = False,
        checkpoint_last_layer: bool = False,
        compile_layers: bool = False,
        optimizer: OptimizerSettings | None = None,
    ) -> None:
        super().__init__(packed_sdpa, gradient_checkpointing, checkpoint_last_layer)
        # Logged once at the end of fit, with the final metrics (CausalLMModule.on_fit_end), not at the start.
        self.save_hyperparameters(logger=False)
        self.loss_terms = self._resolve_losses(beta, losses, loss_type, label_smoothing, nll_weight)
        self.uses_reference = needs_reference(self.loss_terms)
        if not self.uses_reference:
            names = ", ".join(term.name for term in self.loss_terms)
            rank_zero_info(f"[reference] none: every loss of the run is reference-free ({names})")
        if self.uses_reference and reference == "adapter" and lora is None:
            raise ConfigError("reference: adapter disables the DPO LoRA to get the reference; it needs model.lora set.")
        load = training_load_settings(load, lora)
        if load.load_in_4bit and lora is None:
            raise ConfigError("load.load_in_4bit (QLoRA) trains a LoRA on a frozen 4-bit base: set model.lora.")
        self.model_name_or_path = model_name_or_path
        self.reference_strategy: ReferenceStrategy | None = reference if self.uses_reference else None  # None: none
        self.reference_cache_dir = reference_cache_dir
        self.reference_pass_seconds: dict[str, float] = {}  # per split, when this run computed the cache
        self.uses_lora = lora is not None
        self.trained_adapter = DPO_ADAPTER
        self.optimizer_settings = optimizer or OptimizerSettings(lr=5e-7)
        self.from_base = from_base
        if revision is not None and not from_base:
            raise ConfigError("model.revision pins the base model of from_base: true; an SFT export is a folder.")
        if from_base:
            policy, commit, source = load_trainable_base(model_name_or_path, revision, **load.kwargs())
            self.provenance = {"model": source}
            self.stacked, self.sft_adapter = False, None

            def load_reference() -> nn.Module:
                return load_causal_lm(model_name_or_path, revision=commit, **load.kwargs())

        else:
            export = check_sft_export(model_name_or_path)
            self.provenance = {"model": source_record(model_name_or_path, None, None, "model")}
            if export["base"] is not None:
                self.provenance["base"] = source_record(export["base"], None, export["base_revision"], "model")
            self.stacked = merge_sft_adapter is False or (
                merge_sft_adapter is None
                and lora is not None
                and export["kind"] == "lora_adapter"
                and (load.load_in_4bit or load.dtype != "float32")
            )
            # export_info.json's record of how the SFT adapter sits under the trained one (none: a full-model SFT)
            applied = {"applied": "stacked" if self.stacked else "merged", "dtype": load.dtype}
            self.sft_adapter = None if export["kind"] == "full_model" else applied
            policy = load_sft_model(model_name_or_path, merge_adapter=not self.stacked, **load.kwargs())

            def load_reference() -> nn.Module:
                return load_sft_model(model_name_or_path, merge_adapter=not self.stacked, **load.kwargs())

        if self.uses_reference and reference == "separate":
            reference_model = load_reference()
            reference_model.eval().requires_grad_(False)
            # Kept out of the module tree: not trained, not checkpointed, not wrapped by DDP.
            self.__dict__["reference_model"] = reference_model
        if gradient_checkpointing:
            enable_checkpointing(policy, last_layer=checkpoint_last_layer)
        self.model = self._add_dpo_weights(policy, lora)
        if compile_layers:
            compile_decoder_layers(self.model)
        self.model.train()
        self.add_running_means(METRICS + metric_names(self.loss_terms))

    @staticmethod
    def _resolve_losses(
        beta: float, losses: list[LossTerm] | None, loss_type: str, label_smoothing: float, nll_weight: float
    ) -> list[WeightedLoss]:
        """The run's loss list: ``losses``, or the older ``loss_type`` / ``label_smoothing`` / ``nll_weight``."""
        if nll_weight < 0:
            raise ConfigError(f"model.nll_weight (RPO's alpha) must be >= 0, got {nll_weight}.")
        older = older_spelling(loss_type, label_smoothing, nll_weight)
        if losses is not None and (loss_type != "sigmoid" or label_smoothing != 0.0 or nll_weight != 0.0):
            spelled = ", ".join(
                "{" + ", ".join(f"{key}: {value}" for key, value in entry.items() if value is not None) + "}"
                for entry in older
            )
            raise ConfigError(
                "model.losses and model.loss_type / label_smoothing / nll_weight both set: write only losses "
                f"(here: add the older ones as losses: [{spelled}])."
            )
        entries = older if losses is None else [asdict(term) for term in losses]
        try:
            return resolve_losses(entries, default_beta=beta)
        except ValueError as error:
            raise ConfigError(f"model.{error}") from None

    def _add_dpo_weights(self, policy: nn.Module, lora: LoraSettings | None) -> nn.Module:
        if lora is None:
            if self.stacked:
                raise ConfigError(
                    "Full fine-tuning DPO needs the SFT adapter merged: set model.merge_sft_adapter: true."
                )
            # Every weight trains; a LoRA SFT export merged into its base comes back from PEFT frozen.
            return policy.requires_grad_(True)
        if not self.stacked:
            return add_lora(policy, lora, adapter_name=DPO_ADAPTER)
        policy.add_adapter(DPO_ADAPTER, lora.peft_config())
        self._activate_stack(policy)
        return policy

    @staticmethod
    def _activate_stack(model: nn.Module) -> None:
        """Both adapters active, only the DPO one trainable."""
        model.base_model.set_adapter([SFT_ADAPTER, DPO_ADAPTER])
        for name, param in model.named_parameters():
            param.requires_grad = f".{DPO_ADAPTER}." in name

    @contextlib.contextmanager
    def _dpo_adapter_off(self) -> Iterator[None]:
        """The policy without the DPO adapter, i.e. the SFT model."""
        if not self.stacked:
            with self.model.disable_adapter():
                yield
            return
        self.model.base_model.set_adapter(SFT_ADAPTER, inference_mode=True)
        try:
            yield
        finally:
            self._activate_stack(self.model)

    def sequence_stats(self, model: nn.Module, batch: dict, policy: bool = False) -> SequenceStats:
        """Summed response log-probs, lengths and mean logits of every row of the batch; with ``policy``, also what
        the run's losses read of the policy alone (LD-DPO's tails, WPO's log-weights), when they read it."""
        out = self.response_forward(model, batch)
        per_token = token_logps(out.logits, out.targets)  # (N,)
        zeros = per_token.new_zeros(out.num_rows)
        logps = zeros.index_add(0, out.row_index, per_token)  # (2B,)
        lengths = torch.bincount(out.row_index, minlength=out.num_rows)  # (2B,)
        tails = wpo_log_weights = None
        if policy and needs_tails(self.loss_terms):
            tails = pair_tail_logps(per_token, out.row_index, lengths)
        with torch.no_grad():
            logit_sums = zeros.index_add(0, out.row_index, out.logits.float().mean(-1))
            if policy and needs_wpo_weights(self.loss_terms):
                weight_sums = zeros.index_add(0, out.row_index, wpo_token_log_weights(out.logits, out.targets))
                wpo_log_weights = weight_sums / lengths.clamp(min=1)
        return SequenceStats(logps, lengths, logit_sums / lengths.clamp(min=1), tails, wpo_log_weights)

    @torch.no_grad()
    def reference_logps(self, batch: dict) -> torch.Tensor:
        """``(2B,)`` reference log-probs of the batch's rows, from the configured strategy."""
        if self.reference_strategy is None:
            raise RuntimeError("no loss of this run reads the reference, so there is none.")
        if "reference_chosen_logps" in batch:
            return torch.cat([batch["reference_chosen_logps"], batch["reference_rejected_logps"]])
        if self.reference_strategy == "precomputed":
            raise RuntimeError("reference: precomputed, but the batch carries no reference log-probs.")
        if self.reference_strategy == "separate":
            return self.sequence_stats(self.reference_model, batch).logps
        with self._dpo_adapter_off():
            return self.sequence_stats(self.model, batch).logps

    def _shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        # The reference first: its no-grad forward then reuses the memory the previous step's backward freed
        # instead of claiming fresh memory on top of the policy's saved activations. Measured on a 2-core CPU
        # (docs/results.md, 2026-12-07) it halved the live reference's cost; on a GPU the step's peak no
        # longer holds the reference's logits beside those activations.
        reference = self.reference_logps(batch) if self.uses_reference else None
        policy = self.sequence_stats(self.model, batch, policy=True)
        pairs = policy.logps.shape[0] // 2
        chosen, rejected = slice(0, pairs), slice(pairs, None)

        def halves(rows: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
            return (None, None) if rows is None else (rows[chosen], rows[rejected])

        logps = PairLogps(
            policy.logps[chosen],
            policy.logps[rejected],
            policy.lengths[chosen],
            policy.lengths[rejected],
            *halves(reference),
            *halves(policy.tails),
            *halves(policy.wpo_log_weights),
        )
        loss, terms = combine(self.loss_terms, logps)
        values = {"loss": loss.detach(), **terms.metrics}
        if terms.chosen_rewards is not None and terms.rejected_rewards is not None:
            chosen_rewards, rejected_rewards = terms.chosen_rewards, terms.rejected_rewards
            values |= {
                "rewards/chosen": chosen_rewards.mean(),
                "rewards/rejected": rejected_rewards.mean(),
                "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
                "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
            }
        values |= {
            "logps/chosen": policy.logps[chosen].detach().mean(),
            "logps/rejected": policy.logps[rejected].detach().mean(),
            "logits/chosen": policy.mean_logits[chosen].mean(),
            "logits/rejected": policy.mean_logits[rejected].mean(),
        }
        self.log_running_means(values, stage, pairs)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    # ---- reference placement and precomputation ------------------------------------------------

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # Here, after the DataModule's setup and before any checkpoint is restored, the policy is
        # still exactly the SFT model, and the dataloaders are not built yet.
        if self.reference_strategy == "precomputed":
            self.model.to(self.trainer.strategy.root_device)
            self._attach_precomputed_reference()

    def on_fit_start(self) -> None:
        if self.reference_strategy == "separate":
            self.reference_model.to(self.device)

    def _attach_precomputed_reference(self) -> None:
        """Compute (or read from the cache) the reference log-probs of every train and val pair.

        Under several processes every rank computes its share of the pairs and the shares are summed into the one
        cache (:meth:`_compute_reference_cache`): no rank waits at a barrier while another runs the whole pass (the
        study's pass takes ~0.65 h on one H100; collectives time out after 30 minutes). If any rank cannot see the
        cache file (a disk of its own), all of them compute it.
        """
        datamodule = self.trainer.datamodule
        if self.reference_strategy != "precomputed" or getattr(datamodule, "reference_attached", False):
            return
        precision = str(self.trainer.precision)
        strategy = self.trainer.strategy
        for split in ("train", "val"):
            dataset = getattr(datamodule, f"{split}_dataset")
            if dataset is None:
                continue
            path = reference_cache.cache_path(
                self.reference_cache_dir, self.model_name_or_path, datamodule.fingerprints[split], precision
            )
            if strategy.reduce_boolean_decision(not path.is_file(), all=False):
                cached = self._compute_reference_cache(datamodule, split, path)
            else:
                rank_zero_info(f"[reference] {split}: reusing cached reference log-probs {path}")
                cached = reference_cache.load_cache(path)
            datamodule.attach_reference_logps(split, cached["chosen"], cached["rejected"])
        datamodule.reference_attached = True

    @torch.no_grad()
    def _compute_reference_cache(self, datamodule, split: str, path) -> dict[str, torch.Tensor]:
        """This rank's share of the split's reference log-probs, summed over the ranks into every pair's value; rank 0
        writes the cache. Returns ``{"chosen": (P,), "rejected": (P,)}`` on the CPU, the same on every rank.

        Each pair is computed by exactly one rank and is 0 on the others, so the sum is that rank's value exactly:
        the cache equals the one a single process writes (same batches' rows, up to the batch composition's effect
        on the kernels: batches of the same pairs in the same order when ``world_size`` is 1).
        """
        strategy = self.trainer.strategy
        world_size, rank = strategy.world_size, strategy.global_rank
        dataset = getattr(datamodule, f"{split}_dataset")
        loader = datamodule.reference_dataloader(split, rank=rank, world_size=world_size)
        device = strategy.root_device
        logps_by_pair = torch.zeros(2, len(dataset), device=device)  # (chosen | rejected, P): this rank's share
        was_training = self.model.training
        self.model.eval()
        share = f" ({world_size} processes, one share each)" if world_size > 1 else ""
        rank_zero_info(f"[reference] {split}: computing reference log-probs of {len(dataset)} pairs once{share}")
        start = time.perf_counter()
        context = self._dpo_adapter_off() if self.uses_lora else contextlib.nullcontext()
        with context, self.trainer.precision_plugin.forward_context():
            for batch in loader:
                batch = strategy.batch_to_device(batch, device)
                logps = self.sequence_stats(self.model, batch).logps.float()  # (2B,): chosen rows, then rejected
                pairs = logps.shape[0] // 2
                logps_by_pair[:, batch["pair_index"]] = logps.view(2, pairs)
        self.model.train(was_training)
        if world_size > 1:
            logps_by_pair = strategy.reduce(logps_by_pair, reduce_op="sum")
        logps_by_pair = logps_by_pair.cpu()
        # Public: what the one-off pass cost (the benchmark charges it to the run's throughput).
        self.reference_pass_seconds[split] = time.perf_counter() - start
        cached = {"chosen": logps_by_pair[0].clone(), "rejected": logps_by_pair[1].clone()}
        if strategy.is_global_zero:
            atomic_torch_save(cached, path)  # never a half-written cache
        strategy.barrier("reference-cache")  # written before any rank goes on (and might read it)
        rank_zero_info(f"[reference] {split}: saved {path} ({self.reference_pass_seconds[split]:.1f} s)")
        return cached
