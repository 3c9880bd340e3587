"""Stand-ins for the real study's Hub downloads, so its configs can run on a CPU, offline (``make study-dryrun``).

Three things are built into one folder (default ``artifacts/study-dryrun``):

- ``base/``: a randomly initialised ``MistralForCausalLM`` with Mistral-7B-v0.1's exact architecture
  (``configs/models/mistral-7b-v0.1.json``: hidden 4096, intermediate 14336, 32 query and 8 key/value heads,
  head_dim 128, vocabulary 32,000, RoPE theta 10,000, sliding window 4096, RMSNorm epsilon 1e-5) but only
  ``layers`` decoder layers, saved in bfloat16 as the real checkpoint is; its tokenizer has Mistral's
  special-token ids (``<unk>`` 0, BOS ``<s>`` 1, EOS ``</s>`` 2), no pad token, and exactly 32,000 ids: a BPE
  trained on the data, filled up with tokens `` w<id>`` so that whatever id the random model generates
  decodes to text (as every id of the real tokenizer does).
- ``judge/``: a ``MistralForSequenceClassification`` of the same shape with one output and a chat template,
  standing in for the study's reward-model judge (a Llama-3.1-8B classifier read through its own chat template).
  Its score head is random: its rewards mean nothing, only the code path is exercised.
- ``data/``: small files with every column of ``vicgalle/alpaca-gpt4`` (``instruction``, ``input``,
  ``output``, ``text``) and of ``HuggingFaceH4/ultrafeedback_binarized``'s ``train_prefs`` / ``test_prefs``
  (``prompt``, ``prompt_id``, ``chosen``, ``rejected``, ``messages``, ``score_chosen``, ``score_rejected``),
  with some prompts longer than the dry run's ``max_prompt_length`` so that truncation is exercised; and
  ``study_prompts_one_per_category.jsonl``, the first prompt of each category of ``data/study_prompts.jsonl``
  (the dry run asks only these: CI time).

Deterministic: the same arguments give the same files. The text is made of English words in random order;
nothing here can learn anything, the point is that the real configs, shapes and schemas run end to end.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import MistralConfig, MistralForCausalLM, MistralForSequenceClassification

from common.atomic import atomic_folder, atomic_write_text
from tiny_world.base import train_tokenizer

REPO = Path(__file__).resolve().parents[1]
MISTRAL_CONFIG = REPO / "configs" / "models" / "mistral-7b-v0.1.json"
STUDY_PROMPTS = REPO / "data" / "study_prompts.jsonl"
ALPACA_PREAMBLE = {
    True: "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.",
    False: "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
}
# Enough words that the BPE tokenizer has to split and merge; order is random, so nothing is learnable.
WORDS = (
    "the a of and to in is that it for on with as was by be this are or from at an which have not can "
    "water light river garden system energy model number answer question reason history city music paper "
    "explain describe list write summarise compare translate calculate suggest classify rewrite identify "
    "quickly carefully simple important different several useful common natural possible difficult "
    "because however therefore although while after before during between through against without "
    "computer language science planet ocean forest mountain weather market health school family friend "
    "story poem letter email recipe plan report table chart code function program data result example"
).split()
# A two-turn chat template like the ones public reward models ship (the judge's `template: own` reads it).
JUDGE_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass
class StudyShapedSettings:
    """What the dry-run stand-ins are built with.

    Attributes:
        layers: decoder layers of the Mistral-7B-shaped base and judge (the real model has 32).
        alpaca_rows: rows of the Alpaca-GPT4 file (SFT trains on some, evaluation holds out the rest).
        train_pairs: rows of the UltraFeedback ``train_prefs`` file.
        test_pairs: rows of the UltraFeedback ``test_prefs`` file (DPO validates on the first, evaluation
            scores the following ones).
        long_prompt_every: every n-th preference prompt is about 220 words, longer than a 128-token
            ``max_prompt_length``.
        vocab_size: BPE vocabulary trained on the files (at most what the text allows; below 32,000).
        seed: seed of the text and of the weights.
    """

    layers: int = 1
    alpaca_rows: int = 96
    train_pairs: int = 64
    test_pairs: int = 32
    long_prompt_every: int = 4
    vocab_size: int = 3000
    seed: int = 0


def _words(rng: random.Random, low: int, high: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))
    return text[0].upper() + text[1:] + "."


def alpaca_rows(rng: random.Random, count: int) -> list[dict]:
    """``vicgalle/alpaca-gpt4`` rows: ``instruction``, ``input`` (empty for about half), ``output``, ``text``."""
    rows = []
    for _ in range(count):
        instruction, output = _words(rng, 5, 20), _words(rng, 10, 90)
        context = _words(rng, 5, 30) if rng.random() < 0.5 else ""
        text = f"{ALPACA_PREAMBLE[bool(context)]}\n\n### Instruction:\n{instruction}\n\n"
        text += f"### Input:\n{context}\n\n" if context else ""
        rows.append(
            {"instruction": instruction, "input": context, "output": output, "text": text + f"### Response:\n{output}"}
        )
    return rows


def ultrafeedback_rows(rng: random.Random, count: int, long_prompt_every: int) -> list[dict]:
    """``HuggingFaceH4/ultrafeedback_binarized`` rows (``train_prefs`` / ``test_prefs`` schema)."""
    rows = []
    for index in range(count):
        long = long_prompt_every > 0 and index % long_prompt_every == 0
        prompt = _words(rng, 200, 240) if long else _words(rng, 5, 40)
        chosen, rejected = _words(rng, 10, 90), _words(rng, 10, 90)
        score_rejected = float(rng.randint(1, 8))
        score_chosen = score_rejected + rng.choice((0.5, 1.0, 2.0, 3.0))

        def conversation(answer: str, prompt: str = prompt) -> list[dict]:
            return [{"content": prompt, "role": "user"}, {"content": answer, "role": "assistant"}]

        rows.append(
            {
                "prompt": prompt,
                "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(),
                "chosen": conversation(chosen),
                "rejected": conversation(rejected),
                "messages": conversation(chosen),
                "score_chosen": score_chosen,
                "score_rejected": score_rejected,
            }
        )
    return rows


def mistral_shaped_config(layers: int) -> MistralConfig:
    """Mistral-7B-v0.1's ``config.json`` with ``layers`` decoder layers."""
    values = json.loads(MISTRAL_CONFIG.read_text())
    values.pop("architectures", None)
    values.pop("torch_dtype", None)
    values["num_hidden_layers"] = layers
    config = MistralConfig(**values)
    config.head_dim = config.hidden_size // config.num_attention_heads  # 128, as in the real model
    return config


