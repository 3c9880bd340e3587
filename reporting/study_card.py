"""The study's model card: the README.md of the Hub repository that holds the SFT and DPO adapters and the results.

Its front matter follows the Hub's conventions (base model, datasets, license and a ``model-index`` of the
evaluation's headline numbers, :func:`evaluation_results`); its body gives the data, the hyper-parameters
of both stages (from the training configs saved beside the exports), the headline table of the report and
how to load the adapters. Each export folder keeps its own card (:mod:`callbacks.export_card`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult

from callbacks import export_card as cards
from common.trees import dig
from lightning_modules.loading import training_config
from reporting.report import headline_table

SFT_KEYS = {
    "base model": ("model", "init_args", "model_name_or_path"),
    "training data": ("data", "init_args", "train_files"),
    "examples": ("data", "init_args", "num_examples"),
    "template": ("data", "init_args", "template"),
    "max length": ("data", "init_args", "max_length"),
    "batch size": ("data", "init_args", "batch_size"),
    "gradient accumulation": ("trainer", "accumulate_grad_batches"),
    "epochs": ("trainer", "max_epochs"),
    "precision": ("trainer", "precision"),
    "learning rate": ("model", "init_args", "optimizer", "lr"),
    "schedule": ("model", "init_args", "optimizer", "schedule"),
    "warmup ratio": ("model", "init_args", "optimizer", "warmup_ratio"),
    "LoRA r": ("model", "init_args", "lora", "r"),
    "LoRA alpha": ("model", "init_args", "lora", "alpha"),
    "LoRA dropout": ("model", "init_args", "lora", "dropout"),
    "LoRA target modules": ("model", "init_args", "lora", "target_modules"),
    "4-bit base (QLoRA)": ("model", "init_args", "load", "load_in_4bit"),  # absent with no load: section
    "seed": ("seed_everything",),
}
DPO_KEYS = {
    "starting model (SFT export)": ("model", "init_args", "model_name_or_path"),
    "preference data": ("data", "init_args", "train_files"),
    "beta": ("model", "init_args", "beta"),
    "loss type": ("model", "init_args", "loss_type"),  # the older spelling of a one-loss list
    "label smoothing": ("model", "init_args", "label_smoothing"),
    "losses": ("model", "init_args", "losses"),
    "reference": ("model", "init_args", "reference"),
    **{name: path for name, path in SFT_KEYS.items() if name not in ("base model", "training data")},
}


def model_card(
    repo_id: str,
    base_model: str,
    sft: Path,
    dpo: Path,
    results: dict | None,
    merged: bool,
    license: str | None = None,
) -> str:
    """The README.md of the Hub repository; its front matter follows the Hub's model card conventions."""
    sft_config, dpo_config = training_config(sft), training_config(dpo)
    sources = [
        source
        for config in (sft_config, dpo_config)
        for source in cards.as_list(dig(config, *SFT_KEYS["training data"]))
    ]
    datasets = cards.hub_dataset_ids(sources)
    local = [source for source in dict.fromkeys(sources) if source not in datasets]
    data = cards.card_data(
        library_name="peft",
        tags=["sft", "dpo", "lora", "lightning"],
        base_model=base_model,
        datasets=datasets,
        license=license,
        eval_results=evaluation_results(results) if results is not None else None,
        model_name=repo_id.split("/")[-1],
    )
    lines = [
        f"# {repo_id.split('/')[-1]}: SFT vs SFT+DPO",
        "",
        f"LoRA adapters from a supervised fine-tuning (SFT) then Direct Preference Optimization (DPO) study of "
        f"`{base_model}`, trained with this project's PyTorch Lightning trainer (hand-written SFT and DPO losses).",
    ]
    if local:
        lines += ["", f"Local training data (not on the Hub): {', '.join(f'`{source}`' for source in local)}."]
    lines += [
        "",
        "- `sft/`: the SFT adapter, on the base model.",
        "- `dpo/`: the DPO adapter, on the base model with the SFT adapter merged in.",
    ]
    if merged:
        lines.append("- `merged/`: base + SFT + DPO merged into full weights (loads with `AutoModelForCausalLM`).")
    lines += [
        "- `results/`: the evaluation of base, SFT and SFT+DPO (`report.md`, `evaluation_results.json`, side by side).",
        "",
        "## Evaluation",
        "",
    ]
    if results is not None:
        meta = results["meta"]
        lines += [
            f"Evaluated {meta['created']}: {meta['num_prompts']} prompts, {meta['num_preference_pairs']} held-out "
            f"preference pairs, {meta['num_instruction_examples']} held-out instruction examples; template "
            f"`{meta['template']}`, greedy decoding unless stated in `results/evaluation_results.json`.",
            "",
            headline_table(results),
        ]
    else:
        lines.append("(no evaluation results were found when this card was written)")
    lines += [
        "",
        "## Training",
        "",
        "### SFT",
        "",
        cards.settings_table(cards.settings(sft_config, SFT_KEYS)),
        "",
        "### DPO",
        "",
        cards.settings_table(cards.settings(dpo_config, DPO_KEYS)),
        "",
        "## Usage",
        "",
        "```python",
        "from huggingface_hub import snapshot_download",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'local = snapshot_download("{repo_id}")',
        f'base = AutoModelForCausalLM.from_pretrained("{base_model}")',
        'sft = PeftModel.from_pretrained(base, f"{local}/sft").merge_and_unload()',
        'model = PeftModel.from_pretrained(sft, f"{local}/dpo")',
        'tokenizer = AutoTokenizer.from_pretrained(f"{local}/sft")',
        "```",
        "",
        "Prompts must use the training template (Alpaca: `### Instruction:` ... `### Response:`).",
    ]
    return str(cards.model_card(data, "\n".join(lines)))


