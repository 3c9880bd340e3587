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
from planner.timing import ALPACA_GPT4, ULTRAFEEDBACK


def log_uniform_length(rng: random.Random, low: int, high: int) -> int:
    """Many short texts and a few long ones, as in instruction data."""
    return int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))


def log_normal_length(rng: random.Random, mean: float, sigma: float, high: int) -> int:
    """A log-normal length of the given mean (``mu = ln(mean) - sigma^2 / 2``), at least 1 and at most ``high``."""
    return max(1, min(high, int(round(rng.lognormvariate(math.log(mean) - sigma**2 / 2, sigma)))))


# The real datasets' mean lengths in tokens from the planner's table (planner/timing.py, where each figure's source
# is written), less the prompt template that the data modules add: 42 tokens (Alpaca-GPT4), 35 (UltraFeedback).
SFT_PROMPT_MEAN, SFT_RESPONSE_MEAN = ALPACA_GPT4.prompt - 42.0, ALPACA_GPT4.response
DPO_PROMPT_MEAN, DPO_RESPONSE_MEAN = ULTRAFEEDBACK.prompt - 35.0, ULTRAFEEDBACK.response
LENGTH_SIGMA = 0.8
"""The log-normal's spread (a coefficient of variation of 0.95): assumed, not measured; the Hub, where the
datasets' quantiles could be read, is not reachable from these machines."""
TEMPLATE_MARGIN = 48
"""Tokens kept free for the prompt template, so that no generated row is cut at ``max_length``."""
WORKLOADS = {
    "realistic": "prompt / response lengths log-normal around Alpaca-GPT4's means (SFT: 28 / 162 tokens) and "
    "UltraFeedback's (DPO: 158 / 330 per response), sigma 0.8 (assumed), a prompt at most max_length / 2 - 48 "
    "tokens and a response at most what its prompt leaves of max_length - 48",
    "log_uniform": "every text log-uniform between --min-text-tokens and --max-text-tokens (16-400)",
    "short_uniform": "prompts uniform 6-32 tokens, responses uniform 12-200 (short rows, little spread)",
}
"""The benchmark's workloads: how long the generated prompts and responses are. ``realistic`` is the headline."""


def length_sampler(workload: str, rng: random.Random, args: Namespace):
    """``sample(task, part, room) -> tokens`` for ``task`` ``sft`` / ``dpo`` and ``part`` ``prompt`` / ``response``.

    ``realistic`` and ``short_uniform`` keep a text within ``room`` (the caller's: half of ``max_length`` for a
    prompt, what the prompt leaves for a response), as the study's truncation would (``max_length`` 1024,
    ``max_prompt_length`` 512), so that no row is cut; ``log_uniform`` stays within its own bounds."""
    if workload == "log_uniform":
        return lambda task, part, room: log_uniform_length(rng, args.min_text_tokens, args.max_text_tokens)
    if workload == "short_uniform":
        bounds = {"prompt": (6, 32), "response": (12, 200)}
        return lambda task, part, room: min(max(1, room), rng.randint(*bounds[part]))
    if workload == "realistic":
        means = {
            ("sft", "prompt"): SFT_PROMPT_MEAN,
            ("sft", "response"): SFT_RESPONSE_MEAN,
            ("dpo", "prompt"): DPO_PROMPT_MEAN,
            ("dpo", "response"): DPO_RESPONSE_MEAN,
        }

        def sample(task: str, part: str, room: int) -> int:
            return log_normal_length(rng, means[task, part], LENGTH_SIGMA, max(8, room))

        return sample
    raise ValueError(f"--workload: one of {', '.join(WORKLOADS)}, got {workload!r}")


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

    length = length_sampler(args.workload, rng, args)
    prompt_room = args.max_length // 2 - TEMPLATE_MARGIN

    def pair() -> dict:
        # chosen and rejected drawn independently (real pairs' lengths are correlated: independent draws pad a
        # padded batch more than real data would)
        prompt = length("dpo", "prompt", prompt_room)
        room = args.max_length - TEMPLATE_MARGIN - prompt
        return {
            "prompt": text(prompt),
            "chosen": text(length("dpo", "response", room)),
            "rejected": shuffled(length("dpo", "response", room)),
        }

    def sft_row() -> dict:
        prompt = length("sft", "prompt", prompt_room)
        return {
            "instruction": text(prompt),
            "input": "",
            "output": text(length("sft", "response", args.max_length - TEMPLATE_MARGIN - prompt)),
        }

    total_steps = args.warmup_steps + args.steps
    n_sft = total_steps * args.batch_size
    n_pairs = total_steps * args.dpo_batch_size
    files = {}
    sft_rows = [sft_row() for _ in range(n_sft)]
    pairs = [pair() for _ in range(n_pairs)]
    sft_eval = [sft_row() for _ in range(args.eval_rows)]
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
        "workload": args.workload,
        "workload_lengths": WORKLOADS[args.workload],
        "mean_pair_text_tokens": {
            part: sum(len(tokenizer(r[part], add_special_tokens=False)["input_ids"]) for r in pairs) / len(pairs)
            for part in ("prompt", "chosen", "rejected")
        },
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
