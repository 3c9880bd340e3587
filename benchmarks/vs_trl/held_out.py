"""The held-out loss, computed by the same function for every implementation, and what it needs from the
initial model (the DPO reference log-probs, the losses before training)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from jsonargparse import Namespace

from benchmarks.vs_trl.flops import compute_dtype


def autocast(precision: str):
    """``torch.autocast`` on the CPU for a mixed precision, nothing for a ``-true`` one."""
    import torch

    if precision.endswith("-mixed"):
        return torch.autocast("cpu", dtype=compute_dtype(precision))
    return contextlib.nullcontext()


def held_out_loss(model, spec: dict) -> float:
    """The same loss function for every implementation: response NLL (SFT) or DPO loss (DPO)."""
    import torch

    from datamodules.collate import PreferenceCollator, SFTCollator
    from datamodules.instruction import tokenize_instruction
    from datamodules.preference import tokenize_preference
    from datamodules.tokenizer import load_tokenizer
    from lightning_modules.losses import sequence_logps, sft_loss
    from lightning_modules.preference_losses import PairLogps, sigmoid

    tokenizer = load_tokenizer(str(Path(spec["workdir"]) / "base"))
    eval_file = spec["files"]["sft_eval" if spec["task"] == "sft" else "prefs_eval"]
    rows = [json.loads(line) for line in Path(eval_file).read_text().splitlines()]
    model.eval()

    def logits_and_labels(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad(), autocast(spec["precision"]):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return logits[:, :-1].float(), batch["labels"][:, 1:]

    if spec["task"] == "sft":
        examples = [
            tokenize_instruction({**r, "_row": i, "_source": "eval"}, tokenizer, "alpaca", spec["max_length"])
            for i, r in enumerate(rows)
        ]
        batch = SFTCollator(tokenizer.pad_token_id)(examples)
        logits, labels = logits_and_labels(batch)
        return float(sft_loss(logits, labels))
    examples = [
        {
            **tokenize_preference(
                {**r, "_row": i, "_source": "eval"}, tokenizer, "alpaca", spec["max_length"], spec["max_length"] // 2
            ),
            "pair_index": i,
        }
        for i, r in enumerate(rows)
    ]
    batch = PreferenceCollator(tokenizer.pad_token_id)(examples)
    logits, labels = logits_and_labels(batch)
    logps, lengths = sequence_logps(logits, labels)
    reference = torch.tensor(spec["reference_eval_logps"])
    pairs = len(examples)
    chosen, rejected = slice(0, pairs), slice(pairs, None)
    pair_logps = PairLogps(
        logps[chosen], logps[rejected], lengths[chosen], lengths[rejected], reference[chosen], reference[rejected]
    )
    return float(sigmoid(pair_logps, beta=0.1).losses.mean())


def reference_eval_logps(workdir: Path, args: Namespace, files: dict) -> list[float]:
    """Log-probs of the held-out pairs under the initial model (the DPO reference), computed once."""
    import torch
    from transformers import AutoModelForCausalLM

    from datamodules.collate import PreferenceCollator
    from datamodules.preference import tokenize_preference
    from datamodules.tokenizer import load_tokenizer
    from lightning_modules.losses import sequence_logps

    tokenizer = load_tokenizer(str(workdir / "base"))
    model = AutoModelForCausalLM.from_pretrained(str(workdir / "base")).eval()
    rows = [json.loads(line) for line in Path(files["prefs_eval"]).read_text().splitlines()]
    examples = [
        {
            **tokenize_preference(
                {**r, "_row": i, "_source": "eval"}, tokenizer, "alpaca", args.max_length, args.max_length // 2
            ),
            "pair_index": i,
        }
        for i, r in enumerate(rows)
    ]
    batch = PreferenceCollator(tokenizer.pad_token_id)(examples)
    with torch.no_grad(), autocast(args.resolved_precision):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps, _ = sequence_logps(logits[:, :-1].float(), batch["labels"][:, 1:])
    return logps.tolist()


def initial_held_out_losses(workdir: Path, args: Namespace, setup: dict) -> dict:
    """The held-out losses before any step (the same model for every implementation)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(workdir / "base"))
    spec = {
        "workdir": str(workdir),
        "files": setup["files"],
        "max_length": args.max_length,
        "precision": args.resolved_precision,
    }
    losses = {"sft": held_out_loss(model, {**spec, "task": "sft"})}
    if "reference_eval_logps" in setup:
        losses["dpo"] = held_out_loss(model, {**spec, "task": "dpo", **setup})
    return losses
