"""Publishing the study on the Hugging Face Hub: the SFT and DPO adapters, the results and a model card.

The folder that is uploaded holds::

    README.md        the model card (:mod:`reporting.study_card`): base model, data, hyper-parameters
                     (from the saved training configs), the metric table, how to load the adapters;
                     its front matter gives the Hub base_model, datasets, license and a model-index
    sft/             the SFT LoRA adapter (+ tokenizer, export_info.json, training_config.yaml, its card)
    dpo/             the DPO LoRA adapter, to apply on base + SFT merged
    merged/          (merged only) base + SFT + DPO merged into full weights
    results/         evaluation_results.json, side_by_side_comparison.txt, report.md, plots/

The token comes from ``HF_TOKEN`` or the login cache (``hf auth login``); nothing here prints, logs or
writes it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from callbacks import export_card as cards
from common.errors import UploadError
from reporting.study_card import model_card

SETS: dict[str, dict[str, str]] = {
    "tiny": {"sft": "outputs/tiny/sft", "dpo": "outputs/tiny/dpo", "results": "results"},
    "study": {"sft": "outputs/study/sft", "dpo": "outputs/study/dpo", "results": "results/study"},
}
RESULT_FILES = ("evaluation_results.json", "side_by_side_comparison.txt", "report.md")


def copy_export(export: Path, destination: Path, stage: str) -> None:
    """Copy an export folder's files (not its hidden staging leftovers)."""
    if not (export / "export_info.json").is_file():
        raise UploadError(
            f"{export}: no complete {stage} export (export_info.json missing). Run the pipeline first, "
            f"or pass --{stage} with the export folder."
        )
    destination.mkdir(parents=True)
    for item in sorted(export.iterdir()):
        if item.is_file() and not item.name.startswith("."):
            shutil.copy2(item, destination / item.name)


def save_merged(sft: Path, dpo: Path, destination: Path) -> None:
    """Base + SFT + DPO merged into one full model, with the tokenizer.

    The merge runs in fp32 (exact on any machine); the weights are saved in the dtype the base model was
    published in (its config's ``dtype``), so the merged folder is no larger than the base.
    """
    import torch
    from transformers import AutoConfig

    from datamodules.tokenizer import load_tokenizer
    from evaluation.variants import VariantLoadSettings, load_variant, resolve_sources

    sources = resolve_sources(str(sft), str(dpo))
    model = load_variant("sft_dpo", sources, VariantLoadSettings(dtype="float32", merge_adapters=True))
    published = AutoConfig.from_pretrained(sources.base).dtype
    if isinstance(published, torch.dtype):
        model = model.to(published)
    model.save_pretrained(destination, safe_serialization=True)
    load_tokenizer(str(sft)).save_pretrained(destination)


def build_folder(
    folder: Path, repo_id: str, sft: Path, dpo: Path, results_dir: Path, merged: bool = False, api: Any = None
) -> list[Path]:
    """Write everything to upload into ``folder`` (which must not exist); return the files, sorted.

    Every card is written afresh (exports made before the cards existed carry peft's empty template).
    ``api`` (an ``HfApi``) is asked for the license of a Hub base model; ``None`` asks nothing.
    """
    from lightning_modules.loading import check_sft_export

    base_model = check_sft_export(str(sft))["base"] or str(sft)
    license = cards.license_of(base_model, api)
    folder.mkdir(parents=True)
    copy_export(sft, folder / "sft", "sft")
    copy_export(dpo, folder / "dpo", "dpo")
    card = {"base_model": base_model, "license": license}
    in_repo = {stage: cards.Location(repo_id, stage) for stage in ("sft", "dpo", "merged")}
    cards.write_export_card(folder / "sft", stage="sft", location=in_repo["sft"], **card)
    sft_adapter = in_repo["sft"] if (folder / "sft" / "adapter_config.json").is_file() else None
    cards.write_export_card(folder / "dpo", stage="dpo", location=in_repo["dpo"], sft=sft_adapter, **card)
    results = None
    if results_dir.is_dir():
        (folder / "results").mkdir()
        for name in RESULT_FILES:
            if (results_dir / name).is_file():
                shutil.copy2(results_dir / name, folder / "results" / name)
        if (results_dir / "plots").is_dir():
            shutil.copytree(results_dir / "plots", folder / "results" / "plots")
        if (results_dir / "evaluation_results.json").is_file():
            results = json.loads((results_dir / "evaluation_results.json").read_text())
    if merged:
        save_merged(sft, dpo, folder / "merged")
        cards.write_export_card(folder / "merged", stage="merged", location=in_repo["merged"], **card)
    (folder / "README.md").write_text(model_card(repo_id, base_model, sft, dpo, results, merged, license))
    return sorted(path for path in folder.rglob("*") if path.is_file())


def listing(folder: Path, files: list[Path]) -> str:
    """One line per file: size and path relative to ``folder``."""
    lines = [f"{file.stat().st_size:>12,}  {file.relative_to(folder)}" for file in files]
    total = sum(file.stat().st_size for file in files)
    return "\n".join(lines + [f"{total:>12,}  total, {len(files)} files"])


def upload(folder: Path, repo_id: str, private: bool, api: Any) -> str:
    """``create_repo`` (private by default, no error if it exists) then ``upload_folder``; return the URL."""
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=str(folder),
        commit_message="Upload SFT and DPO adapters, evaluation results and model card",
    )
    return f"https://huggingface.co/{repo_id}"


def check_repo_id(repo_id: str | None) -> str:
    """``owner/name``, or a clear error: the destination is never guessed."""
    if not repo_id:
        raise UploadError(
            "No --repo-id given: name the Hub repository to create or update, e.g. --repo-id your-name/sft-dpo-study "
            "(nothing is guessed)."
        )
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts):
        raise UploadError(f"--repo-id must look like owner/name, got {repo_id!r}.")
    return repo_id


def has_token() -> bool:
    """Whether ``HF_TOKEN`` or the login cache holds a token (the token itself is not kept)."""
    from huggingface_hub import get_token

    return get_token() is not None


def preview(out: Path, repo_id: str, sft: Path, dpo: Path, results_dir: Path, merged: bool = False) -> list[Path]:
    """Write the folder that would be uploaded into ``out`` (replaced if it exists); contact nothing."""
    if out.exists():
        shutil.rmtree(out)
    return build_folder(out, repo_id, sft, dpo, results_dir, merged)


def publish(
    repo_id: str, sft: Path, dpo: Path, results_dir: Path, merged: bool = False, private: bool = True, api: Any = None
) -> str:
    """Build the folder in a temporary staging place and upload it; return the repository's URL.

    ``api`` (an ``HfApi``) defaults to one with the token of ``HF_TOKEN`` or the login cache.

    Raises:
        UploadError: no token, or an export that is missing or incomplete.
    """
    if api is None:
        if not has_token():
            raise UploadError("No Hugging Face token: set HF_TOKEN or run `hf auth login`, then retry.")
        from huggingface_hub import HfApi

        api = HfApi()
    with tempfile.TemporaryDirectory(prefix="hub-upload-") as staging:
        folder = Path(staging) / "upload"
        files = build_folder(folder, repo_id, sft, dpo, results_dir, merged, api)
        print(f"[upload] {len(files)} files to {repo_id} ({'private' if private else 'public'})")
        return upload(folder, repo_id, private, api)
