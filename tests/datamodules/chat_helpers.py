"""A hand-written word-level tokenizer with a small role-aware chat template, and the chats the data tests read
(imported by them, as preference_helpers is by the DPO tests); the ``chat_tokenizer_dir`` fixture (conftest.py)
saves it."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

VOCAB = {
    "<unk>": 0,
    "<s>": 1,
    "</s>": 2,
    "System": 3,
    "User": 4,
    "Assistant": 5,
    ":": 6,
    "Be": 7,
    "brief": 8,
    ".": 9,
    "Hi": 10,
    "Hello": 11,
    "!": 12,
    "Add": 13,
    "two": 14,
    "and": 15,
    "three": 16,
    "five": 17,
    "six": 18,
    "###": 19,
    "Instruction": 20,
    "Response": 21,
}
# Zephyr-like: "<Role>: content", assistant turns end with EOS; the generation prompt is "Assistant:".
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
SYSTEM = {"role": "system", "content": "Be brief."}
FIRST = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
ASK = {"role": "user", "content": "Add two and three"}
CHAT = [SYSTEM, *FIRST, ASK, {"role": "assistant", "content": "five"}]
# "<s>System: Be brief.\nUser: Hi\nAssistant: Hello!</s>\nUser: Add two and three\nAssistant:"
PROMPT_IDS = [1, 3, 6, 7, 8, 9, 4, 6, 10, 5, 6, 11, 12, 2, 4, 6, 13, 14, 15, 16, 5, 6]


def save_chat_tokenizer(folder: Path) -> Path:
    """Save the tokenizer (``VOCAB``, ``CHAT_TEMPLATE``) into ``folder`` with ``save_pretrained``."""
    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<unk>", "<s>", "</s>"])
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return folder
