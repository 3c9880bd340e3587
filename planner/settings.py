"""What the planner needs from a training config: read the YAML, apply ``--set`` overrides, pick out the settings.

Only the keys that change memory or time are read; their defaults are the constructors' own
(``SFTModule``, ``DPOModule``, ``RewardModule``, ``LoraSettings``, the DataModules, ``StudyTrainer``), so a
config that leaves a key out is planned as it would run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from common.settings import LoadSettings, LoraSettings
from common.signatures import defaults, import_class
from common.trees import merged
from lightning_modules.preference_losses import LOSSES


class PlanError(ValueError):
    """A config, override or model config the planner cannot use; the message says what to pass instead."""


@dataclass(frozen=True)
class Lora:
    """The LoRA adapter's shape (``model.init_args.lora``); the defaults are ``LoraSettings``' own."""

    r: int = LoraSettings.r
    alpha: int = LoraSettings.alpha
    dropout: float = LoraSettings.dropout
    target_modules: tuple[str, ...] = tuple(LoraSettings().target_modules)


@dataclass(frozen=True)
class PlannedRun:
    """The settings of one training run that decide its memory and time.

    Attributes:
        config_path: the YAML read.
        stage: ``sft``, ``dpo`` or ``reward`` (from ``model.class_path``).
        model: ``model.init_args.model_name_or_path``.
        lora: the trained adapter, or ``None`` for full fine-tuning.
        dtype: ``model.init_args.load.dtype`` (``auto``, ``float32``, ``bfloat16``, ``float16``); unset,
            ``LoadSettings``' ``float32``, as the modules load then.
        load_in_4bit: ``model.init_args.load.load_in_4bit``: QLoRA base.
        gradient_checkpointing: recompute the decoder layers in the backward pass (all but the last).
        checkpoint_last_layer: with ``gradient_checkpointing``, the last layer too.
        reference: DPO only: ``separate``, ``adapter`` or ``precomputed``; ``none`` when every loss of the run is
            reference-free (SimPO, ORPO: no reference model, switch or pass, whatever ``reference`` says).
        merge_sft_adapter: DPO only: ``None`` means stacked for a LoRA on 4-bit or non-float32 weights, else merged
            (``DPOModule``'s rule).
        precision: ``trainer.precision`` (``auto`` or a Lightning name).
        devices: ``trainer.devices`` (GPUs per run).
        fsdp: the strategy is FSDP (weights, gradients and optimiser states sharded over ``devices``).
        max_epochs: ``trainer.max_epochs``.
        accumulate_grad_batches: ``trainer.accumulate_grad_batches``.
        val_check_interval: ``trainer.val_check_interval`` (a share of an epoch, or a number of batches).
        batch_size: ``data.init_args.batch_size`` (examples, or pairs for preference data).
        max_length: tokens per row, prompt included.
        max_prompt_length: preference data: prompt tokens kept.
        pack: rows packed into one ``(1, N)`` row, padding-free.
        train_files: the training data (a Hub id or local files).
        split / val_split: preference data's Hub splits.
        num_examples / val_fraction / num_val_examples: how many rows are kept.
    """

    config_path: Path
    stage: str
    model: str
    lora: Lora | None
    dtype: str = "float32"
    load_in_4bit: bool = False
    gradient_checkpointing: bool = False
    checkpoint_last_layer: bool = False
    reference: str = "precomputed"
    merge_sft_adapter: bool | None = None
    precision: str = "auto"
    devices: int = 1
    fsdp: bool = False
    max_epochs: int = 1
    accumulate_grad_batches: int = 1
    val_check_interval: float | int = 1.0
    batch_size: int = 8
    max_length: int = 1024
    max_prompt_length: int = 512
    pack: bool = False
    train_files: tuple[str, ...] = ()
    val_files: tuple[str, ...] = ()
    split: str = "train_prefs"
    val_split: str = "test_prefs"
    num_examples: int | None = None
    val_fraction: float = 0.05
    num_val_examples: int | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    def checkpointed_layers(self, layers: int) -> int:
        """Of ``layers`` decoder layers, how many gradient checkpointing recomputes in the backward pass: all but
        the last, or all with ``checkpoint_last_layer`` (``lightning_modules.decoder_layers``)."""
        return layers if self.checkpoint_last_layer else layers - 1

    @property
    def rows_per_example(self) -> int:
        """Rows in the forward pass per example: a preference pair is a chosen and a rejected row."""
        return 1 if self.stage == "sft" else 2

    @property
    def stacked_sft_adapter(self) -> bool:
        """DPO keeps the SFT LoRA as a frozen stacked adapter (``DPOModule``: ``false``, or unset with a LoRA on 4-bit
        or non-float32 weights; ``auto`` counts as bf16, the dtype it resolves to on the GPUs planned for)."""
        if self.stage != "dpo":
            return False
        frozen_low_precision = self.lora is not None and (self.load_in_4bit or self.dtype != "float32")
        return self.merge_sft_adapter is False or (self.merge_sft_adapter is None and frozen_low_precision)


STAGES = {"SFTModule": "sft", "DPOModule": "dpo", "KTOModule": "dpo", "RewardModule": "reward"}


def read_yaml(path: str | Path) -> dict:
    """The YAML mapping at ``path``; ``A.yaml+B.yaml`` is B merged onto A, as ``train.py fit --config A.yaml
    --config B.yaml`` reads an overlay (``configs/fsdp/sft.yaml`` on ``configs/sft.yaml``)."""
    parts = str(path).split("+")
    config: dict = {}
    for part in parts:
        config = merged(config, read_one_yaml(part))
    return config


def read_one_yaml(path: str | Path) -> dict:
    """The YAML mapping in the file ``path``."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as error:
        raise PlanError(f"--config {path}: cannot be read ({error.strerror}).") from None
    except yaml.YAMLError as error:
        raise PlanError(f"--config {path}: not valid YAML ({error}).") from None
    if not isinstance(config, dict):
        raise PlanError(f"--config {path}: not a config (a YAML mapping of sections).")
    return config


def is_training_config(config: dict) -> bool:
    """A training config has ``trainer:`` and ``model:`` sections (an evaluation config has neither)."""
    return "model" in config and "trainer" in config


def read_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """The training YAML at ``path`` with each ``dotted.key=value`` of ``overrides`` applied (values parsed as
    YAML)."""
    config = read_yaml(path)
    if not is_training_config(config):
        raise PlanError(
            f"--config {path}: not a training config (no trainer: and model: sections) nor an evaluation config "
            "(no sft_adapter:, prompts: or variants:)."
        )
    for override in overrides:
        apply_override(config, override)
    return config


def apply_override(config: dict, override: str) -> None:
    """Set one ``dotted.key=value`` in ``config``: every key but the last must exist already."""
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise PlanError(f"--set {override!r}: expected dotted.key=value, e.g. model.init_args.load.load_in_4bit=true.")
    *parents, leaf = key.split(".")
    node = config
    for depth, part in enumerate(parents):
        if not isinstance(node, dict) or not isinstance(node.get(part), dict):
            where = ".".join(parents[: depth + 1])
            raise PlanError(f"--set {override!r}: the config has no section {where}.")
        node = node[part]
    try:
        node[leaf] = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PlanError(f"--set {override!r}: the value is not valid YAML ({error}).") from None


def reference_of(model: dict, config_path: str | Path) -> str:
    """The reference a DPO module builds: ``model.init_args.reference``, or ``none`` when no loss reads one."""
    entries = model.get("losses") or [{"name": model.get("loss_type", "sigmoid")}]
    names = [str(entry.get("name")) for entry in entries]
    unknown = [name for name in names if name not in LOSSES]
    if unknown:
        raise PlanError(
            f"{config_path}: model.init_args.losses: unknown loss {unknown[0]!r}; one of {', '.join(LOSSES)}."
        )
    if not any(LOSSES[name].needs_reference for name in names):
        return "none"
    return str(model.get("reference", "precomputed"))


def parse_settings(config: dict, config_path: str | Path) -> PlannedRun:
    """Pick the settings of :class:`PlannedRun` out of a (possibly overridden) training config."""
    model_section = config["model"]
    class_name = str(model_section.get("class_path", "")).rsplit(".", 1)[-1]
    stage = STAGES.get(class_name)
    if stage is None:
        raise PlanError(
            f"{config_path}: model.class_path {model_section.get('class_path')!r} is not one the planner knows "
            f"({', '.join(STAGES)})."
        )
    # What the config leaves out is the constructors' default, read from them (one default per field).
    model = {**class_defaults(model_section, config_path), **(model_section.get("init_args") or {})}
    trainer = config["trainer"]
    data_section = config.get("data") or {}
    data = {**class_defaults(data_section, config_path), **(data_section.get("init_args") or {})}
    if "model_name_or_path" not in model:
        raise PlanError(f"{config_path}: model.init_args.model_name_or_path is not set.")
    strategy = trainer.get("strategy")
    strategy_name = strategy.get("class_path", "") if isinstance(strategy, dict) else str(strategy or "")
    devices = trainer.get("devices", 1)
    load = model.get("load") or {}  # absent, null or a section without the field: LoadSettings' defaults
    if not isinstance(devices, int):
        raise PlanError(f"{config_path}: trainer.devices {devices!r}: the planner needs a number of devices.")
    return PlannedRun(
        config_path=Path(config_path),
        stage=stage,
        model=str(model["model_name_or_path"]),
        lora=parse_lora(model.get("lora")),
        dtype=str(load.get("dtype", LoadSettings.dtype)),
        load_in_4bit=bool(load.get("load_in_4bit", LoadSettings.load_in_4bit)),
        gradient_checkpointing=bool(model.get("gradient_checkpointing", False)),
        checkpoint_last_layer=bool(model.get("checkpoint_last_layer", False)),
        reference=reference_of(model, config_path) if stage == "dpo" else "precomputed",
        merge_sft_adapter=model.get("merge_sft_adapter"),
        precision=str(trainer.get("precision", "auto")),
        devices=devices,
        fsdp="fsdp" in strategy_name.lower(),
        max_epochs=int(trainer.get("max_epochs", 1)),
        accumulate_grad_batches=int(trainer.get("accumulate_grad_batches", 1)),
        val_check_interval=trainer.get("val_check_interval", 1.0),
        batch_size=int(data.get("batch_size", 8)),
        max_length=int(data.get("max_length", 1024)),
        max_prompt_length=int(data.get("max_prompt_length", 512)),
        pack=bool(data.get("pack", False)),
        train_files=as_tuple(data.get("train_files")),
        val_files=as_tuple(data.get("val_files")),
        split=str(data.get("split", "train_prefs")),
        val_split=str(data.get("val_split", "test_prefs")),
        num_examples=data.get("num_examples"),
        val_fraction=float(data.get("val_fraction", 0.05)),
        num_val_examples=data.get("num_val_examples"),
        raw=config,
    )


def class_defaults(section: dict, config_path: str | Path) -> dict:
    """The defaults of the constructor a ``model`` / ``data`` section's ``class_path`` names (none without one)."""
    class_path = section.get("class_path")
    if not class_path:
        return {}
    try:
        return defaults(import_class(str(class_path)))
    except ValueError as error:
        raise PlanError(f"{config_path}: {error}.") from None


def parse_lora(section: Any) -> Lora | None:
    if section is None:
        return None
    if not isinstance(section, dict):
        raise PlanError(f"model.init_args.lora: expected a mapping or null, got {section!r}.")
    default = Lora()  # LoraSettings' defaults
    return Lora(
        r=int(section.get("r", default.r)),
        alpha=int(section.get("alpha", default.alpha)),
        dropout=float(section.get("dropout", default.dropout)),
        target_modules=tuple(section.get("target_modules", default.target_modules)),
    )


def as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (str(value),) if isinstance(value, str) else tuple(str(item) for item in value)


def load_settings(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PlannedRun:
    """:func:`read_config` then :func:`parse_settings`."""
    return parse_settings(read_config(path, overrides), path)


def export_dir(config: dict) -> str | None:
    """Where a training config exports its model: ``run.export_dir``, or an ``HFExportCallback`` listed under
    ``trainer.callbacks`` (``None``: neither)."""
    run = config.get("run") or {}
    if isinstance(run, dict) and run.get("export_dir"):
        return run["export_dir"]
    for callback in (config.get("trainer") or {}).get("callbacks") or []:
        if isinstance(callback, dict) and str(callback.get("class_path", "")).endswith("HFExportCallback"):
            return (callback.get("init_args") or {}).get("dirpath")
    return None
