"""The study dry run's stand-ins: Mistral-7B-v0.1's exact shapes and special ids, and data in the real schemas.

Building the 480M-parameter weights is left to the slow dry-run test (tests/integration/test_study_dryrun.py);
these check what the weights are built from, and that the real parsers read the files.
"""

from __future__ import annotations

import hashlib
import json
import random

from datamodules.instruction import parse_instruction_row
from datamodules.preference import parse_preference_row, tokenize_preference
from datamodules.templates import encode_response
from tiny_world.base import train_tokenizer
from tiny_world.study_shaped import MISTRAL_CONFIG, alpaca_rows, mistral_shaped_config, ultrafeedback_rows

ALPACA_COLUMNS = {"instruction", "input", "output", "text"}
ULTRAFEEDBACK_COLUMNS = {"prompt", "prompt_id", "chosen", "rejected", "messages", "score_chosen", "score_rejected"}


def test_the_config_is_mistral_7b_but_for_the_number_of_layers():
    real = json.loads(MISTRAL_CONFIG.read_text())
    config = mistral_shaped_config(2)
    assert config.num_hidden_layers == 2
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "vocab_size",
                "sliding_window", "rms_norm_eps", "max_position_embeddings", "bos_token_id", "eos_token_id",
                "tie_word_embeddings"):  # fmt: skip
        assert getattr(config, key) == real[key], key
    assert config.head_dim == 128 and config.hidden_size == 4096 and config.num_key_value_heads == 8
    assert config.rope_parameters["rope_theta"] == real["rope_theta"] == 10000.0
    assert config.pad_token_id is None


def test_alpaca_rows_have_every_column_and_parse():
    rows = alpaca_rows(random.Random(0), 20)
    assert all(set(row) == ALPACA_COLUMNS for row in rows)
    assert any(row["input"] for row in rows) and any(not row["input"] for row in rows)
    for row in rows:
        assert row["text"].endswith(f"### Response:\n{row['output']}") and row["instruction"] in row["text"]
        parsed = parse_instruction_row(row)
        assert {key: parsed[key] for key in ("instruction", "input", "output")} == {
            key: row[key] for key in ("instruction", "input", "output")
        }


def test_ultrafeedback_rows_have_every_column_and_parse_with_long_prompts():
    rows = ultrafeedback_rows(random.Random(0), 12, long_prompt_every=4)
    for row in rows:
        assert set(row) == ULTRAFEEDBACK_COLUMNS
        assert row["prompt_id"] == hashlib.sha256(row["prompt"].encode()).hexdigest()
        assert row["messages"] == row["chosen"] and row["score_chosen"] > row["score_rejected"]
        assert [m["role"] for m in row["chosen"]] == [m["role"] for m in row["rejected"]] == ["user", "assistant"]
        assert row["chosen"][0]["content"] == row["rejected"][0]["content"] == row["prompt"]
        assert parse_preference_row(row)["prompt"] == row["prompt"]
    assert [len(row["prompt"].split()) >= 200 for row in rows] == [i % 4 == 0 for i in range(12)]


def test_the_tokenizer_has_mistrals_special_ids_and_long_prompts_are_cut_and_counted():
    rows = ultrafeedback_rows(random.Random(1), 8, long_prompt_every=4)
    tokenizer = train_tokenizer([m["content"] for row in rows for m in row["chosen"] + row["rejected"]], 3000)
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.pad_token is None and len(tokenizer) < 32000
    tokenizer.pad_token = tokenizer.eos_token  # as datamodules.tokenizer.load_tokenizer does
    cut = []
    for number, row in enumerate(rows, start=1):
        example = parse_preference_row(row) | {"_row": number, "_source": "test"}
        tokens = tokenize_preference(example, tokenizer, "alpaca", max_length=256, max_prompt_length=128)
        assert len(tokens["prompt_ids"]) <= 128 and tokens["prompt_ids"][0] == 1
        cut.append(tokens["prompt_cut"])
    assert cut == [1, 0, 0, 0, 1, 0, 0, 0]
    # a response longer than the room max_length leaves after the prompt is cut to fit, and flagged
    flagged = []
    for number, row in enumerate(rows, start=1):
        example = parse_preference_row(row) | {"_row": number, "_source": "test"}
        tokens = tokenize_preference(example, tokenizer, "alpaca", max_length=96, max_prompt_length=32)
        room = 96 - len(tokens["prompt_ids"])
        longest = max(len(encode_response(tokenizer, example[key])) for key in ("chosen", "rejected"))
        assert tokens["response_cut"] == int(longest > room)
        assert max(len(tokens["chosen_ids"]), len(tokens["rejected_ids"])) == min(longest, room)
        flagged.append(tokens["response_cut"])
    assert 0 < sum(flagged) < len(flagged)  # both kinds occur in these rows
