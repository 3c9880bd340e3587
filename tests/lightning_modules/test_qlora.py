"""QLoRA on the CPU: LoRA on a frozen 4-bit NF4 base (bitsandbytes), through SFT, DPO, evaluation and resume.

Everything runs in fp32 on the tiny model (``32-true``, NF4 compute dtype float32). Quantising is a
deterministic function of the fp32 weights and dequantising is a table look-up times a per-block scale, and
``keep_4bit_layout`` keeps training, eval and no-grad forwards on that one path: two loads of the same base
give the same bytes and the same logits. So the comparisons below are exact up to float rounding (1e-6), far
tighter than the NF4 quantisation error itself (about 1e-1 in the logits here, checked where it matters).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.testing import assert_close

from callbacks.checkpoint_io import AtomicCheckpointIO
from callbacks.resume import RandomStateCheckpoint
from common.precision import Hardware
from common.settings import LoadSettings, OptimizerSettings
from datamodules import InstructionDataModule, PreferenceDataModule
from evaluation.scoring import HeldOutData, preference_logps, read_preference_pairs
from evaluation.variants import VARIANTS, VariantLoadSettings, load_variant, resolve_sources
from lightning_modules import loading
from lightning_modules.dpo import DPOModule
from lightning_modules.loading import (
    BITSANDBYTES_MIN_VERSION,
    LoraSettings,
    QuantizationUnavailableError,
    check_bitsandbytes,
    load_causal_lm,
)
from lightning_modules.sft import SFTModule

try:
    check_bitsandbytes("cpu")
    NO_4BIT = ""
except QuantizationUnavailableError as error:
    NO_4BIT = str(error)
needs_4bit = pytest.mark.skipif(bool(NO_4BIT), reason=NO_4BIT)

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # 2 layers: 14 in 4-bit
# + lm_head (never quantised): the untrained tiny base gives a LoRA little else to learn from in 24 steps.
LORA = LoraSettings(r=8, alpha=16, dropout=0.0, target_modules=[*PROJECTIONS, "lm_head"])
FOUR_BIT = LoadSettings(dtype="float32", load_in_4bit=True)  # the modules' fp32 default, with the 4-bit base
SFT_STEPS = 24  # 48 rows, batch 4: two epochs, a validation at the end of each
STRATEGIES = ("separate", "adapter", "precomputed")
RESUME_STEPS = 4  # interrupted before step 2, mid-epoch (12 batches an epoch)


@pytest.fixture(scope="module", autouse=True)
def quantise_on_the_cpu():
    """CPU tests on any machine: a visible GPU would otherwise receive the 4-bit base (``four_bit_device``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loading, "four_bit_device", lambda: "cpu")
        yield


class StepLog(L.Callback):
    """The ``train/*`` metrics logged at every training step, in order."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.rows.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})

    @property
    def losses(self) -> list[float]:
        return [row["train/loss"] for row in self.rows]


def first_rows(source: Path, out: Path, rows: int) -> str:
    """The first ``rows`` lines of a JSONL file, written to ``out``: a small validation set."""
    out.write_text("".join(source.read_text().splitlines(keepends=True)[:rows]))
    return str(out)


def sft_data(model: Path, repo: Path, root: Path) -> InstructionDataModule:
    return InstructionDataModule(
        str(model),
        train_files=str(repo / "data/tiny/sft_train.jsonl"),
        val_files=first_rows(repo / "data/tiny/sft_val.jsonl", root / "sft_val.jsonl", 8),
        num_examples=48,
        max_length=256,
        batch_size=4,
        cache_dir=str(root / "cache"),
    )


def four_bit_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    import bitsandbytes as bnb

    return [module for module in model.modules() if isinstance(module, bnb.nn.Linear4bit)]


def frozen_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of the state that is not trained: the packed 4-bit weights and their quantisation state
    (absmax, nested absmax, code), norms, embeddings, LM head, a frozen adapter."""
    trainable = {name for name, param in module.named_parameters() if param.requires_grad}
    return {name: tensor.clone() for name, tensor in module.state_dict().items() if name not in trainable}


def trained_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in module.named_parameters() if param.requires_grad}


def assert_only_trained_changed(before: dict, after: dict, frozen_before: dict, frozen_after: dict) -> None:
    assert frozen_before.keys() == frozen_after.keys()
    for name, tensor in frozen_before.items():
        assert torch.equal(frozen_after[name], tensor), f"frozen {name} changed"
    # Every adapter matrix moved: a 4-bit layer that cut the gradient would leave those before it untouched.
    unchanged = [name for name in before if torch.equal(after[name], before[name])]
    assert not unchanged, unchanged


