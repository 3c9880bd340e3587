"""The DPO module: reference strategies agree, the step-0 invariant, learning, the reference cache."""

import json
import math

import lightning as L
import pytest
import torch
from preference_helpers import LORA, Recorder, first_batch, preference_data
from torch.testing import assert_close

from common.errors import ModelLoadError
from common.settings import LossTerm, OptimizerSettings
from datamodules import PreferenceDataModule
from lightning_modules.dpo import DPOModule


def step_zero(module: DPOModule, data: PreferenceDataModule, cpu_trainer) -> dict:
    """Loss and rewards of one validation batch before any update, through Lightning."""
    t = cpu_trainer(max_steps=1, limit_val_batches=1)
    t.validate(module, datamodule=data, verbose=False)
    return {k: v.item() for k, v in t.callback_metrics.items()}


@pytest.mark.parametrize("strategy", ["separate", "adapter", "precomputed"])
def test_step_zero_is_ln2_with_zero_rewards(strategy, tiny_sft_export, repo, tmp_path, cpu_trainer):
    data = preference_data(tiny_sft_export, repo, tmp_path)
    module = DPOModule(str(tiny_sft_export), lora=LORA, reference=strategy, reference_cache_dir=str(tmp_path / "ref"))
    metrics = step_zero(module, data, cpu_trainer)
    assert metrics["val/loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert metrics["val/rewards/chosen"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["val/rewards/rejected"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["val/logps/chosen"] < 0


def test_reference_strategies_give_the_same_loss_on_the_same_batch(tiny_sft_export, repo, tmp_path, cpu_trainer):
    """After the policy has moved, the three references still agree: they are all the SFT model."""
    data = preference_data(tiny_sft_export, repo, tmp_path, pack=False)
    batch = first_batch(data)
    torch.manual_seed(0)
    losses = {}
    nudged = None
    for strategy in ("separate", "adapter", "precomputed"):
        module = DPOModule(str(tiny_sft_export), lora=LORA, reference=strategy, reference_cache_dir=str(tmp_path / "r"))
        if nudged is None:  # move the policy away from the reference, identically for every strategy
            nudged = {n: torch.randn_like(p) * 0.05 for n, p in module.model.named_parameters() if "lora_B" in n}
        with torch.no_grad():
            for name, param in module.model.named_parameters():
                if name in nudged:
                    param.copy_(nudged[name])
        module.eval()
        if strategy == "precomputed":
            module.trainer = cpu_trainer(max_steps=1)
            module.trainer.strategy.connect(module)
            module.trainer.datamodule = data
            module.trainer._data_connector.attach_datamodule(module, data)
            module._attach_precomputed_reference()
            batch = first_batch(data)  # now carries reference_*_logps from the cache
            assert "reference_chosen_logps" in batch
        policy = module.sequence_stats(module.model, batch).logps
        reference = module.reference_logps(batch)
        losses[strategy] = (policy, reference)
    assert_close(losses["separate"][1], losses["adapter"][1], rtol=1e-5, atol=1e-5)
    assert_close(losses["separate"][1], losses["precomputed"][1], rtol=1e-5, atol=1e-4)
    assert not torch.allclose(losses["adapter"][0], losses["adapter"][1])  # the nudge did move the policy


@pytest.mark.parametrize("strategy", ["separate", "adapter"])
def test_the_step_reads_the_live_reference_first_and_still_trains_the_policy(strategy, tiny_sft_export, repo, tmp_path):
    """The step computes the reference before the policy (the reference's forward then reuses the memory the last
    backward freed); the loss is still -log sigmoid(beta ((pi_c - ref_c) - (pi_r - ref_r))) of the moved policy and
    the SFT reference, and its gradient reaches the DPO adapter (the adapter is back on after the reference)."""
    data = preference_data(tiny_sft_export, repo, tmp_path, pack=False)
    batch = first_batch(data)
    torch.manual_seed(0)
    module = DPOModule(str(tiny_sft_export), lora=LORA, reference=strategy, beta=0.1).eval()
    with torch.no_grad():
        for name, param in module.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn_like(param) * 0.05)
    module.log = lambda name, value, **kwargs: None
    order = []
    reference_logps, sequence_stats = module.reference_logps, module.sequence_stats
    module.reference_logps = lambda b: order.append("reference") or reference_logps(b)
    # the reference's own forward goes through sequence_stats too; the policy's is the one with policy=True
    module.sequence_stats = lambda model, b, **kw: (
        (kw.get("policy") and order.append("policy")) or sequence_stats(model, b, **kw)
    )
    loss = module._shared_step(batch, "val")
    assert order == ["reference", "policy"]
    with torch.no_grad():
        policy, reference = sequence_stats(module.model, batch).logps, reference_logps(batch)
    pairs = policy.shape[0] // 2
    margins = (policy[:pairs] - reference[:pairs]) - (policy[pairs:] - reference[pairs:])
    assert_close(loss, -torch.nn.functional.logsigmoid(0.1 * margins).mean(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(policy, reference)  # the nudged policy is not the reference
    loss.backward()
    grads = [p.grad for n, p in module.model.named_parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_stacked_sft_adapter_equals_merged_at_step_zero(tiny_sft_export, repo, tmp_path):
    data = preference_data(tiny_sft_export, repo, tmp_path, pack=False)
    batch = first_batch(data)
    merged = DPOModule(str(tiny_sft_export), lora=LORA, reference="adapter").eval()
    stacked = DPOModule(str(tiny_sft_export), lora=LORA, reference="adapter", merge_sft_adapter=False).eval()
    with torch.no_grad():
        assert_close(
            stacked.sequence_stats(stacked.model, batch).logps,
            merged.sequence_stats(merged.model, batch).logps,
            rtol=1e-5,
            atol=1e-4,
        )
        assert_close(stacked.reference_logps(batch), merged.reference_logps(batch), rtol=1e-5, atol=1e-4)
    trainable = [n for n, p in stacked.named_parameters() if p.requires_grad]
    assert trainable and all(".dpo." in n for n in trainable)


def test_tiny_fit_learns_the_preferences(tiny_sft_export, repo, tmp_path, cpu_trainer):
    L.seed_everything(0, verbose=False)
    # 32 pairs seen for ~8 epochs: a 0.2M-parameter model can fit them in a few dozen steps.
    data = preference_data(tiny_sft_export, repo, tmp_path, num_examples=32)
    module = DPOModule(
        str(tiny_sft_export),
        lora=LORA,
        reference="precomputed",
        beta=0.1,
        reference_cache_dir=str(tmp_path / "ref"),
        optimizer=OptimizerSettings(lr=1e-2, warmup_steps=2),
    )
    recorder = Recorder()
    cpu_trainer(max_steps=30, callbacks=[recorder], limit_val_batches=0).fit(module, datamodule=data)
    first, last = recorder.rows[:5], recorder.rows[-5:]
    mean = lambda rows, key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    assert mean(last, "train/rewards/accuracies") > 0.5
    assert mean(last, "train/rewards/margins") > mean(first, "train/rewards/margins")
    assert mean(last, "train/loss") < math.log(2)


METHODS = {  # what each method trains on, at the settings its paper (or TRL) suggests for a small model
    "dpo": (0.1, [LossTerm("sigmoid")]),
    "ipo": (0.1, [LossTerm("ipo")]),
    "rpo": (0.1, [LossTerm("sigmoid"), LossTerm("sft")]),
    "mpo": (0.1, [LossTerm("sigmoid", 0.8), LossTerm("bco_pair", 0.2), LossTerm("sft")]),
    "simpo": (2.0, [LossTerm("simpo", gamma=0.5)]),
    "orpo": (0.1, [LossTerm("orpo")]),
    "ld_dpo": (0.1, [LossTerm("sigmoid", ld_alpha=0.5)]),
    "wpo": (0.1, [LossTerm("sigmoid", wpo=True)]),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_lowers_its_loss_on_the_tiny_pairs(method, tiny_sft_export, repo, tmp_path, cpu_trainer):
    L.seed_everything(0, verbose=False)
    beta, losses = METHODS[method]
    data = preference_data(tiny_sft_export, repo, tmp_path, num_examples=32)
    module = DPOModule(
        str(tiny_sft_export),
        lora=LORA,
        reference="adapter",
        beta=beta,
        losses=losses,
        optimizer=OptimizerSettings(lr=1e-2, warmup_steps=2),
    )
    recorder = Recorder()
    cpu_trainer(max_steps=20, callbacks=[recorder], limit_val_batches=0).fit(module, datamodule=data)
    first, last = recorder.rows[:4], recorder.rows[-4:]
    mean = lambda rows: sum(r["train/loss"] for r in rows) / len(rows)  # noqa: E731
    assert mean(last) < mean(first)


def test_precomputed_cache_is_reused_and_invalidated_by_new_data(
    tiny_sft_export, repo, tmp_path, monkeypatch, cpu_trainer
):
    calls = []
    original = DPOModule._compute_reference_cache

    def counting(self, datamodule, split, path):
        calls.append(split)
        return original(self, datamodule, split, path)

    monkeypatch.setattr(DPOModule, "_compute_reference_cache", counting)

    def run(**data_kwargs):
        data = preference_data(tiny_sft_export, repo, tmp_path, **data_kwargs)
        module = DPOModule(
            str(tiny_sft_export), lora=LORA, reference="precomputed", reference_cache_dir=str(tmp_path / "ref")
        )
        cpu_trainer(max_steps=1, limit_val_batches=1).fit(module, datamodule=data)

    run()
    assert calls == ["train", "val"]
    run()
    assert calls == ["train", "val"]  # second run: no reference pass at all
    run(num_examples=100)  # different training data: the train cache no longer matches
    assert calls == ["train", "val", "train"]
    run(max_length=96)  # different truncation: both splits change
    assert calls == ["train", "val", "train", "train", "val"]


def test_export_of_the_dpo_adapter_reloads_without_lightning(tiny_sft_export, repo, tmp_path):
    """base -> merge the SFT adapter -> load the DPO adapter gives the trained policy's logits."""
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = preference_data(tiny_sft_export, repo, tmp_path, pack=False)
    module = DPOModule(str(tiny_sft_export), lora=LORA, reference="adapter")
    with torch.no_grad():  # a trained-looking adapter, so the comparison is not between two zero updates
        for name, param in module.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    out = module.export_pretrained(tmp_path / "dpo", data.tokenizer, {"source_model": str(tiny_sft_export)})
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "export_info.json"} <= {
        p.name for p in out.iterdir()
    }
    base_id = json.loads((tiny_sft_export / "adapter_config.json").read_text())["base_model_name_or_path"]
    sft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_id), str(tiny_sft_export))
    reloaded = PeftModel.from_pretrained(sft.merge_and_unload(), str(out)).eval()
    batch = first_batch(data)
    module.eval()
    with torch.no_grad():
        expected = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        got = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"reference": "adapter", "lora": None}, ValueError, "needs model.lora"),
        ({"loss_type": "nope"}, ValueError, r"model.losses\[0\] \(nope\): unknown loss; choose one of sigmoid"),
        ({"beta": -1.0}, ValueError, "beta"),
        ({"losses": [LossTerm("ipo", beta=0.0)]}, ValueError, r"model.losses\[0\] \(ipo\): beta must be > 0"),
        (
            {"losses": [LossTerm("sigmoid")], "nll_weight": 1.0},
            ValueError,
            r"write only losses \(here: add the older ones as losses: "
            r"\[\{name: sigmoid\}, \{name: sft, weight: 1.0\}\]\)",
        ),
    ],
)
def test_bad_settings_fail_before_training(tiny_sft_export, kwargs, error, message):
    with pytest.raises(error, match=message):
        DPOModule(str(tiny_sft_export), **{"lora": LORA, **kwargs})


