"""The one prompt format shared by SFT, DPO and evaluation.

SFT teaches the model a prompt format; DPO must train on exactly that format and evaluation must
ask in it, or each stage measures something else. So every stage builds its token ids through
:func:`encode_prompt` and :func:`encode_response` and nothing else.
"""

from __future__ import annotations

from typing import Literal

from transformers import PreTrainedTokenizerBase

TemplateName = Literal["alpaca", "chat"]

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
ALPACA_PREAMBLE_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request."
)
ALPACA_BODY = "### Instruction:\n{instruction}\n\n### Response:\n"
ALPACA_BODY_WITH_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
ALPACA_WITH_INPUT = f"{ALPACA_PREAMBLE_WITH_INPUT}\n\n{ALPACA_BODY_WITH_INPUT}"
ALPACA_NO_INPUT = f"{ALPACA_PREAMBLE}\n\n{ALPACA_BODY}"
MULTI_TURN_NEEDS_CHAT = (
    "a conversation with several user/assistant exchanges needs template: chat and a tokenizer with a chat "
    "template; the Alpaca template holds one instruction"
)


def format_prompt(
    instruction: str,
    input: str = "",
    *,
    template: TemplateName = "alpaca",
    tokenizer: PreTrainedTokenizerBase | None = None,
    system: str | None = None,
    history: list[dict[str, str]] | tuple = (),
) -> str:
    """Render one instruction (and optional input) as the text the model continues.

    Args:
        instruction: the task, e.g. an Alpaca ``instruction`` or the final user turn of a chat.
        input: optional context (Alpaca's ``input`` field); empty means none.
        template: ``alpaca`` (the Stanford Alpaca template, with or without the input block) or
            ``chat`` (the tokenizer's own chat template, with the generation prompt appended).
        tokenizer: needed for ``chat``.
        system: a system turn. With ``chat`` it is the first message; with ``alpaca`` it replaces the
            template's opening sentence ("Below is an instruction that describes a task..."), which plays
            the same part, and the ``### Instruction:`` block follows it.
        history: earlier ``{role, content}`` user / assistant turns before ``instruction`` (``chat`` only).

    Returns:
        The prompt text; the response follows it directly.

    Raises:
        ValueError: an unknown template, ``chat`` without a chat template, or ``history`` with ``alpaca``.
    """
    if template == "alpaca":
        if history:
            raise ValueError(f"{MULTI_TURN_NEEDS_CHAT}.")
        if input.strip():
            preamble = ALPACA_PREAMBLE_WITH_INPUT if system is None else system
            return f"{preamble}\n\n" + ALPACA_BODY_WITH_INPUT.format(instruction=instruction, input=input)
        preamble = ALPACA_PREAMBLE if system is None else system
        return f"{preamble}\n\n" + ALPACA_BODY.format(instruction=instruction)
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "template='chat' needs a tokenizer with a chat template; this tokenizer has none "
                "(base models such as Mistral-7B-v0.1 ship without one): use template='alpaca'."
            )
        content = f"{instruction}\n\n{input}" if input.strip() else instruction
        messages = [{"role": "system", "content": system}] if system is not None else []
        messages += [*history, {"role": "user", "content": content}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
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