def encoded(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    return dict(tokenizer(texts, return_tensors="pt", padding=True))


@torch.no_grad()
def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    return model(**batch).logits


TEXTS = ["### Instruction:\nName a colour.\n\n### Response:\nBlue.", "What is 2 + 3? It is 5."]


# ---- the one error ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("installed", [None, "0.45.5"])
def test_4bit_without_a_usable_bitsandbytes_is_one_clear_error(installed, tiny_model_dir, monkeypatch):
    from importlib.metadata import PackageNotFoundError

    def version(name: str) -> str:
        if installed is None:
            raise PackageNotFoundError(name)
        return installed

    monkeypatch.setattr(loading, "version", version)
    found = "not installed" if installed is None else f"found {installed}"
    with pytest.raises(QuantizationUnavailableError, match=rf"bitsandbytes>={BITSANDBYTES_MIN_VERSION}.*{found}"):
        SFTModule(str(tiny_model_dir), lora=LORA, load=FOUR_BIT)


@needs_4bit
def test_4bit_on_a_device_bitsandbytes_lacks_is_one_clear_error(monkeypatch):
    import bitsandbytes

    monkeypatch.setattr(bitsandbytes, "supported_torch_devices", {"cuda"})
    with pytest.raises(QuantizationUnavailableError, match="on cpu: bitsandbytes .* only for cuda"):
        check_bitsandbytes("cpu")


@needs_4bit
def test_4bit_compute_dtype_follows_the_precision_rule(tiny_model_dir, monkeypatch):
    import common.precision as precision

    def compute_dtypes(dtype: str) -> set[torch.dtype]:
        model = load_causal_lm(str(tiny_model_dir), dtype=dtype, load_in_4bit=True)
        layers = four_bit_layers(model)
        assert len(layers) == 14 and all(layer.weight.dtype == torch.uint8 for layer in layers)
        return {layer.compute_dtype for layer in layers}

    assert compute_dtypes("float32") == {torch.float32}
    assert compute_dtypes("bfloat16") == {torch.bfloat16}
    for hardware, expected in (
        (Hardware(device="cpu", cpu_capability="AVX2"), torch.float32),
        (Hardware(device="cpu", cpu_capability="AVX512", cpu_avx512_bf16=True), torch.bfloat16),
    ):
        monkeypatch.setattr(precision, "detect_hardware", lambda accelerator="auto", hardware=hardware: hardware)
        assert compute_dtypes("auto") == {expected}


@needs_4bit
def test_merging_an_adapter_into_4bit_weights_is_refused(qlora_sft):
    with pytest.raises(ValueError, match="cannot be merged into a 4-bit base"):
        DPOModule(str(qlora_sft["export"]), lora=LORA, load=FOUR_BIT, merge_sft_adapter=True)
    with pytest.raises(ValueError, match="merge_adapters: false"):
        VariantLoadSettings(load_in_4bit=True, merge_adapters=True)


# ---- QLoRA SFT ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qlora_sft(tiny_model_dir, repo, tmp_path_factory, cpu_trainer) -> dict:
    """A QLoRA SFT run: 24 steps, a sanity validation before the first (eval mode, no gradients: the case that
    made bitsandbytes repack its weights) and one after each epoch; then the export."""
    if NO_4BIT:
        pytest.skip(NO_4BIT)
    root = tmp_path_factory.mktemp("qlora_sft")
    L.seed_everything(0, verbose=False)
    module = SFTModule(
        str(tiny_model_dir), lora=LORA, load=FOUR_BIT, optimizer=OptimizerSettings(lr=1e-2, warmup_steps=1)
    )
    data = sft_data(tiny_model_dir, repo, root)
    before, frozen_before = trained_state(module), frozen_state(module)
    log = StepLog()
    trainer = cpu_trainer(max_steps=SFT_STEPS, callbacks=[log], limit_val_batches=1, num_sanity_val_steps=1)
    trainer.fit(module, datamodule=data)
    export = module.export_pretrained(root / "sft", data.tokenizer)
    return {
        "module": module,
        "losses": log.losses,
        "states": (before, trained_state(module), frozen_before, frozen_state(module)),
        "export": export,
        "tokenizer": data.tokenizer,
    }


def test_qlora_sft_trains_on_a_4bit_base(qlora_sft):
    assert len(four_bit_layers(qlora_sft["module"].model)) == 14
    losses = qlora_sft["losses"]
    assert len(losses) == SFT_STEPS and all(math.isfinite(loss) for loss in losses)
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < first - 0.1, (first, last)


def test_qlora_sft_changes_only_the_adapter(qlora_sft):
    before, after, frozen_before, frozen_after = qlora_sft["states"]
    assert before and all("lora_" in name for name in before)
    assert any(name.endswith("weight.absmax") for name in frozen_before)  # the 4-bit state is among the frozen
    assert_only_trained_changed(before, after, frozen_before, frozen_after)


def test_qlora_sft_export_reloads_onto_a_freshly_quantised_base(qlora_sft, tiny_model_dir):
    from peft import PeftModel

    module = qlora_sft["module"]
    base = load_causal_lm(str(tiny_model_dir), dtype="float32", load_in_4bit=True)
    # Quantising the same fp32 weights again gives the same bytes and scales (and the rest is untouched).
    trained = {
        name.removeprefix("model.base_model.model.").replace(".base_layer.", "."): tensor
        for name, tensor in module.state_dict().items()
        if "lora_" not in name
    }
    fresh = base.state_dict()
    assert fresh.keys() == trained.keys()
    for name, tensor in fresh.items():
        assert torch.equal(tensor, trained[name]), name
    reloaded = PeftModel.from_pretrained(base, qlora_sft["export"])
    batch = encoded(qlora_sft["tokenizer"], TEXTS)
    expected = logits(module.model, batch)
    # Same bytes, same kernels, same adapter: bit-identical (measured: 0.0); 1e-6 only allows another summation order.
    assert_close(logits(reloaded, batch), expected, rtol=0, atol=1e-6)
    # ... and a 4-bit base really is not the fp32 one: the same adapter on it gives other logits.
    full = PeftModel.from_pretrained(load_causal_lm(str(tiny_model_dir), dtype="float32"), qlora_sft["export"])
    assert (logits(full, batch) - expected).abs().max() > 1e-3


# ---- QLoRA DPO: the SFT adapter stacked frozen, a new DPO adapter ----------------------------------------------


@pytest.fixture(scope="module")
def qlora_dpo(qlora_sft, repo, tmp_path_factory, cpu_trainer) -> dict[str, dict]:
    """For each reference strategy: DPO on the 4-bit base + the QLoRA SFT adapter (frozen) + a new adapter;
    the step-0 validation, a sanity validation and 2 training steps (the second moves lora_A), the export."""
    runs = {}
    sft_export = qlora_sft["export"]
    for strategy in STRATEGIES:
        root = tmp_path_factory.mktemp(f"qlora_dpo_{strategy}")
        L.seed_everything(0, verbose=False)
        data = PreferenceDataModule(
            str(sft_export),
            train_files=str(repo / "data/tiny/prefs_train.jsonl"),
            val_files=first_rows(repo / "data/tiny/prefs_val.jsonl", root / "prefs_val.jsonl", 8),
            num_examples=16,
            max_length=128,
            max_prompt_length=64,
            batch_size=4,
            cache_dir=str(root / "cache"),
        )
        module = DPOModule(
            str(sft_export),
            lora=LORA,
            reference=strategy,
            beta=0.1,
            load=FOUR_BIT,  # merge_sft_adapter unset: stacked, as a 4-bit base requires
            reference_cache_dir=str(root / "reference"),
            optimizer=OptimizerSettings(lr=1e-2, warmup_steps=1),
        )
        # inference_mode off: metric states made in inference mode could not be updated by fit's validation.
        validation = cpu_trainer(max_steps=1, limit_val_batches=1, inference_mode=False)
        validation.validate(module, datamodule=data, verbose=False)
        step_zero = {name: float(value) for name, value in validation.callback_metrics.items()}
        before, frozen_before = trained_state(module), frozen_state(module)
        log = StepLog()
        # The sanity validation runs the policy in eval mode without gradients right before training.
        trainer = cpu_trainer(max_steps=2, callbacks=[log], limit_val_batches=1, num_sanity_val_steps=1)
        trainer.fit(module, datamodule=data)
        export = module.export_pretrained(root / "dpo", data.tokenizer, {"source_model": str(sft_export)})
        runs[strategy] = {
            "module": module,
            "step_zero": step_zero,
            "train": log.rows,
            "states": (before, trained_state(module), frozen_before, frozen_state(module)),
            "export": export,
        }
    return runs


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_qlora_dpo_step_zero_is_ln2_with_zero_rewards(qlora_dpo, strategy):
    run = qlora_dpo[strategy]
    assert run["step_zero"]["val/loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert run["step_zero"]["val/rewards/chosen"] == pytest.approx(0.0, abs=1e-5)
    assert run["step_zero"]["val/rewards/rejected"] == pytest.approx(0.0, abs=1e-5)
    # The first training step too: the policy in training mode, the reference in eval mode (separate), from
    # the cache (precomputed) or with the DPO adapter off (adapter) compute the 4-bit layers alike.
    first = run["train"][0]
    assert first["train/loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert first["train/rewards/chosen"] == pytest.approx(0.0, abs=1e-5)
    assert first["train/rewards/rejected"] == pytest.approx(0.0, abs=1e-5)
    assert len(four_bit_layers(run["module"].model)) == 14


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_qlora_dpo_changes_only_the_dpo_adapter(qlora_dpo, strategy):
    before, after, frozen_before, frozen_after = qlora_dpo[strategy]["states"]
    assert before and all(".dpo." in name for name in before)
    assert any(".sft." in name for name in frozen_before)  # the SFT adapter is there, and frozen
    assert_only_trained_changed(before, after, frozen_before, frozen_after)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_qlora_dpo_export_reloads_as_the_evaluation_loads_it(qlora_dpo, qlora_sft, strategy):
    run = qlora_dpo[strategy]
    assert json.loads((run["export"] / "adapter_config.json").read_text())["r"] == LORA.r
    sources = resolve_sources(str(qlora_sft["export"]), str(run["export"]))
    load = VariantLoadSettings(dtype="float32", load_in_4bit=True, merge_adapters=False)
    reloaded = load_variant("sft_dpo", sources, load)
    batch = encoded(qlora_sft["tokenizer"], TEXTS)
    assert_close(logits(reloaded, batch), logits(run["module"].model, batch), rtol=0, atol=1e-6)


# ---- evaluation of the 4-bit variants -----------------------------------------------------------------------


def test_evaluation_loads_the_4bit_variants_and_scores_them(qlora_dpo, qlora_sft, repo):
    sources = resolve_sources(str(qlora_sft["export"]), str(qlora_dpo["precomputed"]["export"]))
    load = VariantLoadSettings(dtype="auto", load_in_4bit=True, merge_adapters=False)  # this machine's compute dtype
    pairs = read_preference_pairs(HeldOutData(files=str(repo / "data/tiny/prefs_test.jsonl"), num_examples=4))
    scores = {}
    for name in VARIANTS:
        model = load_variant(name, sources, load)
        assert len(four_bit_layers(model)) == 14
        chosen, rejected = preference_logps(
            model, qlora_sft["tokenizer"], pairs, template="alpaca", max_length=128, max_prompt_length=64, batch_size=4
        )
        assert all(math.isfinite(x) and x < 0 for x in chosen + rejected)
        scores[name] = chosen
    assert scores["sft"] != scores["base"] and scores["sft_dpo"] != scores["sft"]  # each adapter is applied


# ---- resume -------------------------------------------------------------------------------------------------


class Interrupted(RuntimeError):
    """Raised by :class:`StopAtStep`, as a crash would stop the run."""


class StopAtStep(L.Callback):
    """Stop the run when optimiser step ``step`` is about to start, after step ``step - 1``'s checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Interrupted(f"stopped before step {self.step}")


def resumable_run(
    model: Path, repo: Path, root: Path, cpu_trainer, *, stop_at: int | None = None, ckpt_path: str | None = None
) -> list[float]:
    """4 steps of QLoRA SFT with LoRA dropout on (the random generators matter), ``last.ckpt`` after every step."""
    root.mkdir(exist_ok=True)
    L.seed_everything(0, verbose=False)
    module = SFTModule(
        str(model),
        lora=LoraSettings(r=8, alpha=16, dropout=0.1, target_modules=LORA.target_modules),
        load=FOUR_BIT,
        optimizer=OptimizerSettings(lr=1e-2, warmup_steps=1),
    )
    log = StepLog()
    callbacks = [
        log,
        RandomStateCheckpoint(),
        ModelCheckpoint(dirpath=root / "checkpoints", every_n_train_steps=1, save_top_k=0, save_last=True),
    ]
    if stop_at is not None:
        callbacks.append(StopAtStep(stop_at))
    trainer = cpu_trainer(
        max_steps=RESUME_STEPS,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        limit_val_batches=0,
        enable_checkpointing=True,
    )
    try:
        trainer.fit(module, datamodule=sft_data(model, repo, root), ckpt_path=ckpt_path)
    except Interrupted:
        assert stop_at is not None
    return log.losses


@needs_4bit
def test_resume_from_last_ckpt_of_a_4bit_run_continues_the_same_curve(tiny_model_dir, repo, tmp_path, cpu_trainer):
    full = resumable_run(tiny_model_dir, repo, tmp_path / "full", cpu_trainer)
    interrupted = resumable_run(tiny_model_dir, repo, tmp_path / "cut", cpu_trainer, stop_at=2)
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    checkpoint = AtomicCheckpointIO().load_checkpoint(last)
    assert checkpoint["global_step"] == 2
    assert checkpoint["state_dict"] and all("lora_" in name for name in checkpoint["state_dict"])  # no 4-bit base
    resumed = resumable_run(tiny_model_dir, repo, tmp_path / "cut", cpu_trainer, ckpt_path=str(last))
    assert len(full) == RESUME_STEPS and len(set(full)) == RESUME_STEPS
    assert interrupted == pytest.approx(full[:2], abs=1e-6, rel=0)
    assert resumed == pytest.approx(full[2:], abs=1e-6, rel=0)
