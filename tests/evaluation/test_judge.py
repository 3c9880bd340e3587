"""The reward-model judge on a locally built tiny sequence classifier (no Hub)."""

from __future__ import annotations

import functools

import pytest
import torch
from transformers import AutoConfig, AutoTokenizer, MistralForSequenceClassification

from datamodules.templates import encode_prompt, encode_response, format_prompt
from evaluation.judge import (
    JudgeSettings,
    fit_to_length,
    judge_variants,
    load_judge,
    open_judge,
    score_responses,
)
from lightning_modules.loading import ModelLoadError

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
PROMPTS = ["What is 2 + 3?", "Name a colour.", "Write a short poem about the sea and the wind.", "Hi", "Sort: 3 1 2"]
RESPONSES = ["5", "Blue is a colour, and so is red.", "Waves roll on,\nthe wind sings.", "Hello there!", "1 2 3"]


def save_classifier(tiny_model_dir, folder, num_labels: int = 1, chat_template: str | None = None):
    """A randomly initialised Mistral sequence classifier on the tiny tokenizer, saved like a Hub model."""
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.num_labels = num_labels
    torch.manual_seed(0)
    model = MistralForSequenceClassification(config)
    torch.nn.init.normal_(model.score.weight, std=1.0)  # rewards of order 1, far apart
    model.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def reward_dir(tiny_model_dir, tmp_path_factory):
    return save_classifier(tiny_model_dir, tmp_path_factory.mktemp("judge") / "reward")


@pytest.fixture(scope="module")
def chat_reward_dir(tiny_model_dir, tmp_path_factory):
    return save_classifier(tiny_model_dir, tmp_path_factory.mktemp("judge") / "chat", chat_template=CHAT_TEMPLATE)


@functools.cache
def reference_model(folder) -> MistralForSequenceClassification:
    """The saved classifier loaded plainly, outside the judge."""
    return MistralForSequenceClassification.from_pretrained(folder).eval()


def single_forward(folder, ids: list[int]) -> float:
    """The reward of one unpadded row: the checkpoint declares no pad id, so transformers reads position -1."""
    model = reference_model(folder)
    assert model.config.pad_token_id is None
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, 0].item()


def test_batched_rewards_equal_each_row_scored_alone_in_input_order(reward_dir):
    settings = JudgeSettings(model=str(reward_dir), template="study", batch_size=3, dtype="float32")
    judge = load_judge(settings, "cpu")
    scores = score_responses(judge, PROMPTS, RESPONSES, study_template="alpaca")

    tokenizer = AutoTokenizer.from_pretrained(reward_dir)
    expected = []
    for prompt, response in zip(PROMPTS, RESPONSES, strict=True):
        # exactly as SFT / DPO tokenize: Alpaca prompt with BOS, then the response and EOS
        ids = encode_prompt(tokenizer, format_prompt(prompt), "alpaca") + encode_response(tokenizer, response)
        expected.append(single_forward(reward_dir, ids))
    lengths = {len(encode_response(tokenizer, r)) for r in RESPONSES}
    assert len(lengths) > 1  # the batch really mixes lengths, so right padding is exercised
    torch.testing.assert_close(torch.tensor(scores), torch.tensor(expected), rtol=1e-5, atol=1e-5)
    assert len(set(round(s, 4) for s in scores)) == len(scores)  # distinct, so the order check below means something

    reversed_scores = score_responses(judge, PROMPTS[::-1], RESPONSES[::-1])
    torch.testing.assert_close(torch.tensor(reversed_scores), torch.tensor(scores[::-1]), rtol=1e-5, atol=1e-5)
    assert judge.truncated == {"scored": 10, "prompt": 0, "response": 0}
    assert judge.pad_token_id == tokenizer.bos_token_id  # declared by load_judge: the checkpoint has none


def test_own_template_is_the_judge_chat_with_one_bos(chat_reward_dir):
    settings = JudgeSettings(model=str(chat_reward_dir), template="own", batch_size=2, dtype="float32")
    with open_judge(settings, "cpu") as judge:
        scores = score_responses(judge, PROMPTS[:3], RESPONSES[:3])
    tokenizer = AutoTokenizer.from_pretrained(chat_reward_dir)
    for prompt, response, score in zip(PROMPTS[:3], RESPONSES[:3], scores, strict=True):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False
        )
        assert text.startswith("<s><|user|>\n")
        ids = tokenizer(text[len("<s>") :])["input_ids"]  # the template's BOS text dropped, the tokenizer's kept
        assert ids.count(tokenizer.bos_token_id) == 1
        assert score == pytest.approx(single_forward(chat_reward_dir, ids), abs=1e-5)


