"""The study's shapes on one GPU: bf16 LoRA and 4-bit QLoRA, SFT and DPO steps of a Mistral-7B-shaped model.

Builds a randomly initialised model with the architecture in ``configs/models/mistral-7b-v0.1.json`` (all 32
layers by default) on the device, in bf16, and writes it with ``save_pretrained`` (safetensors) into a temporary
folder, with a word-level tokenizer of the config's vocabulary (32000 placeholder tokens; the batches are random
token ids, so it never encodes anything, but an SFT export needs one). Nothing comes from the Hub. Each case then
loads that folder through the project's own public paths, as a study run does: ``SFTModule(folder, load=...)``
(``load_in_4bit``: transformers and bitsandbytes quantise to NF4 at load time, with the double quantisation and
compute dtype of ``lightning_modules.loading.quantization_config``), and for DPO an SFT export written by
``CausalLMModule.export_pretrained`` (the LoRA adapter of the SFT case of the same kind, after its steps; an
untrained one when that case is not in the run), loaded by ``DPOModule(export, reference="precomputed",
load=...)``: merged into the bf16 base, or stacked frozen on the 4-bit one. The modules (their LoRA, gradient
checkpointing, response-only LM head, losses) train a few steps under a ``lightning.Trainer`` at ``bf16-mixed``.

The folder costs disk and time: at full depth ~14.5 GB of bf16 weights (the GPU machine's disk has 64 GiB;
``TMPDIR`` picks where), one write, and per case a load, in which the module also records the folder's SHA-256
(``common.provenance.describe``; a DPO case hashes the base again). Both are printed in seconds (the ``base:``
line, each case's ``loaded in``) and each case's load time is in the JSON as ``load_s``; none is in the timed steps.

Per case it prints tokens/s, the peak of ``torch.cuda.max_memory_allocated`` over the timed steps, the MFU
against the dense bf16 peak of the detected GPU, and the memory planner's prediction (``python -m planner
plan``) beside it; "planner: not available" when the package is missing.

Batches are packed as the study packs them (``pack: true``): ``batch_size`` rows of ``max_length`` tokens in one
``(1, N)`` row, half prompt (no loss) and half response; DPO rows are chosen then rejected, with the reference
log-probs in the batch as the study's ``reference: precomputed`` cache provides them (the reference pass is not
run). Model FLOPs per step follow the PaLM definition (Chowdhury et al. 2022, appendix B): ``6 N`` per token
for the decoder layers (the head only at response positions, where the modules apply it) plus ``12 L d T`` per
token for attention; gradient-checkpointing recomputation is not counted.

Smoke test on a CPU: ``python benchmarks/gpu_check.py --device cpu --num-layers 1 --max-length 128 --warmup 1
--steps 1`` (fp32 there: ``32-true``, as the precision rule picks on a CPU without native bf16; ~1.9 GB written).
"""

from __future__ import annotations

import argparse  # not jsonargparse: this runs on a GPU image that has only torch, lightning, transformers, peft
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import yaml
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from datamodules.tokenizer import load_tokenizer  # noqa: E402
from lightning_modules.dpo import DPOModule  # noqa: E402
from lightning_modules.loading import LoadSettings, LoraSettings  # noqa: E402
from lightning_modules.optim import OptimizerSettings  # noqa: E402
from lightning_modules.sft import SFTModule  # noqa: E402

MODEL_CONFIG = REPO / "configs" / "models" / "mistral-7b-v0.1.json"
STAGE_CONFIGS = {"sft": REPO / "configs" / "sft.yaml", "dpo": REPO / "configs" / "dpo.yaml"}
CASES = ("sft-lora", "sft-qlora", "dpo-lora", "dpo-qlora")
# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from the vendors' data sheets; matched in this order.
DENSE_BF16_PEAKS = (
    ("H200", 989.4e12),
    ("H100 PCIe", 756.0e12),
    ("H100", 989.4e12),  # SXM
    ("A100", 312.0e12),
    ("L40S", 362.05e12),
)


def dense_bf16_peak(device_name: str) -> tuple[str, float] | None:
    """``(name, FLOP/s)`` of the GPU whose name ``device_name`` contains, or ``None`` (a CPU, an unknown GPU)."""
    for name, peak in DENSE_BF16_PEAKS:
        if name.lower() in device_name.lower():
            return name, peak
    return None


