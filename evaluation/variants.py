"""The models of the study, loaded from the stage exports: base, base + SFT, SFT + DPO, and SFT + each method.

* ``base``: the base model named in the SFT adapter's ``adapter_config.json`` (or given explicitly).
* ``sft``: the base with the SFT LoRA adapter (``outputs/<set>/sft``).
* ``sft_dpo``: the SFT model with the DPO adapter (``outputs/<set>/dpo``) on top; the DPO export's
  ``export_info.json`` names the SFT export it was trained from (``source_model``) and how the SFT adapter sat
  under it (``sft_adapter``: merged into which dtype, or stacked).
* ``sft_<method>`` (the methods study): the SFT model with another preference method's export on top (IPO,
  SimPO, ORPO, KTO...), built exactly as ``sft_dpo`` is; "DPO" below stands for any of them.
* ``base_<method>``: a method trained from the base model itself (``from_base``, ORPO's own setting; its export's
  ``export_info.json`` says ``start: base``): the base with that export on top, no SFT adapter.

By default (``merge_adapters: false``) the adapters stay separate and active together, in ``sft`` and ``sft_dpo``
alike, so the two differ by the DPO adapter alone. In bf16 that is what keeps a small DPO update: merged, an
update below half an ulp of the weights (a LoRA DPO at lr 5e-7 moves weights by ~1e-5; half an ulp at 0.02 is
6e-5) rounds away and SFT+DPO would read as SFT; stacked on the SFT adapter, both outputs are summed in float32
and rounded once, which keeps it on average (:mod:`lightning_modules.merging`, with measurements). The SFT adapter
is not merged because DPO trained on it merged: merged into bf16 weights, it puts them back on the bf16 grid and
the DPO adapter over it would be erased as if merged (measured: 0.31 of the update kept, against 1.09 +- 0.12
stacked). Every merge is measured and refused when it loses the update; an adapter stacked alone on a 16-bit
module is measured and warned about (only float32 weights would keep more); both are recorded in
:class:`VariantBuild`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

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
from lightning_modules.merging import check_retention, merge_lora, merge_retention

VARIANTS: tuple[str, ...] = ("base", "sft", "sft_dpo")
LABELS: dict[str, str] = {"base": "base", "sft": "SFT", "sft_dpo": "SFT+DPO"}
METHOD_LABELS: dict[str, str] = {"simpo": "SimPO", "orpo": "ORPO", "mpo": "MPO"}
"""How a method is written in the report, where upper case would be wrong (``ipo`` -> ``IPO`` otherwise)."""


def method_variant(method: str, export: str | Path | None = None) -> str:
    """The variant of a preference method: ``ipo`` -> ``sft_ipo`` (``dpo``: ``sft_dpo``), or ``base_<method>`` when
    its ``export`` was trained from the base model (``export_info.json``'s ``start: base``); a method named
    ``base_orpo`` (the methods study's ORPO from the base) is the variant ``base_orpo``, not ``base_base_orpo``."""
    start = read_export_info(export).get("start", "sft") if export is not None else "sft"
    return method if method.startswith(f"{start}_") else f"{start}_{method}"


def from_base(name: str) -> bool:
    """Whether variant ``name`` is a method trained from the base model (``base_<method>``)."""
    return name.startswith("base_")


def label(name: str) -> str:
    """The report's name of a variant: ``SFT+DPO``, ``SFT+IPO``, ``SFT+SimPO``, ``base+ORPO``."""
    if name in LABELS:
        return LABELS[name]
    start, method = ("base", name.removeprefix("base_")) if from_base(name) else ("SFT", name.removeprefix("sft_"))
    return f"{start}+{METHOD_LABELS.get(method, method.upper())}"


def method_label(name: str) -> str:
    """The method alone: ``DPO``, ``IPO``, ``ORPO`` (``label`` without its start)."""
    return label(name).split("+", 1)[-1]


@dataclass
class VariantLoadSettings(LoadSettings):
    """How the weights are loaded for evaluation: the training's :class:`~common.settings.LoadSettings`
    (``float32`` by default; ``dtype: auto`` follows the evaluation device; ``load_in_4bit`` needs
    ``merge_adapters: false``), and whether the adapters are merged.

    Attributes:
        merge_adapters: ``false`` (the default) stacks the adapters: each update applied whole, as trained, in
            any dtype. ``true`` merges them into the weights (faster generation), each merge measured first and
            refused when rounding to the weights' dtype would lose the update (bf16 weights and a DPO update at
            lr 5e-7: :mod:`lightning_modules.merging`); exact enough into float32 weights.
    """

    merge_adapters: bool = False

    def __post_init__(self) -> None:
        if self.load_in_4bit and self.merge_adapters:
            raise ConfigError("A LoRA cannot be merged into a 4-bit base: set load.merge_adapters: false.")


Applied = Literal["merged", "stacked"]


@dataclass(frozen=True)
class VariantBuild:
    """How one variant's weights were put together (the results file's ``meta.builds``).

    Attributes:
        dtype: the weights' dtype (4-bit: the compute dtype, ``load_in_4bit`` in ``meta.load``).
        sft: the SFT adapter ``merged`` into the weights or ``stacked`` on them; ``None``: not in this variant
            (base), or a full-model SFT export.
        dpo: the DPO adapter, likewise; ``None``: not in this variant, or a full-model DPO export.
        dpo_trained_on: how the DPO stage applied the SFT adapter under its own (``export_info.json``'s
            ``sft_adapter``: ``{"applied", "dtype"}``); ``None``: not this variant's concern, or not recorded (an
            export from before the record).
        retained: per adapter (``sft``, ``dpo``), :meth:`~lightning_modules.merging.MergeRetention.summary`: the
            share of its update the merge kept, or (stacked) a forward keeps where it is alone on a module, min and
            median over the LoRA modules (``None`` and 0 modules: none measured, e.g. all under the SFT adapter).
    """

    dtype: str
    sft: Applied | None = None
    dpo: Applied | None = None
    dpo_trained_on: dict | None = None
    retained: dict[str, dict] = field(default_factory=dict)

    def applied(self, adapter: str) -> str:
        """``merged into bfloat16 weights, 0.998 of its update kept`` or ``stacked``, for ``sft`` or ``dpo``."""
        kept = self.retained.get(adapter, {}).get("retained_median")
        how = "stacked" if getattr(self, adapter) == "stacked" else f"merged into {self.dtype} weights"
        if kept is not None:
            how += f", {kept:.3f} of its update kept (median module)"
        trained = self.dpo_trained_on
        if adapter == "sft" and trained is not None and trained.get("applied") != getattr(self, adapter):
            how += f"; DPO trained on it {trained.get('applied')} ({trained.get('dtype')})"
        return how


@dataclass
class VariantSources:
    """Where each variant's weights come from (resolved by :func:`resolve_sources`)."""

    base: str
    sft: str
    dpo: str | None
    base_revision: str | None = None  # the Hub commit SFT trained on (from the SFT export), so base is that one
    methods: dict[str, str] = field(default_factory=dict)  # the methods study: variant name -> export folder

    def export_of(self, name: str) -> str | None:
        """The preference export on top of SFT in variant ``name`` (``sft_dpo``: the DPO export)."""
        return self.dpo if name == "sft_dpo" else self.methods.get(name)

    def weights_lines(self, builds: dict[str, VariantBuild]) -> dict[str, str]:
        """One line per variant of ``builds``, for the results file and the model card: where its weights come
        from and how the adapters were applied (merged into which dtype and what the merge kept, or stacked)."""
        described = {}
        for name, build in builds.items():
            sft = f"SFT adapter {self.sft} ({build.applied('sft')})" if build.sft else f"SFT model {self.sft}"
            if name == "base":
                described[name] = f"{self.base} ({build.dtype} weights)"
            elif name == "sft":
                described[name] = f"{self.base} + {sft}" if build.sft else f"{sft} ({build.dtype} weights)"
            else:
                method, export = method_label(name), self.export_of(name)
                if build.dpo is None:
                    described[name] = f"{method} full model {export} ({build.dtype} weights)"
                elif build.sft is None and from_base(name):
                    described[name] = f"{self.base} + {method} adapter {export} ({build.applied('dpo')})"
                elif build.sft == build.dpo == "stacked":
                    described[name] = (
                        f"{self.base} + SFT adapter {self.sft} + {method} adapter {export} (stacked, both active; "
                        f"{build.dtype} weights)"
                    )
                else:
                    start = f"{self.base} + {sft}" if build.sft else sft
                    described[name] = f"{start} + {method} adapter {export} ({build.applied('dpo')})"
        return described


def check_dpo_export(path: str, variant: str = "sft_dpo") -> dict:
    """Read a DPO (or other preference method's) export folder and fail readably when it is missing or incomplete."""
    folder = Path(path)
    if not (folder / "export_info.json").is_file():
        raise ModelLoadError(
            f"{path}: {method_label(variant)} export not found or incomplete (no export_info.json). "
            f"Run its training stage first (python train.py fit --config ...), or leave {variant} out of variants."
        )
    info = read_export_info(folder)
    weights = "adapter_model.safetensors" if info.get("kind") == "lora_adapter" else "model.safetensors"
    if info.get("kind") == "lora_adapter" and not (folder / weights).is_file():
        raise ModelLoadError(f"{path}: incomplete DPO export, missing {weights}. Re-run the DPO stage.")
    return info


def resolve_sources(
    sft: str, dpo: str | None, base: str | None = None, methods: dict[str, str] | None = None
) -> VariantSources:
    """Check the exports and work out the base model; ``methods`` maps more variants (``sft_ipo``) to exports.

    Raises:
        ModelLoadError: a missing or incomplete export, or a DPO export trained from another SFT export.
    """
    export = check_sft_export(sft)
    if base is None:
        # A LoRA export names its base in adapter_config.json; a full-model export in export_info.json.
        base = export["base"] or read_export_info(sft).get("source_model")
        if base is None:
            raise ModelLoadError(f"{sft} is a full-model export that does not name its base model: set base_model.")
    preference = ({"sft_dpo": dpo} if dpo is not None else {}) | (methods or {})
    for variant, path in preference.items():
        source = check_dpo_export(path, variant).get("source_model")
        if from_base(variant):
            if source is not None and source != base and Path(source).resolve() != Path(base).resolve():
                raise ModelLoadError(
                    f"{path} was trained from the base model {source}, but the study's base is {base}: its adapter "
                    "only means something on the model it was trained from."
                )
        elif source is not None and Path(source).resolve() != Path(sft).resolve():
            raise ModelLoadError(
                f"{path} was trained from the SFT export {source}, but sft_adapter is {sft}: its adapter only "
                "means something on the SFT model it was trained from. Point sft_adapter at that export."
            )
    revision = export["base_revision"] if base == export["base"] else None
    return VariantSources(base=base, sft=sft, dpo=dpo, base_revision=revision, methods=dict(methods or {}))


def plan_variant(name: str, sources: VariantSources, settings: VariantLoadSettings) -> VariantBuild:
    """How :func:`build_variant` puts ``name`` together, before any weight is loaded: each adapter ``merged``
    when ``merge_adapters`` asks, else ``stacked`` (the module docstring says why, whatever DPO trained on).

    Raises:
        ValueError: an unknown variant name, or ``sft_dpo`` without a DPO export.
    """
    known = (*VARIANTS, *sources.methods)
    if name not in known:
        raise ValueError(f"Unknown variant {name!r}; choose among {', '.join(known)}.")
    if name == "sft_dpo" and sources.dpo is None:
        raise ValueError("Variant sft_dpo needs dpo_adapter (the DPO stage's export folder).")
    build = VariantBuild(dtype=settings.dtype)
    if name == "base":
        return build
    # the SFT variant records how the DPO export (if any) trained on it; a method variant, how its own did
    export = sources.export_of(name) if name != "sft" else sources.dpo
    trained_on = read_export_info(export).get("sft_adapter") if export is not None else None
    if name != "sft" and read_export_info(export).get("kind") == "full_model":
        return replace(build, dpo_trained_on=trained_on)
    how = "merged" if settings.merge_adapters else "stacked"
    sft = None if from_base(name) or check_sft_export(sources.sft)["kind"] == "full_model" else how
    return replace(build, sft=sft, dpo=None if name == "sft" else how, dpo_trained_on=trained_on)


MERGE_FIX = "Set load.merge_adapters: false (the adapters stacked) or load float32 weights (load.dtype: float32)."
ALONE_FIX = "Load float32 weights (load.dtype: float32)."


def build_variant(
    name: str, sources: VariantSources, settings: VariantLoadSettings
) -> tuple[PreTrainedModel, VariantBuild]:
    """Load one variant, in eval mode, as :func:`plan_variant` says, and how it was built.

    Each adapter is measured (:func:`lightning_modules.merging.merge_retention`): merged, what the merge kept;
    stacked, what a forward in the weights' dtype keeps where it is alone on a module (the DPO adapter over the
    stacked SFT one is left out there: summed before rounding), a warning when that loses the update.

    Returns:
        ``(model, build)``: ``build.retained`` holds each adapter's measure.

    Raises:
        ValueError: an unknown variant name, or ``sft_dpo`` without a DPO export.
        ConfigError: a merge that would lose the update (:func:`lightning_modules.merging.check_retention`).
    """
    build = plan_variant(name, sources, settings)
    load = settings.kwargs()
    if name == "base":
        return load_causal_lm(sources.base, revision=sources.base_revision, **load).eval(), build
    export = sources.export_of(name)
    if name != "sft" and build.dpo is None:
        return load_causal_lm(export, **load).eval(), build
    if from_base(name):  # the base model with the method's adapter, no SFT adapter under it
        model = load_causal_lm(sources.base, revision=sources.base_revision, **load)
    else:
        model = load_sft_model(sources.sft, merge_adapter=False, **load)  # a full-model export: as it is
    retained = {}
    sft, dpo = f"the SFT adapter {sources.sft}", f"the {method_label(name)} adapter {export}"
    if build.sft == "merged":
        model, retention = merge_lora(model, SFT_ADAPTER, sft, MERGE_FIX)
        retained["sft"] = retention.summary()
    elif build.sft == "stacked":
        retention = merge_retention(model, SFT_ADAPTER)
        check_retention(retention, f"stacking {sft} alone", ALONE_FIX, refuse=False)
        retained["sft"] = retention.summary()
    if name == "sft":
        return model.eval(), replace(build, retained=retained)
    if build.sft == "stacked":
        model.load_adapter(export, adapter_name=DPO_ADAPTER, is_trainable=False)
        model.base_model.set_adapter([SFT_ADAPTER, DPO_ADAPTER])
    else:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, export, adapter_name=DPO_ADAPTER, is_trainable=False)
    if build.dpo == "merged":
        model, retention = merge_lora(model, DPO_ADAPTER, dpo, MERGE_FIX)
    else:
        over = SFT_ADAPTER if build.sft == "stacked" else None
        retention = merge_retention(model, DPO_ADAPTER, stacked_over=over)
        check_retention(retention, f"stacking {dpo} alone on its modules", ALONE_FIX, refuse=False)
    retained["dpo"] = retention.summary()
    return model.eval(), replace(build, retained=retained)


def load_variant(name: str, sources: VariantSources, settings: VariantLoadSettings) -> PreTrainedModel:
    """:func:`build_variant`'s model alone."""
    return build_variant(name, sources, settings)[0]
