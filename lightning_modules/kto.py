"""KTO from the SFT model, on unpaired desirable / undesirable completions (``datamodules.UnpairedDataModule``)."""

from __future__ import annotations

from typing import Any

import torch

from common.errors import ConfigError
from lightning_modules.dpo import DPOModule
from lightning_modules.preference_losses import UnpairedLogps, kto

KTO_METRICS = (
    "loss",
    "kl",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
)
"""Logged as ``<stage>/<name>``, TRL's KTO names: ``chosen`` are the desirable rows, ``rejected`` the undesirable."""

NOT_KTO_OPTIONS = {"losses": None, "loss_type": "sigmoid", "label_smoothing": 0.0, "nll_weight": 0.0}
"""DPOModule's loss options, which KTOModule leaves at their defaults (LightningCLI passes them all)."""


class KTOModule(DPOModule):
    """KTO (Ethayarajh et al. 2024, https://arxiv.org/abs/2402.01306) on top of the SFT model.

    Everything but the loss is :class:`~lightning_modules.dpo.DPOModule`'s: the policy (SFT model + a new LoRA, or
    all weights), the frozen SFT reference by any of the three strategies (``precomputed`` caches each row's two
    log-probs, its own completion's and the mismatched one's), loading, checkpointing and export. Each batch is
    :class:`~datamodules.unpaired.UnpairedDataModule`'s: B rows' own completions, then B mismatched ones for the KL
    estimate (:func:`~lightning_modules.preference_losses.kto`).

    Args:
        model_name_or_path: the SFT stage's export folder.
        beta: KTO's beta (the paper and TRL: 0.1).
        desirable_weight: ``w_D``, the weight of a desirable row's loss.
        undesirable_weight: ``w_U``, the weight of an undesirable row's loss (the paper: ``w_D n_D / (w_U n_U)`` in
            [1, 4/3]).
        **kwargs: DPOModule's options (``lora``, ``reference``, ``load``, ``optimizer``, ...), but not its loss
            options (``losses``, ``loss_type``, ``label_smoothing``, ``nll_weight``).
    """

    final_metrics = ("val/loss", "val/kl", "val/rewards/margins")

    def __init__(
        self,
        model_name_or_path: str,
        beta: float = 0.1,
        desirable_weight: float = 1.0,
        undesirable_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        given = [name for name, default in NOT_KTO_OPTIONS.items() if kwargs.get(name, default) != default]
        if given:
            raise ConfigError(
                f"model.{given[0]}: KTOModule's loss is KTO; set beta, desirable_weight, undesirable_weight."
            )
        super().__init__(model_name_or_path, beta=beta, **kwargs)
        self.kto_options = {
            "beta": beta,
            "desirable_weight": desirable_weight,
            "undesirable_weight": undesirable_weight,
        }
        try:  # the values, checked now rather than at the first step
            probe = torch.zeros(2)
            kto(UnpairedLogps(probe, probe, probe, probe, torch.tensor([True, False])), **self.kto_options)
        except ValueError as error:
            raise ConfigError(f"model: {error}") from None
        self.add_running_means(KTO_METRICS)

    def setup(self, stage: str) -> None:
        from datamodules.unpaired import UnpairedDataModule  # here: `datasets` is not on every machine (gpu_check)

        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and not isinstance(datamodule, UnpairedDataModule):
            raise ConfigError(
                f"KTOModule trains on unpaired rows: set data.class_path: datamodules.UnpairedDataModule "
                f"(got {type(datamodule).__name__}); it reads pairs too, splitting each into two rows."
            )
        super().setup(stage)

    def _shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        reference = self.reference_logps(batch)  # first, as DPOModule does: into the memory the last step freed
        policy = self.sequence_stats(self.model, batch)  # (2B,): the rows' own completions, then the mismatched
        rows = policy.logps.shape[0] // 2
        own, mismatched = slice(0, rows), slice(rows, None)
        desirable = batch["desirable"]  # (B,) bool
        logps = UnpairedLogps(
            policy.logps[own], reference[own], policy.logps[mismatched], reference[mismatched], desirable
        )
        terms = kto(logps, **self.kto_options)
        loss = terms.losses.mean()
        self.log_running_means({"loss": loss.detach(), "kl": terms.metrics["kl"]}, stage, rows)
        own_logps = policy.logps[own].detach()
        for kind, mask, rewards in (
            ("chosen", desirable, terms.chosen_rewards),
            ("rejected", ~desirable, terms.rejected_rewards),
        ):
            count = int(mask.sum())
            if count:  # a batch may hold only one kind; each mean is over the rows of its kind
                values = {f"rewards/{kind}": rewards.mean(), f"logps/{kind}": own_logps[mask].mean()}
                self.log_running_means(values, stage, count)
        if 0 < int(desirable.sum()) < rows:
            margin = terms.chosen_rewards.mean() - terms.rejected_rewards.mean()
            self.log_running_means({"rewards/margins": margin}, stage, rows)
        return loss
