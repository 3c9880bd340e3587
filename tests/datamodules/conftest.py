"""The data tests' chat tokenizer (chat_helpers.py), built once per session."""

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