def evaluation_results(results: dict[str, Any]) -> list[EvalResult]:
    """``model-index`` entries of an ``evaluation_results.json``, per variant; missing metrics are skipped.

    Held-out preference accuracy, the pass rate of the checked prompts and the perplexity of held-out
    reference responses. A Hub dataset id names the dataset; a local file is named by its file name.
    """
    meta = results.get("meta", {})
    labels = meta.get("labels", {})
    datasets = {
        "preference": dataset_names((meta.get("preference_data") or {}).get("files"), "held-out preference pairs"),
        "checked_score": dataset_names(meta.get("prompt_files"), "evaluation prompts"),
        "perplexity": dataset_names((meta.get("instruction_data") or {}).get("files"), "held-out instructions"),
    }
    found = []
    for variant, metrics in results.get("metrics", {}).items():
        label = labels.get(variant, variant)
        values = {
            "preference": (metrics.get("preference") or {}).get("accuracy"),
            "checked_score": (metrics.get("checked_score") or {}).get("overall"),
            "perplexity": (metrics.get("perplexity") or {}).get("value"),
        }
        names = {
            "preference": ("accuracy", f"Preference accuracy, log p chosen > rejected ({label})"),
            "checked_score": ("pass_rate", f"Checked-prompt pass rate ({label})"),
            "perplexity": ("perplexity", f"Perplexity of reference responses ({label})"),
        }
        for key, value in values.items():
            if value is None:
                continue
            dataset_type, dataset_name = datasets[key]
            metric_type, metric_name = names[key]
            found.append(
                EvalResult(
                    task_type=cards.PIPELINE_TAG,
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    metric_type=metric_type,
                    metric_name=metric_name,
                    metric_value=value,
                )
            )
    return found


def dataset_names(files: str | list[str] | None, what: str) -> tuple[str, str]:
    """``(type, name)`` of an evaluation dataset: its Hub id, else its file names (never a local path)."""
    sources = cards.as_list(files)
    hub = cards.hub_dataset_ids(sources)
    if sources and hub == sources:
        return ", ".join(hub), f"{what} ({', '.join(hub)})"
    if not sources:
        return what.replace(" ", "-"), what
    names = ", ".join(Path(source).name for source in sources)
    return names, f"{what} ({names})"
