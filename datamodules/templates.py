"""The one prompt format shared by SFT, DPO and evaluation.

SFT teaches the model a prompt format; DPO must train on exactly that format and evaluation must
ask in it, or each stage measures something else. So every stage builds its token ids through
:func:`encode_prompt` and :func:`encode_response` and nothing else.
"""

from __future__ import annotations

from typing import Literal

from transformers import PreTrainedTokenizerBase

TemplateName = Literal["alpaca", "chat"]

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


def format_prompt(
    instruction: str,
    input: str = "",
    *,
    template: TemplateName = "alpaca",
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> str:
    """Render one instruction (and optional input) as the text the model continues.

    Args:
        instruction: the task, e.g. an Alpaca ``instruction`` or the user turn of a chat.
        input: optional context (Alpaca's ``input`` field); empty means none.
        template: ``alpaca`` (the Stanford Alpaca template, with or without the input block) or
            ``chat`` (the tokenizer's own chat template, with the generation prompt appended).
        tokenizer: needed for ``chat``.

    Returns:
        The prompt text; the response follows it directly.
    """
    if template == "alpaca":
        if input.strip():
            return ALPACA_WITH_INPUT.format(instruction=instruction, input=input)
        return ALPACA_NO_INPUT.format(instruction=instruction)
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "template='chat' needs a tokenizer with a chat template; this tokenizer has none "
                "(base models such as Mistral-7B-v0.1 ship without one): use template='alpaca'."
            )
        content = f"{instruction}\n\n{input}" if input.strip() else instruction
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    raise ValueError(f"Unknown prompt template {template!r}; choose 'alpaca' or 'chat'.")


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, template: TemplateName = "alpaca") -> list[int]:
    """Token ids of a formatted prompt, with BOS exactly once.

    The Alpaca text gets the tokenizer's special tokens (BOS for Mistral); a rendered chat template
    already contains them as text, so adding them again would double the BOS.
    """
    return tokenizer(prompt, add_special_tokens=template == "alpaca")["input_ids"]


def encode_response(tokenizer: PreTrainedTokenizerBase, response: str) -> list[int]:
    """Token ids of a response followed by EOS, so the model learns to stop.

    The response is tokenized apart from its prompt so that the prompt/response boundary, and hence
    the loss mask, is exact.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("The tokenizer has no EOS token; responses must end with one so the model learns to stop.")
    return tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
