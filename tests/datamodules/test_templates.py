"""The one prompt format: exact Alpaca text, the chat template, BOS once, EOS kept as a label.

Token ids are checked against a hand-written word-level vocabulary, so every expected id below can
be read off the table ``VOCAB``.
"""

from __future__ import annotations

import copy

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from common.constants import IGNORE_INDEX
from datamodules.collate import SFTCollator
from datamodules.instruction import tokenize_instruction
from datamodules.templates import encode_prompt, encode_response, format_prompt

VOCAB = {
    "<unk>": 0, "<s>": 1, "</s>": 2,
    "Below": 3, "is": 4, "an": 5, "instruction": 6, "that": 7, "describes": 8, "a": 9, "task": 10,
    ".": 11, "Write": 12, "response": 13, "appropriately": 14, "completes": 15, "the": 16,
    "request": 17, "###": 18, "Instruction": 19, ":": 20, "Response": 21, ",": 22, "paired": 23,
    "with": 24, "input": 25, "provides": 26, "further": 27, "context": 28, "Input": 29,
    "User": 30, "Assistant": 31, "Add": 32, "two": 33, "and": 34, "three": 35, "five": 36,
    "numbers": 37,
}
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}User: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
# The Alpaca preamble without input, as ids: "Below is an instruction that describes a task ."
PREAMBLE = [3, 4, 5, 6, 7, 8, 9, 10, 11]
# "Write a response that appropriately completes the request ."
WRITE = [12, 9, 13, 7, 14, 15, 16, 17, 11]


@pytest.fixture()
def word_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer that, like Mistral's, prepends BOS and has no pad token of its own."""
    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<unk>", "<s>", "</s>"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture()
def chat_tokenizer(word_tokenizer) -> PreTrainedTokenizerFast:
    """A copy with a chat template whose rendered text already starts with the BOS token."""
    tokenizer = copy.deepcopy(word_tokenizer)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def test_alpaca_prompt_without_input_is_the_exact_stanford_text():
    expected = (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nAdd two and three\n\n### Response:\n"
    )
    assert format_prompt("Add two and three") == expected
    # Whitespace-only input means no input block, as in the Alpaca data where input is "".
    assert format_prompt("Add two and three", "  \n") == expected


def test_alpaca_prompt_with_input_is_the_exact_stanford_text():
    expected = (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nAdd the numbers\n\n### Input:\ntwo and three\n\n### Response:\n"
    )
    assert format_prompt("Add the numbers", "two and three") == expected


def test_alpaca_prompt_ids_start_with_one_bos(word_tokenizer):
    prompt = format_prompt("Add two and three")
    assert encode_prompt(word_tokenizer, prompt) == (
        [1]  # BOS, added once by the tokenizer
        + PREAMBLE
        + WRITE
        + [18, 19, 20, 32, 33, 34, 35]  # ### Instruction : Add two and three
        + [18, 21, 20]  # ### Response :
    )
    prompt = format_prompt("Add the numbers", "two and three")
    assert encode_prompt(word_tokenizer, prompt) == (
        [1]
        + [3, 4, 5, 6, 7, 8, 9, 10, 22]  # Below is an instruction that describes a task ,
        + [23, 24, 5, 25, 7, 26, 27, 28, 11]  # paired with an input that provides further context .
        + WRITE
        + [18, 19, 20, 32, 16, 37]  # ### Instruction : Add the numbers
        + [18, 29, 20, 33, 34, 35]  # ### Input : two and three
        + [18, 21, 20]  # ### Response :
    )


def test_chat_template_without_one_on_the_tokenizer_raises_a_clear_error(word_tokenizer):
    with pytest.raises(ValueError, match="chat template.*use template='alpaca'"):
        format_prompt("Add two and three", template="chat", tokenizer=word_tokenizer)
    with pytest.raises(ValueError, match="chat template"):
        format_prompt("Add two and three", template="chat")