@dataclass
class Case:
    """One measured configuration: the stage, 4-bit or not, and the study config's batch settings."""

    name: str
    stage: str
    four_bit: bool
    batch_size: int
    lora: LoraSettings
    gradient_checkpointing: bool


def study_case(name: str) -> Case:
    """The case ``name`` with the batch size, LoRA and gradient checkpointing of the study config of its stage.

    QLoRA is for a 24-40 GB GPU, where the study turns gradient checkpointing back on (README, "Planning a
    run"): its cases run with it whatever the config says, so they measure the run that fits there."""
    stage, kind = name.split("-")
    config = yaml.safe_load(STAGE_CONFIGS[stage].read_text())
    model = config["model"]["init_args"]
    return Case(
        name=name,
        stage=stage,
        four_bit=kind == "qlora",
        batch_size=int(config["data"]["init_args"]["batch_size"]),
        lora=LoraSettings(**{**model["lora"], "dropout": 0.0}),  # no dropout: steps comparable across runs
        gradient_checkpointing=kind == "qlora" or bool(model.get("gradient_checkpointing", False)),
    )


def placeholder_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer of exactly ``vocab_size`` tokens: Mistral's ``<unk>``, ``<s>``, ``</s>`` at 0, 1, 2,
    then ``t3`` ... ``t{vocab_size - 1}``. The batches are random ids, so it encodes nothing; it makes the folders
    complete (``check_sft_export`` wants a tokenizer in an SFT export) with the model's vocabulary size."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"t{i}": i for i in range(3, vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def write_base(model_config: AutoConfig, folder: Path, device: torch.device, dtype: torch.dtype) -> str:
    """Build a randomly initialised causal LM of ``model_config`` on ``device`` in ``dtype`` and save it, with
    :func:`placeholder_tokenizer`, into ``folder``; what it cost, as one line."""
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(model_config, dtype=dtype, attn_implementation="sdpa")
    built = time.perf_counter() - start
    start = time.perf_counter()
    model.save_pretrained(folder)  # safetensors: the default of transformers >= 4.35
    placeholder_tokenizer(model_config.vocab_size).save_pretrained(folder)
    written = time.perf_counter() - start
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    size = sum(f.stat().st_size for f in folder.iterdir())
    return f"built in {built:.1f} s, wrote {size / 1e9:.1f} GB to {folder} in {written:.1f} s"


def load_settings(case: Case, dtype: str) -> LoadSettings:
    return LoadSettings(dtype=dtype, load_in_4bit=case.four_bit)


def make_sft_module(case: Case, base: Path, dtype: str) -> SFTModule:
    """The project's SFT module for ``case`` (an SFT case, or the SFT stage of a DPO case), loading ``base``."""
    return SFTModule(
        str(base),
        lora=case.lora,
        load=load_settings(case, dtype),
        gradient_checkpointing=case.gradient_checkpointing,
        optimizer=OptimizerSettings(lr=2e-5, warmup_steps=0),
    )


def export_sft(module: SFTModule, folder: Path) -> None:
    """Write ``module``'s SFT export (its LoRA adapter, the base's tokenizer, ``export_info.json``) into
    ``folder``, as ``callbacks.export.HFExportCallback`` does at the end of an SFT run."""
    info = {"stage": type(module).__name__, "source_model": module.model_name_or_path, "provenance": module.provenance}
    module.export_pretrained(folder, tokenizer=load_tokenizer(module.model_name_or_path), info=info)


def sft_export_of(case: Case, base: Path, dtype: str, exports: Path) -> Path:
    """The SFT export a DPO ``case`` starts from: the one the SFT case of the same kind wrote in this run, else
    an untrained one (one more load of ``base``)."""
    sft = study_case(case.name.replace("dpo-", "sft-"))  # dpo-qlora -> sft-qlora
    folder = exports / sft.name
    if not folder.is_dir():
        module = make_sft_module(sft, base, dtype)
        export_sft(module, folder)
        del module
    return folder