def first_per_category(path: Path = STUDY_PROMPTS) -> list[dict]:
    """The first row of each category of the study's prompt file, in file order."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    firsts: dict[str, dict] = {}
    for row in rows:
        firsts.setdefault(row["category"], row)
    return list(firsts.values())


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def build(out: Path, settings: StudyShapedSettings) -> None:
    """Write ``out/data``, ``out/base`` and ``out/judge`` (each folder atomically)."""
    rng = random.Random(settings.seed)
    alpaca = alpaca_rows(rng, settings.alpaca_rows)
    train = ultrafeedback_rows(rng, settings.train_pairs, settings.long_prompt_every)
    test = ultrafeedback_rows(rng, settings.test_pairs, settings.long_prompt_every)
    with atomic_folder(out / "data") as staging:
        (staging / "alpaca_gpt4.jsonl").write_text(_jsonl(alpaca), encoding="utf-8")
        (staging / "ultrafeedback_train_prefs.jsonl").write_text(_jsonl(train), encoding="utf-8")
        (staging / "ultrafeedback_test_prefs.jsonl").write_text(_jsonl(test), encoding="utf-8")
        (staging / "study_prompts_one_per_category.jsonl").write_text(_jsonl(first_per_category()), encoding="utf-8")
    print(
        f"data: {len(alpaca)} Alpaca-GPT4 rows, {len(train)} train_prefs and {len(test)} test_prefs pairs "
        f"-> {out / 'data'}"
    )

    texts = [row["text"] for row in alpaca] + [
        message["content"] for row in train + test for message in row["chosen"] + row["rejected"]
    ]
    tokenizer = train_tokenizer(texts, settings.vocab_size)
    config = mistral_shaped_config(settings.layers)
    tokenizer.add_tokens([f" w{index}" for index in range(len(tokenizer), config.vocab_size)])
    ids = {"unk": tokenizer.unk_token_id, "bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id}
    if ids != {"unk": 0, "bos": 1, "eos": 2} or len(tokenizer) != config.vocab_size or tokenizer.pad_token is not None:
        raise AssertionError(f"the tokenizer does not have Mistral's special ids: {ids}, size {len(tokenizer)}")

    for name, model_class in (("base", MistralForCausalLM), ("judge", MistralForSequenceClassification)):
        torch.manual_seed(settings.seed)
        if name == "judge":
            config.num_labels = 1
        model = model_class(config).to(torch.bfloat16)  # saved in bf16, as the real checkpoint
        parameters = sum(p.numel() for p in model.parameters())
        with atomic_folder(out / name) as staging:
            model.save_pretrained(staging)
            if name == "judge":
                tokenizer.chat_template = JUDGE_CHAT_TEMPLATE
            tokenizer.save_pretrained(staging)
            atomic_write_text(staging / "build_args.json", json.dumps(asdict(settings), indent=2))
        print(
            f"{name}: {model_class.__name__}, Mistral-7B-v0.1 shapes with {settings.layers} decoder layer(s), "
            f"{parameters / 1e6:.0f}M parameters (bf16), tokenizer of {len(tokenizer)} ids -> {out / name}"
        )
        del model
