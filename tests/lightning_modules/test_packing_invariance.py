"""What the speed-ups must not change: packed batches give the same per-row losses and log-probs as padded
ones (fp32, 1e-5), the per-example attention equals transformers' own masked ``sdpa``, and gradient checkpointing
gives the plain gradients (1e-6)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close
from transformers import MistralConfig, MistralForCausalLM

from common.errors import ConfigError
from common.settings import LoadSettings, LoraSettings, LossTerm
from datamodules import InstructionDataModule, PreferenceDataModule
from datamodules.collate import PreferenceCollator, SFTCollator
from lightning_modules.causal_lm import ResponseOutputs
from lightning_modules.dpo import DPOModule
from lightning_modules.losses import token_logps
from lightning_modules.packed_attention import PACKED_SDPA, use_packed_sdpa
from lightning_modules.sft import SFTModule

ROWS = 6


def per_row_nll(out: ResponseOutputs) -> torch.Tensor:
    """``(rows,)`` summed response NLL of every example."""
    nll = -token_logps(out.logits, out.targets)  # (N,)
    return nll.new_zeros(out.num_rows).index_add(0, out.row_index, nll)


def test_sft_packed_and_padded_give_the_same_per_row_nll(tiny_model_dir, repo):
    module = SFTModule(str(tiny_model_dir), lora=None).eval()
    data = InstructionDataModule(
        str(tiny_model_dir), train_files=str(repo / "data/tiny/sft_train.jsonl"), val_fraction=0.0, max_length=256
    )
    data.setup("fit")
    # Rows of clearly different lengths, so padding and packing differ.
    rows = sorted((data.train_dataset[i] for i in range(40)), key=lambda r: r["length"])[:: 40 // ROWS][:ROWS]
    assert len({r["length"] for r in rows}) > 1
    out = {}
    for pack in (False, True):
        batch = SFTCollator(data.tokenizer.pad_token_id, pack=pack)(rows)
        with torch.no_grad():
            out[pack] = module.response_forward(module.model, batch)
    assert module.model.config._attn_implementation == PACKED_SDPA
    assert_close(out[True].row_index, out[False].row_index)
    assert_close(per_row_nll(out[True]), per_row_nll(out[False]), atol=1e-5, rtol=0)


def test_the_packed_sdpa_lever_off_keeps_stock_sdpa_and_the_same_losses(tiny_model_dir, repo):
    """``packed_sdpa: false`` (the benchmark's baseline): transformers' sdpa with its block-diagonal mask."""
    data = InstructionDataModule(
        str(tiny_model_dir), train_files=str(repo / "data/tiny/sft_train.jsonl"), val_fraction=0.0, max_length=256
    )
    data.setup("fit")
    rows = [data.train_dataset[i] for i in range(ROWS)]
    batch = SFTCollator(data.tokenizer.pad_token_id, pack=True)(rows)
    out = {}
    for kernel in (True, False):
        module = SFTModule(str(tiny_model_dir), lora=None, packed_sdpa=kernel).eval()
        with torch.no_grad():
            out[kernel] = module.response_forward(module.model, batch)
        assert module.model.config._attn_implementation == (PACKED_SDPA if kernel else "sdpa")
    assert_close(per_row_nll(out[True]), per_row_nll(out[False]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("lora", [None, LoraSettings(r=8, alpha=16, dropout=0.0)], ids=["full", "lora"])
def test_gradient_checkpointing_gives_the_plain_gradients(lora, tiny_model_dir, repo):
    """Checkpointing recomputes the decoder layers in the backward pass (through the packed kernel), every layer but
    the last by default, all of them with ``checkpoint_last_layer``: the same loss and the same gradient of every
    trained weight, fp32, within 1e-6."""
    data = InstructionDataModule(
        str(tiny_model_dir), train_files=str(repo / "data/tiny/sft_train.jsonl"), val_fraction=0.0, max_length=256
    )
    data.setup("fit")
    batch = SFTCollator(data.tokenizer.pad_token_id, pack=True)([data.train_dataset[i] for i in range(ROWS)])
    settings = {"plain": {}, "default": {"gradient_checkpointing": True}}
    settings["every layer"] = {"gradient_checkpointing": True, "checkpoint_last_layer": True}
    losses, grads, layer_calls = {}, {}, {}
    for name, options in settings.items():
        torch.manual_seed(0)  # the same LoRA initialisation
        module = SFTModule(str(tiny_model_dir), lora=lora, **options).train()
        layers = module.model.get_base_model().model.layers if lora else module.model.model.layers
        calls = {"first": [], "last": []}
        # A pre-hook: torch's non-reentrant checkpoint stops the recomputation as soon as it has the tensors the
        # backward needs, so the MLP's forward-end hook does not fire again.
        for which, layer in (("first", layers[0]), ("last", layers[-1])):
            layer.mlp.register_forward_pre_hook(lambda *args, calls=calls[which]: calls.append(1))
        loss, _ = module._loss(batch)
        loss.backward()
        losses[name], layer_calls[name] = loss.detach(), (len(calls["first"]), len(calls["last"]))
        grads[name] = {key: p.grad for key, p in module.named_parameters() if p.requires_grad}
    assert len(layers) == 2
    # Not vacuous: with checkpointing a layer runs again in the backward pass; the last one only when asked.
    assert layer_calls == {"plain": (1, 1), "default": (2, 1), "every layer": (2, 2)}
    for name in ("default", "every layer"):
        assert_close(losses[name], losses["plain"], atol=1e-6, rtol=0)
        assert grads[name].keys() == grads["plain"].keys() and len(grads["plain"]) > 0
        for key, expected in grads["plain"].items():
            assert_close(grads[name][key], expected, atol=1e-6, rtol=1e-5, msg=f"{name}: {key}")


def test_checkpoint_last_layer_without_checkpointing_is_refused_before_the_model_loads(tmp_path):
    with pytest.raises(ConfigError, match="gradient_checkpointing: true"):
        SFTModule(str(tmp_path / "no-model-here"), checkpoint_last_layer=True)
    with pytest.raises(ConfigError, match="gradient_checkpointing: true"):
        DPOModule(str(tmp_path / "no-model-here"), checkpoint_last_layer=True)


@pytest.mark.parametrize("lora", [None, LoraSettings(r=8, alpha=16, dropout=0.0)], ids=["full", "lora"])
def test_dpo_sequence_stats_packed_equal_padded(lora, tiny_sft_export, repo, tmp_path):
    reference = "adapter" if lora else "separate"
    losses = [LossTerm("sigmoid", ld_alpha=0.5, wpo=True)]  # so the policy's LD-DPO tails and WPO weights, too
    module = DPOModule(
        str(tiny_sft_export), lora=lora, reference=reference, merge_sft_adapter=True, losses=losses
    ).eval()
    data = PreferenceDataModule(
        str(tiny_sft_export),
        train_files=str(repo / "data/tiny/prefs_train.jsonl"),
        max_length=128,
        max_prompt_length=64,
        cache_dir=str(tmp_path / "cache"),
    )
    data.setup("fit")
    pairs = [data.train_dataset[i] for i in range(ROWS)]
    stats = {}
    for pack in (False, True):
        batch = PreferenceCollator(data.tokenizer.pad_token_id, pack=pack)(pairs)
        with torch.no_grad():
            stats[pack] = (module.sequence_stats(module.model, batch, policy=True), module.reference_logps(batch))
    packed, padded = stats[True][0], stats[False][0]
    assert packed.logps.shape == (2 * ROWS,)  # chosen rows, then rejected rows
    assert_close(packed.logps, padded.logps, atol=1e-5, rtol=0)
    assert_close(packed.lengths, padded.lengths)
    assert_close(packed.mean_logits, padded.mean_logits, atol=1e-5, rtol=0)
    assert (padded.tails != 0).any()
    assert_close(packed.tails, padded.tails, atol=1e-5, rtol=0)
    assert_close(packed.wpo_log_weights, padded.wpo_log_weights, atol=1e-5, rtol=0)
    assert_close(stats[True][1], stats[False][1], atol=1e-5, rtol=0)  # the reference, too


def random_mistral(sliding_window: int | None) -> MistralForCausalLM:
    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        sliding_window=sliding_window,
        attn_implementation="sdpa",
    )
    return MistralForCausalLM(config).eval()


def packed_inputs(lengths: list[int]) -> dict:
    generator = torch.Generator().manual_seed(1)
    return {
        "input_ids": torch.randint(0, 97, (1, sum(lengths)), generator=generator),
        "position_ids": torch.cat([torch.arange(n) for n in lengths])[None],
        "use_cache": False,  # transformers detects packed rows only without a KV cache
    }


@pytest.mark.parametrize("sliding_window", [None, 7], ids=["causal", "sliding-window"])
def test_packed_sdpa_equals_the_block_diagonal_mask_of_stock_sdpa(sliding_window):
    model = random_mistral(sliding_window)
    inputs = packed_inputs([5, 12, 1, 9])  # with a window of 7, two rows are longer than the window
    with torch.no_grad():
        expected = model(**inputs).logits  # stock sdpa: an (N, N) block-diagonal mask
        use_packed_sdpa(model)
        assert model.config._attn_implementation == PACKED_SDPA
        got = model(**inputs).logits
    assert_close(got, expected, atol=1e-5, rtol=0)
    # Not vacuous: attending across rows would change the logits of every row after the first.
    with torch.no_grad():
        unpacked = model(input_ids=inputs["input_ids"], use_cache=False).logits
    assert (unpacked[:, 5:] - expected[:, 5:]).abs().max() > 1e-3


def test_packed_sdpa_leaves_padded_and_unpacked_batches_as_stock_sdpa():
    model = random_mistral(None)
    generator = torch.Generator().manual_seed(2)
    input_ids = torch.randint(0, 97, (3, 10), generator=generator)
    attention_mask = torch.ones(3, 10, dtype=torch.long)
    attention_mask[1, 6:] = 0
    attention_mask[2, 3:] = 0
    with torch.no_grad():
        expected_padded = model(input_ids=input_ids, attention_mask=attention_mask).logits
        expected_plain = model(input_ids=input_ids).logits
        use_packed_sdpa(model)
        got_padded = model(input_ids=input_ids, attention_mask=attention_mask).logits
        got_plain = model(input_ids=input_ids).logits
    real = attention_mask.bool()
    assert_close(got_padded[real], expected_padded[real], atol=1e-5, rtol=0)
    assert_close(got_plain, expected_plain, atol=1e-5, rtol=0)


def test_use_packed_sdpa_keeps_other_attention_implementations(tiny_model_dir):
    model = SFTModule(str(tiny_model_dir), load=LoadSettings(dtype="float32", attn_implementation="eager")).model
    use_packed_sdpa(model)
    assert model.config._attn_implementation == "eager"


def test_packed_attention_gets_its_lengths_as_python_ints_once_per_batch(tiny_model_dir, repo, monkeypatch):
    """No host copy of ``position_ids`` in any layer: the collator gives the lengths as Python ints (which stay on
    the host when Lightning moves the tensors), and every layer's attention, the checkpointed recompute included,
    receives that one list. A batch without them (built elsewhere) is read once per forward, not per layer."""
    from datamodules.collate import EXAMPLE_LENGTHS
    from lightning_modules import packed_attention

    data = InstructionDataModule(
        str(tiny_model_dir), train_files=str(repo / "data/tiny/sft_train.jsonl"), val_fraction=0.0, max_length=256
    )
    data.setup("fit")
    rows = [data.train_dataset[i] for i in range(ROWS)]
    expected = [[len(r["input_ids"]) for r in rows]]
    module = SFTModule(str(tiny_model_dir), lora=None, gradient_checkpointing=True, checkpoint_last_layer=True)
    layers = module.model.config.num_hidden_layers
    host_reads, received = [], []
    reading = packed_attention.packed_lengths
    attention = packed_attention.packed_sdpa_attention
    monkeypatch.setattr(packed_attention, "packed_lengths", lambda *a: host_reads.append(a) or reading(*a))

    def recording(*args, packed_example_lengths=None, **kwargs):
        received.append(packed_example_lengths)
        return attention(*args, packed_example_lengths=packed_example_lengths, **kwargs)

    monkeypatch.setattr(packed_attention, "packed_sdpa_attention", recording)
    packed_attention.register_packed_sdpa()  # the recording function under the PACKED_SDPA name
    monkeypatch.setattr(packed_attention, "register_packed_sdpa", lambda: None)  # and kept there

    batch = SFTCollator(data.tokenizer.pad_token_id, pack=True)(rows)
    assert batch[EXAMPLE_LENGTHS] == expected
    out = module.response_forward(module.model, batch)
    per_row_nll(out).sum().backward()
    assert len(received) == 2 * layers  # forward + recompute of every layer
    assert all(lengths is batch[EXAMPLE_LENGTHS] for lengths in received)
    assert all(type(n) is int for n in received[0][0])
    assert host_reads == []

    received.clear()
    del batch[EXAMPLE_LENGTHS]  # a batch built without them
    with torch.no_grad():
        module.response_forward(module.model, batch)
    assert len(received) == layers and all(lengths == expected for lengths in received)
    assert all(lengths is received[0] for lengths in received)  # read once (from row_lengths), not per layer
    assert host_reads == []
    del batch["row_lengths"]
    assert packed_attention.batch_lengths(batch) == expected and len(host_reads) == 1  # from position_ids, once