def make_module(case: Case, base: Path, dtype: str, exports: Path) -> L.LightningModule:
    """The project's module for ``case``, loaded from the saved ``base`` through its public arguments.

    DPO starts from the SFT export: its LoRA merged into the base (bf16), or stacked frozen on it (4-bit; the
    module's default for ``load_in_4bit``)."""
    if case.stage == "sft":
        return make_sft_module(case, base, dtype)
    return DPOModule(
        str(sft_export_of(case, base, dtype, exports)),
        lora=case.lora,
        reference="precomputed",
        load=load_settings(case, dtype),
        gradient_checkpointing=case.gradient_checkpointing,
        optimizer=OptimizerSettings(lr=5e-7, warmup_steps=0),
    )


class PreparedBatches(L.LightningDataModule):
    """Serves one prepared packed batch ``steps`` times, in place of the project's data modules (no data, no
    tokenising).

    ``reference_attached = True`` is ``DPOModule``'s public contract for a data module whose batches bring their
    own reference log-probs (``reference_chosen_logps`` / ``reference_rejected_logps``): with it, ``setup``
    computes no reference cache (``DPOModule._attach_precomputed_reference``), so no datasets, fingerprints or
    reference loader are needed. The SFT module ignores it."""

    def __init__(self, batch: dict[str, torch.Tensor], steps: int) -> None:
        super().__init__()
        self.batch, self.steps = batch, steps
        self.reference_attached = True

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader([self.batch] * self.steps, batch_size=None)


def packed_batch(case: Case, max_length: int, vocab_size: int, seed: int) -> dict[str, torch.Tensor]:
    """One packed batch as the collators build it: ``(1, rows * max_length)``, half prompt, half response.

    ``rows`` is ``batch_size`` for SFT and ``2 * batch_size`` for DPO (the chosen rows, then the rejected ones).
    """
    rows = case.batch_size * (2 if case.stage == "dpo" else 1)
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab_size, (1, rows * max_length), generator=generator)  # (1, N)
    labels = input_ids.clone()
    prompt = max_length // 2
    for row in range(rows):
        labels[0, row * max_length : row * max_length + prompt] = -100
    batch = {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": torch.arange(max_length).repeat(rows)[None],  # (1, N): restarts at 0 per row
        "row_lengths": torch.full((rows,), max_length),
        "num_loss_tokens": (labels != -100).sum(),
    }
    if case.stage == "dpo":
        pairs = case.batch_size
        batch["reference_chosen_logps"] = -torch.rand(pairs, generator=generator) * max_length
        batch["reference_rejected_logps"] = -torch.rand(pairs, generator=generator) * max_length
    return batch


def weight_counts(model_config: AutoConfig) -> tuple[int, int]:
    """Weights of the decoder layers and of the LM head, counted on a meta-device copy (no memory; 4-bit layers
    pack two weights per byte, so a 4-bit model's own counts would be halved)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    return sum(p.numel() for p in model.model.layers.parameters()), model.lm_head.weight.numel()


def model_flops_per_step(model_config: AutoConfig, layer_params: int, head_params: int, batch: dict) -> float:
    """PaLM model FLOPs of one training step (forward + backward) on ``batch`` (see the module doc)."""
    tokens = batch["input_ids"].numel()
    response = int((batch["labels"][:, 1:] != -100).sum())
    sequence = int(batch["row_lengths"][0])
    attention = 12 * model_config.num_hidden_layers * model_config.hidden_size * sequence
    return 6.0 * (layer_params * tokens + head_params * response) + attention * tokens


class StepTimer(L.Callback):
    """Wall time and peak device memory of the steps after ``warmup``."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device = warmup, device
        self.started = self.elapsed = 0.0
        self.peak_bytes: int | None = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self._sync()
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            self.started = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self._sync()
        self.elapsed = time.perf_counter() - self.started
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)


def planner_prediction(case: Case, model_config_path: Path, max_length: int, gpu: str | None) -> str:
    """The planner's predicted peak for ``case``, as one short string; it is called through its CLI only."""
    if importlib.util.find_spec("planner") is None:
        return "planner: not available"
    command = [
        sys.executable, "-m", "planner", "plan",
        "--config", str(STAGE_CONFIGS[case.stage]),
        "--model-config", str(model_config_path),
        "--set", f"data.init_args.max_length={max_length}",
        "--set", f"model.init_args.load.load_in_4bit={'true' if case.four_bit else 'false'}",
        "--set", f"model.init_args.gradient_checkpointing={'true' if case.gradient_checkpointing else 'false'}",
        "--json",
    ]  # fmt: skip
    if gpu is not None:
        command += ["--gpu", gpu]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"planner: failed ({last})"
    try:
        peak = json.loads(result.stdout)["peak_bytes"]
    except (ValueError, KeyError) as error:
        return f"planner: unreadable output ({error})"
    return f"planner peak {peak / 2**30:.1f} GiB"