def test_released_judge_and_judge_variants(reward_dir):
    settings = JudgeSettings(model=str(reward_dir), template="study", dtype="float32")
    with open_judge(settings, "cpu") as judge:
        alone = score_responses(judge, PROMPTS, RESPONSES)
    assert judge.model is None
    with pytest.raises(ValueError, match="released"):
        score_responses(judge, PROMPTS, RESPONSES)

    result = judge_variants(settings, "cpu", PROMPTS, {"sft": RESPONSES, "base": RESPONSES[::-1]})
    assert set(result) == {"model", "template", "dtype", "scores", "truncated"}
    assert result["model"]["path"] == str(reward_dir) and len(result["model"]["sha256"]) == 64
    assert result["scores"]["sft"] == pytest.approx(alone, abs=1e-6)
    assert result["truncated"] == {"scored": 10, "prompt": 0, "response": 0}


def test_bfloat16_judge_keeps_its_score_head_in_float32(reward_dir):
    full = load_judge(JudgeSettings(model=str(reward_dir), template="study", dtype="float32"))
    half = load_judge(JudgeSettings(model=str(reward_dir), template="study", dtype="bfloat16"))
    assert half.model.score.weight.dtype == torch.float32
    assert half.model.model.embed_tokens.weight.dtype == torch.bfloat16
    torch.testing.assert_close(
        torch.tensor(score_responses(half, PROMPTS, RESPONSES)),
        torch.tensor(score_responses(full, PROMPTS, RESPONSES)),
        rtol=0.0,
        atol=0.1,
    )


def test_fit_to_length_cuts_the_prompt_start_and_keeps_bos():
    prompt, response = [1, 10, 11, 12], [20, 21, 2]  # BOS = 1, EOS = 2
    assert fit_to_length(prompt, response, 7, 1) == ([1, 10, 11, 12, 20, 21, 2], None)
    # 5 tokens: room for 2 prompt tokens -> BOS + the prompt's last token, then the whole response
    assert fit_to_length(prompt, response, 5, 1) == ([1, 12, 20, 21, 2], "prompt")
    # 4 tokens: room for BOS only
    assert fit_to_length(prompt, response, 4, 1) == ([1, 20, 21, 2], "prompt")
    # 3 tokens: the response alone does not fit beside BOS -> it loses its end
    assert fit_to_length(prompt, response, 3, 1) == ([1, 20, 21], "response")
    # no BOS: the prompt's start goes
    assert fit_to_length([10, 11], [20], 2, 1) == ([11, 20], "prompt")


def test_truncations_are_counted(reward_dir):
    judge = load_judge(JudgeSettings(model=str(reward_dir), template="study", max_length=24, dtype="float32"))
    score_responses(judge, PROMPTS, RESPONSES)  # every Alpaca prompt is longer than 24 tokens
    assert judge.truncated == {"scored": 5, "prompt": 5, "response": 0}


def test_clear_errors_name_the_config_key(tiny_model_dir, reward_dir, tmp_path):
    with pytest.raises(ModelLoadError, match=r"judge\.model: .*chat template"):
        load_judge(JudgeSettings(model=str(reward_dir), template="own"))
    with pytest.raises(ModelLoadError, match=r"judge\.model: .*MistralForCausalLM, not a sequence classifier"):
        load_judge(JudgeSettings(model=str(tiny_model_dir), template="study"))
    two_labels = save_classifier(tiny_model_dir, tmp_path / "two", num_labels=2)
    with pytest.raises(ModelLoadError, match=r"judge\.model: .*has 2 outputs, not one"):
        load_judge(JudgeSettings(model=str(two_labels), template="study"))
    with pytest.raises(ModelLoadError, match=r"judge\.model: .*not a model folder"):
        load_judge(JudgeSettings(model=str(tmp_path / "missing"), template="study"))
    with pytest.raises(ValueError, match="judge.template"):
        JudgeSettings(model="x", template="alpaca")
    with pytest.raises(ValueError, match="judge.dtype"):
        JudgeSettings(model="x", dtype="fp8")