def test_chat_template_renders_the_tokenizers_template(chat_tokenizer):
    assert format_prompt("Add two and three", template="chat", tokenizer=chat_tokenizer) == (
        "<s>User: Add two and three\nAssistant:"
    )
    # An input is appended to the user turn after a blank line.
    assert format_prompt("Add the numbers", "two and three", template="chat", tokenizer=chat_tokenizer) == (
        "<s>User: Add the numbers\n\ntwo and three\nAssistant:"
    )


def test_chat_prompt_ids_do_not_double_the_bos(chat_tokenizer):
    prompt = format_prompt("Add two and three", template="chat", tokenizer=chat_tokenizer)
    # The hazard is real: tokenising the rendered text with special tokens gives BOS twice.
    assert chat_tokenizer(prompt)["input_ids"][:2] == [1, 1]
    assert encode_prompt(chat_tokenizer, prompt, "chat") == [
        1,  # BOS from the template text, once
        30, 20, 32, 33, 34, 35,  # User : Add two and three
        31, 20,  # Assistant :
    ]


def test_encode_response_ends_with_eos(word_tokenizer):
    assert encode_response(word_tokenizer, "five") == [36, 2]  # five </s>; no BOS before a response
    assert encode_response(word_tokenizer, "two and three") == [33, 34, 35, 2]


def test_tokenize_instruction_masks_prompt_and_keeps_eos_label_when_pad_is_eos(word_tokenizer):
    word_tokenizer.pad_token = word_tokenizer.eos_token  # what load_tokenizer does for Mistral
    assert word_tokenizer.pad_token_id == word_tokenizer.eos_token_id == 2
    example = {"instruction": "Add two and three", "input": "", "output": "five", "_row": 7, "_source": "x.jsonl"}
    prompt_ids = [1] + PREAMBLE + WRITE + [18, 19, 20, 32, 33, 34, 35] + [18, 21, 20]
    out = tokenize_instruction(example, word_tokenizer, "alpaca", max_length=64)
    assert out["input_ids"] == prompt_ids + [36, 2]  # ... five </s>
    assert out["labels"] == [IGNORE_INDEX] * len(prompt_ids) + [36, 2]  # loss on "five" and on EOS
    assert out["length"] == len(prompt_ids) + 2
    assert (out["row"], out["source"]) == (7, "x.jsonl")
    # One token of room: the response is cut from the end, so the EOS goes first.
    cut = tokenize_instruction(example, word_tokenizer, "alpaca", max_length=len(prompt_ids) + 1)
    assert cut["labels"] == [IGNORE_INDEX] * len(prompt_ids) + [36]
    # No room for any response token: an empty row the DataModule counts as too long.
    assert tokenize_instruction(example, word_tokenizer, "alpaca", max_length=len(prompt_ids))["length"] == 0


def test_tiny_tokenizer_eos_label_survives_tokenisation_and_padding(tiny_tokenizer):
    """The tiny base, like Mistral, pads with EOS; the response's EOS must still carry loss."""
    eos = tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.pad_token_id == eos
    short = {"instruction": "Say hi.", "input": "", "output": "Hi.", "_row": 1, "_source": "a"}
    long = {"instruction": "Say hello twice.", "input": "", "output": "Hello, hello.", "_row": 2, "_source": "a"}
    rows = [tokenize_instruction(ex, tiny_tokenizer, "alpaca", 256) for ex in (short, long)]
    for row in rows:
        assert row["input_ids"][0] == tiny_tokenizer.bos_token_id
        assert row["input_ids"].count(tiny_tokenizer.bos_token_id) == 1
        assert row["input_ids"][-1] == row["labels"][-1] == eos
    batch = SFTCollator(tiny_tokenizer.pad_token_id, pack=False)(rows)
    n_short = rows[0]["length"]
    assert n_short < rows[1]["length"]
    assert batch["labels"][0, n_short - 1].item() == eos  # the real EOS is a label
    assert (batch["labels"][0, n_short:] == IGNORE_INDEX).all()  # the EOS used as padding is not
    assert (batch["input_ids"][0, n_short:] == eos).all()
