"""The card of an export folder, by the Hugging Face Hub's conventions: the README.md the export writes.

peft's ``save_pretrained`` writes an empty template ("More Information Needed") into every adapter
folder. These pure functions of a folder's files (``export_info.json``, ``adapter_config.json``,
``training_config.yaml``) write what the folder really holds instead, with the YAML front matter the Hub
reads (``library_name``, ``pipeline_tag``, ``base_model``, ``datasets``, ``license``). The export callback
(:mod:`callbacks.export`) writes it at the end of fit; the Hub upload (:mod:`reporting.publish`) writes it
again with the folder's place in the Hub repository, and builds the study's own card from the same pieces
(:mod:`reporting.study_card`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from common.provenance import as_list, is_local
from common.trees import dig
from lightning_modules.loading import read_export_info, training_config

PIPELINE_TAG = "text-generation"
STAGES = ("sft", "dpo", "merged", "reward")

# What a reader needs to repeat the run, as key paths into a saved LightningCLI config.
EXPORT_SETTINGS: dict[str, tuple[str, ...]] = {
    "training data": ("data", "init_args", "train_files"),
    "learning rate": ("model", "init_args", "optimizer", "lr"),
    "epochs": ("trainer", "max_epochs"),
    "batch size": ("data", "init_args", "batch_size"),
    "gradient accumulation": ("trainer", "accumulate_grad_batches"),
    "LoRA r": ("model", "init_args", "lora", "r"),
    "LoRA alpha": ("model", "init_args", "lora", "alpha"),
    "beta": ("model", "init_args", "beta"),
    "loss type": ("model", "init_args", "loss_type"),  # the older spelling of a one-loss list
    "losses": ("model", "init_args", "losses"),
    "precision": ("trainer", "precision"),
}


@dataclass(frozen=True)
class Location:
    """Where a folder is loaded from, as a card's usage snippet writes it.

    Attributes:
        path: a local folder or a Hub repository id.
        subfolder: the folder inside the Hub repository (``None``: the repository root, or a local folder).
    """

    path: str
    subfolder: str | None = None

    def __str__(self) -> str:
        return f"{self.path}/{self.subfolder}" if self.subfolder else self.path

    def arguments(self) -> str:
        """The ``from_pretrained`` arguments that load it, e.g. ``"you/study", subfolder="sft"``."""
        return json.dumps(self.path) + (f", subfolder={json.dumps(self.subfolder)}" if self.subfolder else "")


def is_hub_model_id(name: str | None) -> bool:
    """Whether ``name`` reads as a Hub model id (``owner/name``) rather than a local folder."""
    if not name or Path(name).exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def hub_dataset_ids(sources: Iterable[str]) -> list[str]:
    """The Hub dataset ids among data sources, in order, once each (local files are left out)."""
    return list(dict.fromkeys(source for source in sources if not is_local(source, "dataset")))


SUPERSEDED_BY: dict[str, str] = {"loss type": "losses", "label smoothing": "losses"}
"""Rows left out when the row they name is set: ``losses`` replaces the older ``loss_type`` spelling."""


def settings(config: dict[str, Any], keys: dict[str, tuple[str, ...]]) -> list[tuple[str, Any]]:
    """``(name, value)`` of each key path found in a saved LightningCLI config (lists of entries without their
    unset fields)."""
    found = {name: _compact(dig(config, *path)) for name, path in keys.items()}
    return [
        (name, value)
        for name, value in found.items()
        if value is not None and found.get(SUPERSEDED_BY.get(name, "")) is None
    ]


def settings_table(rows: list[tuple[str, Any]]) -> str:
    """A Markdown table of ``(setting, value)`` rows, values as code."""
    if not rows:
        return "(no training_config.yaml was saved with this export)"
    lines = ["| Setting | Value |", "|:---|:---|"]
    lines += [f"| {name} | `{json.dumps(value) if isinstance(value, list) else value}` |" for name, value in rows]
    return "\n".join(lines)


def _compact(value: Any) -> Any:
    """A list of settings entries (``model.losses``) without their unset (``null``) fields."""
    if isinstance(value, list):
        return [{k: v for k, v in item.items() if v is not None} if isinstance(item, dict) else item for item in value]
    return value


def license_of(base_model: str, api: Any = None) -> str | None:
    """The base model's license: its README.md front matter when local, else the Hub's model info.

    ``api`` (an ``HfApi``) is asked only for a Hub id; without it, or when the Hub cannot be reached
    (offline, gated, missing), the license is unknown (``None``) and cards leave it out.
    """
    readme = Path(base_model) / "README.md"
    if readme.is_file():
        try:
            license_id = ModelCard(readme.read_text(encoding="utf-8"), ignore_metadata_errors=True).data.license
        except ValueError:  # front matter that is not a mapping: no license to inherit
            return None
        return license_id if isinstance(license_id, str) else None
    if api is None or not is_hub_model_id(base_model):
        return None
    try:
        card_data = api.model_info(base_model).card_data
    except Exception:  # the Hub client raises many types (network, auth, 404); the card just omits the license
        return None
    license_id = card_data.license if card_data is not None else None
    return license_id if isinstance(license_id, str) else None


def card_data(
    *,
    library_name: str,
    tags: list[str],
    base_model: str | None = None,
    datasets: list[str] | None = None,
    license: str | None = None,
    eval_results: list[EvalResult] | None = None,
    model_name: str | None = None,
    pipeline_tag: str = PIPELINE_TAG,
) -> ModelCardData:
    """Front matter for the Hub; ``base_model`` is kept only when it is a Hub id (a local path means nothing there)."""
    return ModelCardData(
        library_name=library_name,
        pipeline_tag=pipeline_tag,
        tags=tags,
        base_model=base_model if is_hub_model_id(base_model) else None,
        datasets=datasets or None,
        license=license,
        eval_results=eval_results or None,
        model_name=model_name if eval_results else None,
    )


def model_card(data: ModelCardData, body: str) -> ModelCard:
    """A card from its front matter and its Markdown body."""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n")


def adapter_base(folder: Path) -> str | None:
    """The base an adapter folder names in ``adapter_config.json``, or ``None`` (not an adapter)."""
    path = folder / "adapter_config.json"
    return json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path") if path.is_file() else None


def export_base(folder: Path, info: dict[str, Any]) -> str | None:
    """The base model under an export: an adapter's ``adapter_config.json``, else the model it was trained from.

    A DPO full model was trained from an SFT export; its base is that export's base when the folder is here.
    """
    source = info.get("source_model")
    if adapter_base(folder) is not None or not source:
        return adapter_base(folder) or source
    # One level up only: an SFT export names the base itself (adapter) or in its export_info.json (full model).
    return adapter_base(Path(source)) or read_export_info(Path(source)).get("source_model") or source


def stage_of(info: dict[str, Any]) -> str:
    """``"dpo"``, ``"reward"`` or ``"sft"``, from the LightningModule named in ``export_info.json``."""
    stage = str(info.get("stage", "")).lower()
    preference = "dpo" in stage or "kto" in stage  # a preference-optimised export, whatever the loss
    return "dpo" if preference else "reward" if "reward" in stage else "sft"


def usage(stage: str, adapter: bool, base: str, here: Location, sft: Location | None) -> list[str]:
    """A few lines of Python that load the folder."""
    if stage == "reward":
        return [
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
            "",
            f"model = AutoModelForSequenceClassification.from_pretrained({here.arguments()})",
            f"tokenizer = AutoTokenizer.from_pretrained({here.arguments()})",
        ]
    if not adapter:
        return [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f"model = AutoModelForCausalLM.from_pretrained({here.arguments()})",
            f"tokenizer = AutoTokenizer.from_pretrained({here.arguments()})",
        ]
    lines = [
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f"base = AutoModelForCausalLM.from_pretrained({json.dumps(base)})",
    ]
    if stage == "dpo" and sft is not None:
        # The DPO adapter was trained on base + SFT merged: it means nothing on the bare base.
        lines.append(f"base = PeftModel.from_pretrained(base, {sft.arguments()}).merge_and_unload()")
    return lines + [
        f"model = PeftModel.from_pretrained(base, {here.arguments()})",
        f"tokenizer = AutoTokenizer.from_pretrained({here.arguments()})",
    ]


def key_value_table(rows: dict[str, Any], header: tuple[str, str]) -> str:
    """A Markdown table of any key -> value mapping (non-text values as JSON, pipes escaped)."""
    lines = [f"| {header[0]} | {header[1]} |", "|:---|:---|"]
    for key, value in rows.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        cells = [str(key).replace("|", "\\|"), text.replace("|", "\\|")]
        lines.append(f"| {cells[0]} | `{cells[1]}` |")
    return "\n".join(lines)


def title_and_summary(
    stage: str, adapter: bool, base: str, sft: Location | None, source: str | None, from_base: bool = False
) -> tuple[str, str]:
    """The card's title and its first paragraph: what the folder holds and what it sits on (``from_base``: a
    preference run from the base model, ``export_info.json``'s ``start: base``)."""
    what = "A LoRA adapter" if adapter else "Full weights"
    if stage == "reward":
        return "Reward model", (
            f"A Bradley-Terry reward model (Ouyang et al. 2022): `{base}` with a one-output `score` head, "
            "full weights that load without peft; the reward is the score at the last token of prompt + response + EOS."
        )
    if stage == "merged":
        return "Merged weights: base + SFT + DPO", (
            f"Full weights of `{base}` with the SFT LoRA adapter and then the DPO LoRA adapter merged in; "
            "they load as a plain model, without peft."
        )
    if stage == "dpo":
        start = f"`{base}` with the SFT adapter `{sft}` merged in" if sft else f"the SFT model `{source or base}`"
        if from_base:
            start = f"the base model `{base}` itself (no SFT stage)"
        summary = f"{what} trained with Direct Preference Optimization (DPO; Rafailov et al. 2023) on {start}."
        if adapter and not from_base:
            summary += " Apply it to that model, not to the bare base."
        return ("DPO LoRA adapter" if adapter else "DPO full model"), summary
    title = "SFT LoRA adapter" if adapter else "SFT full model"
    return title, f"{what} from supervised fine-tuning (SFT) of `{base}`."


