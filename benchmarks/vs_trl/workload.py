"""The work both sides train on: generated rows, the randomly initialised Mistral, and the LoRA settings.

The tokenizer and the model's shape come from the tiny base (``tiny_world.base``); the weights are random (seeded).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from jsonargparse import Namespace

from benchmarks.vs_trl import REPO


def log_uniform_length(rng: random.Random, low: int, high: int) -> int:
    """Many short texts and a few long ones, as in instruction data."""
    return int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))


def build_workdir(workdir: Path, args: Namespace) -> dict:
    """Tokenizer, randomly initialised Mistral, and generated SFT / preference data in ``workdir``."""
    import torch
    from transformers import MistralForCausalLM

    from datamodules.templates import format_prompt
    from tiny_world.base import corpus_texts, tiny_config, train_tokenizer

    texts = corpus_texts(REPO / "data" / "tiny")
    tokenizer = train_tokenizer(texts, args.vocab_size)
    config = tiny_config(
        len(tokenizer), args.hidden, args.layers, args.heads, args.kv_heads, max_positions=2 * args.max_length
    )
    torch.manual_seed(args.seed)
    model = MistralForCausalLM(config)
    model.save_pretrained(workdir / "base")
    tokenizer.save_pretrained(workdir / "base")

    lines = [line for line in (REPO / "data" / "tiny" / "pretrain.txt").read_text().splitlines() if line.strip()]
    line_ids = [tokenizer(line, add_special_tokens=False)["input_ids"] for line in lines]
    rng = random.Random(args.seed)

    def text(n_tokens: int) -> str:
        ids: list[int] = []
        while len(ids) < n_tokens:
            ids += rng.choice(line_ids) + tokenizer(" ", add_special_tokens=False)["input_ids"]
        return tokenizer.decode(ids[:n_tokens]).strip()

    def shuffled(n_tokens: int) -> str:
        """The words of real text in random order: a rejected answer DPO can learn to tell apart."""
        words = text(n_tokens).split()
        rng.shuffle(words)
        return " ".join(words)

    def length() -> int:
        return log_uniform_length(rng, args.min_text_tokens, args.max_text_tokens)

    def pair() -> dict:
        return {"prompt": text(length()), "chosen": text(length()), "rejected": shuffled(length())}

    total_steps = args.warmup_steps + args.steps
    n_sft = total_steps * args.batch_size
    n_pairs = total_steps * args.dpo_batch_size
    files = {}
    sft_rows = [{"instruction": text(length()), "input": "", "output": text(length())} for _ in range(n_sft)]
    pairs = [pair() for _ in range(n_pairs)]
    sft_eval = [{"instruction": text(length()), "input": "", "output": text(length())} for _ in range(args.eval_rows)]
    pairs_eval = [pair() for _ in range(args.eval_rows)]
    for name, rows in (("sft", sft_rows), ("prefs", pairs), ("sft_eval", sft_eval), ("prefs_eval", pairs_eval)):
        files[name] = workdir / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(row) + "\n" for row in rows))
    # TRL reads the same rows with the prompt already rendered by our template: both see identical text.
    trl_sft = [{"prompt": format_prompt(r["instruction"], r["input"]), "completion": r["output"]} for r in sft_rows]
    trl_prefs = [{**r, "prompt": format_prompt(r["prompt"])} for r in pairs]
    for name, rows in (("trl_sft", trl_sft), ("trl_prefs", trl_prefs)):
        files[name] = workdir / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(row) + "\n" for row in rows))

    body = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "decoder_parameters": body,
        "vocab_size": len(tokenizer),
        "hidden": args.hidden,
        "layers": args.layers,
        "heads": args.heads,
        "kv_heads": args.kv_heads,
        "query_width": config.num_attention_heads * config.head_dim,
        "sft_rows": n_sft,
        "pairs": n_pairs,
        "files": {k: str(v) for k, v in files.items()},
    }


def lora_settings():
    from common.settings import LoraSettings

    return LoraSettings(r=16, alpha=32, dropout=0.0)


def peft_lora_config():
    """The same adapter for TRL's side: the ``peft.LoraConfig`` our settings build."""
    return lora_settings().peft_config()


def lora_parameter_count(workdir: Path, setup: dict) -> int:
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(workdir / "base")), peft_lora_config())
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
