"""The settings dataclasses that training and evaluation share, each field documented.

LightningCLI and jsonargparse read these docstrings: ``--print_config`` shows every field with its line. A
settings object checks itself when it is built and raises :class:`~common.errors.ConfigError` naming the key,
so a bad value stops the run before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

from common.errors import ConfigError


@dataclass
class LoadSettings:
    """How model weights are loaded (the keywords of ``lightning_modules.loading.load_causal_lm``).

    One default per field, whether a config writes ``load: null``, leaves ``load`` out or writes a ``load:`` section
    without the field: ``float32``, ``sdpa``, no 4-bit, no remote code (the same numbers on any machine).

    Attributes:
        dtype: weight dtype: ``float32`` (the default), ``bfloat16``, ``float16``, or ``auto``: the compute dtype of
            ``precision: auto`` on this machine (``common.precision``): bfloat16 on a GPU or CPU with native
            bf16, float16 on an older GPU, float32 on any other CPU (the study's configs ask for it).
        attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2``.
        load_in_4bit: quantise the frozen base to 4-bit NF4 (QLoRA; on a GPU or the CPU, bitsandbytes >= 0.46.1).
        trust_remote_code: run modelling code shipped with the checkpoint (off unless you trust it).
    """

    dtype: str = "float32"
    attn_implementation: str | None = "sdpa"
    load_in_4bit: bool = False
    trust_remote_code: bool = False

    def kwargs(self) -> dict[str, Any]:
        """The loading keywords, as ``load_causal_lm`` and ``load_sft_model`` take them."""
        return {
            "dtype": self.dtype,
            "attn_implementation": self.attn_implementation,
            "trust_remote_code": self.trust_remote_code,
            "load_in_4bit": self.load_in_4bit,
        }


@dataclass
class LoraSettings:
    """LoRA adapter hyper-parameters (Hu et al. 2021, https://arxiv.org/abs/2106.09685).

    Attributes:
        r: rank of the update ``B @ A``.
        alpha: scaling numerator; the update is scaled by ``alpha / r``.
        dropout: dropout on the adapter's input.
        target_modules: names of the linear layers that get an adapter.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"lora.r must be a positive integer (the rank of the update), got {self.r}.")
        if self.alpha <= 0:
            raise ConfigError(f"lora.alpha must be positive (the update is scaled by alpha / r), got {self.alpha}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}.")
        if not self.target_modules:
            raise ConfigError("lora.target_modules is empty: name the linear layers that get an adapter (q_proj...).")

    def peft_config(self, task_type: str = "CAUSAL_LM"):
        """The ``peft.LoraConfig`` of these settings; ``task_type`` ``SEQ_CLS`` for a sequence classifier."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            task_type=task_type,
        )


@dataclass
class OptimizerSettings:
    """Optimiser and learning-rate schedule.

    Attributes:
        lr: peak learning rate (the study: 2e-5 for SFT, 5e-7 for DPO).
        weight_decay: AdamW decoupled weight decay, applied to matrices only (not norms or biases).
        betas: AdamW moment coefficients.
        eps: AdamW denominator epsilon.
        warmup_ratio: share of the total steps spent warming up linearly from 0.
        warmup_steps: warm-up length in steps; overrides ``warmup_ratio`` when set.
        schedule: decay after warm-up: ``cosine``, ``linear`` or ``constant``.
        min_lr_ratio: the learning rate at the last step, as a share of ``lr``.
        fused: torch's fused AdamW kernel (one pass over all tensors); ``false``: torch's default, on a CPU a loop
            over tensors, about 6x slower per optimiser step (2.2 s against 0.35 s for 17M weights, 2 cores).
    """

    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_ratio: float = 0.03
    warmup_steps: int | None = None
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = 0.0
    fused: bool = True


@dataclass
class LossTerm:
    """One entry of a preference run's weighted loss list, ``model.losses`` (TRL: ``loss_type`` + ``loss_weights``).

    The run trains on ``sum_k weight_k * loss_k``. The losses and their options are in
    ``lightning_modules.preference_losses.LOSSES`` (each function's docstring has its formula and paper); an option
    a loss does not take is refused with the ones it does.

    Attributes:
        name: ``sigmoid`` (DPO), ``robust``, ``hinge``, ``ipo`` (length-normalised), ``ipo_sum``, ``exo_pair``,
            ``nca_pair``, ``bco_pair``, ``sppo_hard``, ``aot_pair``, ``aot_unpaired``, ``apo_zero``, ``apo_down``,
            ``discopop``, ``sigmoid_norm``; reference-free: ``simpo``, ``orpo``, ``sft`` (the chosen answers' NLL).
        weight: the loss's weight in the sum.
        beta: this loss's beta (ORPO: lambda); ``null``: the module's ``beta``.
        label_smoothing: the assumed share of flipped labels (sigmoid / cDPO, robust, exo_pair, aot, simpo);
            ``null``: the loss's default.
        gamma: SimPO's target reward margin; ``null``: its default (0.5, TRL's).
        tau: DiscoPOP's temperature; ``null``: its default (0.05).
        ld_alpha: LD-DPO (Liu et al. 2024): the policy's log-probs of the tokens beyond the pair's shared length
            count ``ld_alpha`` times, in [0, 1]; ``null``: off. Losses on the reference's log-ratios only.
        wpo: WPO (Zhou et al. 2024): each pair's loss weighted by how likely the policy is to produce the pair
            (TRL's ``use_weighting``); ``null``: off. Losses on the reference's log-ratios only.
    """

    name: str
    weight: float = 1.0
    beta: float | None = None
    label_smoothing: float | None = None
    gamma: float | None = None
    tau: float | None = None
    ld_alpha: float | None = None
    wpo: bool | None = None


@dataclass
class RunSettings:
    """Where a training run writes; the trainer adds the callbacks every run has (``study.run``).

    One run folder holds everything that belongs to the run, and the export is the one thing later stages read::

        <dir>/checkpoints/last.ckpt       the resume point (``--ckpt_path last``), every
                                          ``checkpoint_every_n_steps`` steps, after each validation and at the end
        <dir>/checkpoints/epoch=E-step=S.ckpt   the best by ``monitor`` so far
        <dir>/tensorboard/                TensorBoard event files and the resolved config.yaml
        <export_dir>/                     the Hugging Face export at the end of fit (export_info.json last)

    Attributes:
        dir: the run folder, e.g. ``runs/tiny/sft``; ``null``: none of the run's callbacks, logger or checkpoint
            plugin is added (give your own under ``trainer``).
        export_dir: where the trained model is exported at the end of ``fit``; ``null``: no export.
        checkpoint_every_n_steps: optimiser steps between two writes of ``last.ckpt`` (SIGKILL loses at most these;
            SIGTERM writes it at once).
        monitor: the logged metric that picks the best checkpoint (lower is better).
        max_consecutive_nonfinite: NaN/Inf steps are skipped; this many in a row stop the run.
        allow_config_change: resume (``--ckpt_path``) although the model, data, loss, optimiser or batch settings
            differ from the run's saved ``config.yaml`` (refused otherwise, with the differing keys:
            ``study.resume_config``).
    """

    dir: str | None = None
    export_dir: str | None = None
    checkpoint_every_n_steps: int = 100
    monitor: str = "val/loss"
    max_consecutive_nonfinite: int = 5
    allow_config_change: bool = False

    def __post_init__(self) -> None:
        if self.checkpoint_every_n_steps < 1:
            raise ConfigError(f"run.checkpoint_every_n_steps must be at least 1, got {self.checkpoint_every_n_steps}.")
        if self.max_consecutive_nonfinite < 1:
            raise ConfigError(
                f"run.max_consecutive_nonfinite must be at least 1, got {self.max_consecutive_nonfinite}."
            )
        if self.export_dir is not None and self.dir is None:
            raise ConfigError("run.export_dir is set but run.dir is not: name the run folder as well.")

    def paths(self) -> dict[str, str | None]:
        """Every path the run writes, by name: ``dir``, ``checkpoints``, ``last``, ``tensorboard``, ``export``."""
        if self.dir is None:
            return {"dir": None, "checkpoints": None, "last": None, "tensorboard": None, "export": self.export_dir}
        root = PurePosixPath(self.dir)
        return {
            "dir": str(root),
            "checkpoints": str(root / "checkpoints"),
            "last": str(root / "checkpoints" / "last.ckpt"),
            "tensorboard": str(root / "tensorboard"),
            "export": self.export_dir,
        }