def test_missing_or_incomplete_sft_export_is_a_clear_error(tiny_sft_export, tmp_path):
    with pytest.raises(ModelLoadError, match="SFT export not found"):
        DPOModule(str(tmp_path / "nowhere"), lora=LORA)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text((tiny_sft_export / "adapter_config.json").read_text())
    with pytest.raises(ModelLoadError, match="incomplete SFT export.*adapter_model.safetensors"):
        DPOModule(str(broken), lora=LORA)


def test_rpo_adds_alpha_times_the_chosen_token_nll_to_the_dpo_loss(tiny_sft_export, repo, tmp_path):
    """nll_weight = alpha: loss = DPO + alpha * (-sum chosen logps / chosen tokens), from the module's own log-probs."""
    data = preference_data(tiny_sft_export, repo, tmp_path, pack=False)
    batch = first_batch(data)
    alpha = 0.5
    module = DPOModule(str(tiny_sft_export), lora=LORA, reference="adapter", nll_weight=alpha)
    module.eval()
    logged = {}
    module.log = lambda name, value, **kwargs: logged.setdefault(name, value)
    with torch.no_grad():
        loss = module._shared_step(batch, "val")
        policy = module.sequence_stats(module.model, batch)
    pairs = policy.logps.shape[0] // 2
    nll = -policy.logps[:pairs].sum() / policy.lengths[:pairs].sum()
    # At step 0 the policy is the reference: every DPO loss is ln 2.
    assert_close(loss, math.log(2) + alpha * nll, rtol=1e-5, atol=1e-5)
    assert nll > 0 and "val/nll" in logged
    with pytest.raises(ValueError, match="nll_weight"):
        DPOModule(str(tiny_sft_export), lora=LORA, nll_weight=-1.0)
    # the same run written as a loss list
    listed = DPOModule(
        str(tiny_sft_export), lora=LORA, reference="adapter", losses=[LossTerm("sigmoid"), LossTerm("sft", alpha)]
    ).eval()
    listed.log = lambda name, value, **kwargs: None
    with torch.no_grad():
        assert_close(listed._shared_step(batch, "val"), loss)


