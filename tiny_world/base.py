"""Build the embedded tiny base model: a local BPE tokenizer and a few-million-parameter Mistral.

Deterministic: the same data files and arguments give the same tokenizer and weights. The result is
saved with ``save_pretrained`` (safetensors) and loads through the very same
``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` path as
``mistralai/Mistral-7B-v0.1``.

A randomly initialised model knows no words, so a LoRA on top of it cannot show anything; with
``--pretrain-steps`` the base is first pre-trained briefly as a plain language model on the suite's
plain text (``data/tiny/pretrain.txt``: facts, sums, poems, code, never in instruction format), so
the base knows the vocabulary and the facts but not how to follow the Alpaca template.

The command line is ``scripts/build_tiny_model.py``::

    python scripts/build_tiny_model.py --out artifacts/tiny-base
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

from common.atomic import atomic_folder
from common.errors import DataError
from common.jsonl import read_jsonl
from common.precision import AUTO, announce, detect_hardware, resolve_precision

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]
# The base's card: the license the SFT / DPO cards built on it inherit (callbacks/export_card.py reads it).
CARD = """---
license: apache-2.0
library_name: transformers
pipeline_tag: text-generation
tags: [mistral, tiny, synthetic]
---

# Tiny Mistral base

A few-million-parameter Mistral with its own byte-level BPE tokenizer, built by `scripts/build_tiny_model.py`
from this project's synthetic tiny suite (`data/tiny`), optionally pre-trained briefly on its plain text. It
stands in for `mistralai/Mistral-7B-v0.1` in the demo and the tests; it knows nothing beyond that suite.
"""


def corpus_texts(data_dir: Path) -> list[str]:
    """Every text of the suite: the pre-training lines and all instruction / preference fields."""
    texts: list[str] = []
    pretrain = data_dir / "pretrain.txt"
    if pretrain.is_file():
        texts += [line for line in pretrain.read_text(encoding="utf-8").splitlines() if line.strip()]
    for path in sorted(data_dir.glob("*.jsonl")):
        for row in read_jsonl(path):
            for value in row.values():
                if isinstance(value, str):
                    texts.append(value)
                elif isinstance(value, list):
                    texts += [m["content"] for m in value if isinstance(m, dict) and "content" in m]
    return texts


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (no unknown characters) with Mistral's special tokens and BOS prepended."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    # Mistral-7B-v0.1 has no pad token either; the trainers fall back to EOS as Mistral users do.
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def tiny_config(
    vocab_size: int, hidden: int, layers: int, heads: int, kv_heads: int, max_positions: int
) -> MistralConfig:
    """A Mistral architecture (GQA, RoPE, SwiGLU, RMSNorm) at a few million parameters."""
    return MistralConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=max_positions,
        sliding_window=None,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )


def pretrain(
    model: MistralForCausalLM,
    tokenizer,
    texts: list[str],
    steps: int,
    seq_len: int,
    batch_size: int,
    lr: float,
    seed: int,
    autocast_dtype: torch.dtype | None = None,
) -> None:
    """Plain next-token pre-training on packed documents (fp32 weights; autocast to ``autocast_dtype`` if set)."""
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    data = torch.tensor(ids, dtype=torch.long)
    n_windows = (len(data) - 1) // seq_len
    generator = torch.Generator().manual_seed(seed)
    # fused: one kernel for all tensors, 3 ms a step against 15 ms for the default on 2 cores
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95), fused=True)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        starts = torch.randint(0, n_windows, (batch_size,), generator=generator) * seq_len
        batch = torch.stack([data[s : s + seq_len + 1] for s in starts.tolist()])  # (B, T+1)
        with torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext():
            logits = model(input_ids=batch[:, :-1]).logits  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == steps - 1:
            print(
                f"  pre-train step {step + 1}/{steps}  loss {loss.item():.3f}  ({time.perf_counter() - start:.0f}s)",
                flush=True,
            )


@dataclass
class TinyBaseSettings:
    """The tiny base's architecture and its brief pre-training.

    Attributes:
        vocab_size: BPE vocabulary size (special tokens included).
        hidden: hidden size; the MLP is three times as wide.
        layers: decoder layers.
        heads: attention heads (head size ``hidden / heads``).
        kv_heads: key/value heads (grouped-query attention, as Mistral).
        max_positions: longest sequence the model takes.
        pretrain_steps: plain next-token steps on ``pretrain.txt`` (0: random weights).
        seq_len: tokens per pre-training window.
        batch_size: windows per pre-training step.
        lr: peak pre-training learning rate (warm-up, then cosine decay).
        seed: seed of the weights, the corpus order and the windows.
        precision: ``auto`` (bf16-mixed on a CPU with native bf16, else 32-true) or a Lightning precision name.
    """

    vocab_size: int = 2048
    hidden: int = 256
    layers: int = 4
    heads: int = 8
    kv_heads: int = 4
    max_positions: int = 2048
    pretrain_steps: int = 300
    seq_len: int = 128
    batch_size: int = 16
    lr: float = 2e-3
    seed: int = 0
    precision: str = AUTO


def build(out: Path, data_dir: Path, settings: TinyBaseSettings) -> None:
    """Build the tokenizer and model and save both into ``out`` (atomically: temp folder, then rename).

    ``settings.precision`` decides the pre-training's autocast by the project's rule (``common.precision``):
    bf16 only on a CPU that computes it natively.

    Raises:
        DataError: no text in ``data_dir``.
    """
    choice = resolve_precision(settings.precision, detect_hardware("cpu"))
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    texts = corpus_texts(data_dir)
    if not texts:
        raise DataError(
            f"no text found in {data_dir} (expected pretrain.txt and *.jsonl); run scripts/make_tiny_suite.py"
        )
    tokenizer = train_tokenizer(texts, settings.vocab_size)
    config = tiny_config(
        len(tokenizer), settings.hidden, settings.layers, settings.heads, settings.kv_heads, settings.max_positions
    )
    model = MistralForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tiny Mistral: {n_params / 1e6:.2f}M parameters, vocabulary {len(tokenizer)}")
    if settings.pretrain_steps:
        announce(choice, "tiny base")
        pretrain_texts = (data_dir / "pretrain.txt").read_text(encoding="utf-8").splitlines()
        random.Random(settings.seed).shuffle(pretrain_texts)
        pretrain(
            model,
            tokenizer,
            pretrain_texts,
            settings.pretrain_steps,
            settings.seq_len,
            settings.batch_size,
            settings.lr,
            settings.seed,
            choice.autocast_dtype,
        )
    recorded = {key: value for key, value in asdict(settings).items() if key not in ("max_positions", "precision")}
    recorded |= {"precision": str(choice) if settings.pretrain_steps else None, "parameters": n_params}
    with atomic_folder(out) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "README.md").write_text(CARD, encoding="utf-8")
        (staging / "build_args.json").write_text(json.dumps(recorded, indent=2))
    print(f"saved the tiny base model and tokenizer to {out}")