def run_case(
    case: Case, args: argparse.Namespace, model_config: AutoConfig, device: torch.device, base: Path, exports: Path
) -> dict:
    """Load ``base`` into the case's module, train ``warmup + steps`` steps, measure; freed before the next case.

    An SFT case then writes its export, which the DPO case of the same kind starts from."""
    on_cuda = device.type == "cuda"
    layer_params, head_params = weight_counts(model_config)
    start = time.perf_counter()
    module = make_module(case, base, "bfloat16" if on_cuda else "float32", exports)
    load_s = time.perf_counter() - start
    source = "the base" if case.stage == "sft" else f"the {case.name.replace('dpo-', 'sft-')} export"
    print(f"[gpu_check] {case.name}: loaded in {load_s:.1f} s from {source}", flush=True)
    batch = packed_batch(case, args.max_length, model_config.vocab_size, seed=0)
    timer = StepTimer(args.warmup, device)
    trainer = L.Trainer(
        accelerator=device.type,
        devices=1,
        precision="bf16-mixed" if on_cuda else "32-true",
        max_steps=args.warmup + args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=PreparedBatches(batch, args.warmup + args.steps))
    if case.stage == "sft":
        export_sft(module, exports / case.name)
    tokens = batch["input_ids"].numel() * args.steps
    flops = model_flops_per_step(model_config, layer_params, head_params, batch) * args.steps
    peak = dense_bf16_peak(torch.cuda.get_device_name(device)) if on_cuda else None
    result = {
        "case": case.name,
        "rows_per_step": int(batch["row_lengths"].numel()),
        "tokens_per_step": int(batch["input_ids"].numel()),
        "tokens_per_s": tokens / timer.elapsed,
        "peak_bytes": timer.peak_bytes,
        "mfu": None if peak is None else flops / timer.elapsed / peak[1],
        "planner": planner_prediction(
            case, args.planner_model_config, args.max_length, args.gpu or (peak or [None])[0]
        ),
        "load_s": load_s,
    }
    del trainer, module
    if on_cuda:
        torch.cuda.empty_cache()
    return result


def describe_result(result: dict) -> str:
    peak = "n/a (no CUDA)" if result["peak_bytes"] is None else f"{result['peak_bytes'] / 2**30:.1f} GiB"
    mfu = "n/a" if result["mfu"] is None else f"{100 * result['mfu']:.1f}%"
    return (
        f"{result['case']:10s} {result['rows_per_step']} rows x {result['tokens_per_step']} tokens/step  "
        f"{result['tokens_per_s']:9.0f} tokens/s  peak {peak}  MFU {mfu}  | {result['planner']}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-config", type=Path, default=MODEL_CONFIG)
    parser.add_argument("--num-layers", type=int, default=None, help="decoder layers (default: the config's, 32)")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when visible)")
    parser.add_argument("--gpu", default=None, help="the planner's GPU name (default: the detected one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda: no CUDA device is visible; use --device cpu for the smoke test.")
    model_config = AutoConfig.from_pretrained(args.model_config)
    if args.num_layers is not None:
        model_config.num_hidden_layers = args.num_layers
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        folder = Path(tmp)
        # The planner reads the same architecture, layer count included.
        args.planner_model_config = folder / "config.json"
        model_config.to_json_file(args.planner_model_config)
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (fp32, 32-true)"
        print(
            f"[gpu_check] {where}; {model_config.num_hidden_layers} layers of {args.model_config.name}; "
            f"max_length {args.max_length}; {args.warmup} warm-up + {args.steps} timed steps",
            flush=True,
        )
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        print(f"[gpu_check] base: {write_base(model_config, folder / 'base', device, dtype)}", flush=True)
        results = []
        for name in args.cases:
            result = run_case(study_case(name), args, model_config, device, folder / "base", folder / "exports")
            print(describe_result(result), flush=True)
            results.append(result)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
