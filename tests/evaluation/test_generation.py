"""evaluation/generation.py: left padding, and batched generation equal to one prompt at a time."""

from __future__ import annotations

import torch

from datamodules.tokenizer import load_tokenizer
from evaluation.config import GenerationSettings
from evaluation.generation import contiguous_head_input, generate_responses, left_pad
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


def test_the_frozen_lm_head_sees_only_contiguous_inputs_while_generating(tiny_sft_export, eval_prompts):
    """A strided input to a frozen linear layer is ~1000x slower on the CPU in bf16 (contiguous_head_input)."""
    tokenizer = load_tokenizer(str(tiny_sft_export))
    model = load_variant("sft", resolve_sources(str(tiny_sft_export), None), VariantLoadSettings(dtype="float32"))
    head = model.get_output_embeddings()
    assert not head.weight.requires_grad  # the case that is slow
    seen = []
    # a forward hook sees the input the layer computed with (after every pre-hook)
    probe = head.register_forward_hook(lambda module, args, output: seen.append(args[0].is_contiguous()))
    prompts = [row.get("prompt", row.get("instruction")) for row in eval_prompts[:4]]
    generate_responses(model, tokenizer, prompts, GenerationSettings(max_new_tokens=3, batch_size=4))
    assert seen and all(seen)
    # without it, generate hands the head a strided view of the prefill's last position
    seen.clear()
    with torch.inference_mode():
        batch = tokenizer(prompts, return_tensors="pt", padding=True)
        model.generate(**batch, max_new_tokens=1, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert seen[0] is False
    with contiguous_head_input(model), torch.inference_mode():
        seen.clear()
        model.generate(**batch, max_new_tokens=1, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert seen[0] is True
    probe.remove()