def test_a_reference_free_run_builds_no_reference_and_takes_no_precomputed_pass(
    tiny_sft_export, repo, tmp_path, monkeypatch, cpu_trainer
):
    """SimPO and ORPO read no reference: whatever ``reference`` says, no second model, no pass, no cached log-probs."""
    passes = []
    monkeypatch.setattr(DPOModule, "_compute_reference_cache", lambda *args: passes.append(args))
    seen = []
    monkeypatch.setattr(DPOModule, "reference_logps", lambda self, batch: seen.append(batch))
    for reference in ("separate", "precomputed"):
        module = DPOModule(
            str(tiny_sft_export),
            lora=LORA,
            reference=reference,
            beta=2.0,
            losses=[LossTerm("simpo", gamma=0.5)],
            reference_cache_dir=str(tmp_path / "ref"),
        )
        assert module.reference_strategy is None and "reference_model" not in module.__dict__
        data = preference_data(tiny_sft_export, repo, tmp_path)
        trainer = cpu_trainer(max_steps=2, limit_val_batches=1)
        trainer.fit(module, datamodule=data)
        assert passes == [] and seen == []
        assert not getattr(data, "reference_attached", False)
        assert "train/margin" in trainer.callback_metrics and "train/rewards/margins" in trainer.callback_metrics