def training_rows(config: dict[str, Any], info: dict[str, Any]) -> list[tuple[str, Any]]:
    """The settings that matter to repeat the run: from the saved config, corrected by ``export_info.json``."""
    rows = settings(config, EXPORT_SETTINGS)
    if info.get("precision"):
        # What the run computed in after the hardware rule, not the config's "auto".
        rows = [(name, value) for name, value in rows if name != "precision"] + [("precision", info["precision"])]
    if info.get("global_step") is not None:
        rows.append(("optimizer steps", info["global_step"]))
    if info.get("template"):
        rows.append(("prompt template", info["template"]))
    return rows


def export_card(
    folder: Path,
    *,
    stage: str | None = None,
    location: Location | None = None,
    sft: Location | None = None,
    base_model: str | None = None,
    license: str | None = None,
) -> ModelCard:
    """The card of one export folder: what it is, its base, how to load it, its settings and provenance.

    Args:
        folder: the export (``export_info.json``, weights, maybe ``training_config.yaml``).
        stage: ``"sft"``, ``"dpo"`` or ``"merged"`` (base + SFT + DPO in full weights); ``None`` reads it
            from ``export_info.json``.
        location: how the usage snippet loads the folder (default: its path).
        sft: where the SFT *adapter* a DPO export was trained on (merged) loads from; default:
            ``export_info.json``'s ``source_model`` when that folder is a LoRA adapter. ``None`` for a DPO
            export on a full SFT model, whose base then is that model.
        base_model: the base model (default: read from the folder's files).
        license: the license (default: the base model's README.md when the base is a local folder).

    Raises:
        ValueError: an unknown ``stage``.
    """
    if stage is not None and stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}.")
    info = read_export_info(folder)
    config = training_config(folder)
    stage = stage or stage_of(info)
    adapter = (folder / "adapter_config.json").is_file()
    base = base_model or export_base(folder, info) or "the base model"
    source = info.get("source_model")
    if sft is None and stage == "dpo" and source and adapter_base(Path(source)) is not None:
        sft = Location(str(source))
    title, summary = title_and_summary(stage, adapter, base, sft, source, info.get("start") == "base")
    rows = training_rows(config, info)
    if rows or stage != "merged":
        training = settings_table(rows)
    else:  # a merge trains nothing; its inputs carry the settings
        training = "See the cards of the SFT and DPO adapters (`sft/README.md`, `dpo/README.md`)."
    body = [
        f"# {title}",
        "",
        f"{summary} Trained with this project's PyTorch Lightning trainer (hand-written SFT and DPO losses).",
        "",
        "## Usage",
        "",
        "```python",
        *usage(stage, adapter, base, location or Location(str(folder)), sft),
        "```",
        "",
        "## Training",
        "",
        training,
    ]
    provenance = info.get("provenance")
    if isinstance(provenance, dict) and provenance:
        body += ["", "## Provenance", "", key_value_table(provenance, ("Item", "Value"))]
    tags = ["sft", *(["dpo"] if stage != "sft" else []), *(["lora"] if adapter else [])]
    if stage == "reward":
        tags = ["reward-model"]
    data = card_data(
        library_name="peft" if adapter else "transformers",
        tags=[*tags, *(["merged"] if stage == "merged" else []), "lightning"],
        base_model=base,
        datasets=hub_dataset_ids(as_list(dig(config, *EXPORT_SETTINGS["training data"]))),
        license=license or license_of(base),
        pipeline_tag="text-classification" if stage == "reward" else PIPELINE_TAG,
    )
    return model_card(data, "\n".join(body))


def write_export_card(folder: Path, **options: Any) -> Path:
    """Write :func:`export_card` as the folder's README.md (replacing peft's template); return its path."""
    path = folder / "README.md"
    path.write_text(str(export_card(folder, **options)), encoding="utf-8")
    return path
