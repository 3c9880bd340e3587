"""The three models of the study, loaded from the stage exports: base, base + SFT, SFT + DPO.

* ``base``: the base model named in the SFT adapter's ``adapter_config.json`` (or given explicitly).
* ``sft``: the base with the SFT LoRA adapter (``outputs/<set>/sft``) merged in.
* ``sft_dpo``: the SFT model with the DPO adapter (``outputs/<set>/dpo``) on top; the DPO export's
  ``export_info.json`` names the SFT export it was trained from (``source_model``).

With ``merge_adapters: false`` (needed for a 4-bit base, whose NF4 weights cannot absorb an adapter)
the adapters stay separate and active together, exactly as DPO trained them in that case.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedModel

from common.errors import ConfigError
from common.settings import LoadSettings
from lightning_modules.loading import (
    DPO_ADAPTER,
    SFT_ADAPTER,
    ModelLoadError,
    check_sft_export,
    load_causal_lm,
    load_sft_model,
    read_export_info,
)

VARIANTS: tuple[str, ...] = ("base", "sft", "sft_dpo")
LABELS: dict[str, str] = {"base": "base", "sft": "SFT", "sft_dpo": "SFT+DPO"}


@dataclass
class VariantLoadSettings(LoadSettings):
    """How the weights are loaded for evaluation: the training's :class:`~common.settings.LoadSettings`
    (``dtype: auto`` follows the evaluation device; ``load_in_4bit`` needs ``merge_adapters: false``), and
    whether the adapters are merged.

    Attributes:
        merge_adapters: merge the adapters into the weights (faster generation); ``false`` stacks them.
    """

    merge_adapters: bool = True

    def __post_init__(self) -> None:
        if self.load_in_4bit and self.merge_adapters:
            raise ConfigError("A LoRA cannot be merged into a 4-bit base: set load.merge_adapters: false.")


@dataclass
class VariantSources:
    """Where each variant's weights come from (resolved by :func:`resolve_sources`)."""

    base: str
    sft: str
    dpo: str | None
    base_revision: str | None = None  # the Hub commit SFT trained on (from the SFT export), so base is that one

    def describe(self, merged: bool = True) -> dict[str, str]:
        """One line per variant, for the results file and the model card (``merged``: the adapters were merged)."""
        described = {"base": self.base, "sft": f"{self.base} + SFT adapter {self.sft}"}
        if self.dpo is not None:
            how = "(merged)" if merged else "(stacked, both active)"
            described["sft_dpo"] = f"{self.base} + SFT adapter {self.sft} {how} + DPO adapter {self.dpo}"
        return described


def check_dpo_export(path: str) -> dict:
    """Read a DPO export folder and fail readably when it is missing or incomplete."""
    folder = Path(path)
    if not (folder / "export_info.json").is_file():
        raise ModelLoadError(
            f"{path}: DPO export not found or incomplete (no export_info.json). Run the DPO stage first "
            "(python train.py fit --config configs/<set>/dpo.yaml), or leave sft_dpo out of variants."
        )
    info = read_export_info(folder)
    weights = "adapter_model.safetensors" if info.get("kind") == "lora_adapter" else "model.safetensors"
    if info.get("kind") == "lora_adapter" and not (folder / weights).is_file():
        raise ModelLoadError(f"{path}: incomplete DPO export, missing {weights}. Re-run the DPO stage.")
    return info


def resolve_sources(sft: str, dpo: str | None, base: str | None = None) -> VariantSources:
    """Check the exports and work out the base model.

    Raises:
        ModelLoadError: a missing or incomplete export, or a DPO export trained from another SFT export.
    """
    export = check_sft_export(sft)
    if base is None:
        # A LoRA export names its base in adapter_config.json; a full-model export in export_info.json.
        base = export["base"] or read_export_info(sft).get("source_model")
        if base is None:
            raise ModelLoadError(f"{sft} is a full-model export that does not name its base model: set base_model.")
    if dpo is not None:
        source = check_dpo_export(dpo).get("source_model")
        if source is not None and Path(source).resolve() != Path(sft).resolve():
            raise ModelLoadError(
                f"{dpo} was trained from the SFT export {source}, but sft_adapter is {sft}: the DPO adapter only "
                "means something on the SFT model it was trained from. Point sft_adapter at that export."
            )
    revision = export["base_revision"] if base == export["base"] else None
    return VariantSources(base=base, sft=sft, dpo=dpo, base_revision=revision)


def load_variant(name: str, sources: VariantSources, settings: VariantLoadSettings) -> PreTrainedModel:
    """Load one variant, in eval mode.

    Raises:
        ValueError: an unknown variant name, or ``sft_dpo`` without a DPO export.
    """
    if name not in VARIANTS:
        raise ValueError(f"Unknown variant {name!r}; choose among {', '.join(VARIANTS)}.")
    load = settings.kwargs()
    if name == "base":
        return load_causal_lm(sources.base, revision=sources.base_revision, **load).eval()
    if name == "sft_dpo" and sources.dpo is None:
        raise ValueError("Variant sft_dpo needs dpo_adapter (the DPO stage's export folder).")
    if name == "sft_dpo" and read_export_info(sources.dpo).get("kind") == "full_model":
        return load_causal_lm(sources.dpo, **load).eval()
    model = load_sft_model(sources.sft, merge_adapter=settings.merge_adapters, **load)
    if name == "sft":
        return model.eval()
    if settings.merge_adapters:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, sources.dpo).merge_and_unload().eval()
    model.load_adapter(sources.dpo, adapter_name=DPO_ADAPTER, is_trainable=False)
    model.base_model.set_adapter([SFT_ADAPTER, DPO_ADAPTER])
    return model.eval()
