"""evaluation/generation.py: left padding, and batched generation equal to one prompt at a time."""

from __future__ import annotations

from datamodules.tokenizer import load_tokenizer
from evaluation.config import GenerationSettings
from evaluation.generation import generate_responses, left_pad
from evaluation.variants import VariantLoadSettings, load_variant, resolve_sources


def test_left_pad_puts_padding_before_the_prompt():
    input_ids, attention_mask = left_pad([[5, 6, 7], [8]], pad_token_id=0)
    assert input_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_batched_left_padded_generation_equals_one_prompt_at_a_time(tiny_sft_export, eval_prompts):
    tokenizer = load_tokenizer(str(tiny_sft_export))
    model = load_variant("sft", resolve_sources(str(tiny_sft_export), None), VariantLoadSettings(dtype="float32"))
    prompts = [row.get("prompt", row.get("instruction")) for row in eval_prompts]
    inputs = [row.get("input", "") for row in eval_prompts]
    settings = GenerationSettings(max_new_tokens=8, batch_size=len(prompts))
    batched = generate_responses(model, tokenizer, prompts, settings, inputs=inputs)
    alone = [
        generate_responses(model, tokenizer, [p], GenerationSettings(max_new_tokens=8), inputs=[i])[0]
        for p, i in zip(prompts, inputs, strict=True)
    ]
    assert [g.text for g in batched] == [g.text for g in alone]
    assert [g.response_tokens for g in batched] == [g.response_tokens for g in alone]
    assert all(0 <= g.response_tokens <= 8 and g.prompt_tokens > 10 for g in batched)