def test_the_sft_adapter_stays_stacked_on_bf16_weights_and_the_export_records_how(
    tiny_sft_export, repo, tmp_path, cpu_trainer
):
    """A merge into bf16 rounds every SFT-updated weight by up to half an ulp (more than a DPO update at lr 5e-7):
    unset, ``merge_sft_adapter`` keeps it stacked there, merges it into fp32 weights, and the export says which."""
    from callbacks.export import HFExportCallback
    from common.settings import LoadSettings

    fp32 = DPOModule(str(tiny_sft_export), lora=LORA, reference="adapter")
    assert not fp32.stacked and fp32.sft_adapter == {"applied": "merged", "dtype": "float32"}
    module = DPOModule(str(tiny_sft_export), lora=LORA, reference="adapter", load=LoadSettings(dtype="bfloat16"))
    assert module.stacked and module.sft_adapter == {"applied": "stacked", "dtype": "bfloat16"}
    assert any(".sft." in name for name, _ in module.model.named_parameters())
    data = preference_data(tiny_sft_export, repo, tmp_path, num_examples=8)
    out = tmp_path / "export"
    trainer = cpu_trainer(
        max_steps=1, limit_val_batches=0, precision="bf16-mixed", callbacks=[HFExportCallback(str(out))]
    )
    trainer.fit(module, datamodule=data)
    info = json.loads((out / "export_info.json").read_text())
    assert info["sft_adapter"] == {"applied": "stacked", "dtype": "bfloat16"}


def test_full_dpo_from_a_lora_sft_export_trains_every_weight(tiny_sft_export, repo, tmp_path, cpu_trainer):
    """``lora: null`` on a LoRA SFT export: the adapter is merged into its base, which PEFT had frozen; every weight
    must train (before, none did: the optimiser found no trainable parameter)."""
    data = preference_data(tiny_sft_export, repo, tmp_path)
    module = DPOModule(str(tiny_sft_export), lora=None, reference="separate", merge_sft_adapter=True)
    params = dict(module.model.named_parameters())
    assert params and all(p.requires_grad for p in params.values())
    before = {name: p.detach().clone() for name, p in params.items()}
    cpu_trainer(max_steps=1, limit_val_batches=0).fit(module, datamodule=data)
    changed = [name for name, p in module.model.named_parameters() if not torch.equal(p.detach(), before[name])]
    assert "model.embed_tokens.weight" in changed or any("embed_tokens" in name for name in changed)
    assert any("layers.0.self_attn.q_proj" in name for name in changed)
