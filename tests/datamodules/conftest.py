"""The data tests' chat tokenizer (chat_helpers.py) and a tiny reward model on it, built once per session."""

from __future__ import annotations

import pytest
from chat_helpers import save_chat_tokenizer


@pytest.fixture(scope="session")
def chat_tokenizer_dir(tmp_path_factory):
    return save_chat_tokenizer(tmp_path_factory.mktemp("chat-tokenizer"))


@pytest.fixture(scope="session")
def chat_tokenizer(chat_tokenizer_dir):
    from datamodules.tokenizer import load_tokenizer

    return load_tokenizer(str(chat_tokenizer_dir))


@pytest.fixture(scope="session")
def chat_reward_model_dir(chat_tokenizer_dir, tmp_path_factory):
    """A randomly initialised 1-layer Mistral sequence classifier on the chat tokenizer's vocabulary, saved with
    ``save_pretrained`` beside that tokenizer: what ``RewardModule`` loads."""
    import torch
    from transformers import AutoTokenizer, MistralConfig, MistralForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128, num_labels=1,
    )  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("chat-reward")
    MistralForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
