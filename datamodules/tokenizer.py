"""Loading the tokenizer the data is encoded with: the model's own, by Hub id or local path."""

from __future__ import annotations

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from common.errors import ModelLoadError


def load_tokenizer(
    name_or_path: str, trust_remote_code: bool = False, revision: str | None = None
) -> PreTrainedTokenizerBase:
    """Load a tokenizer (at ``revision`` for a Hub id); give it a pad token (EOS, as Mistral has none) when it
    lacks one."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, revision=revision)
    except Exception as error:
        raise ModelLoadError(
            f"{name_or_path}: no tokenizer could be loaded ({type(error).__name__}: {error})"
        ) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
