"""The study's shapes on one GPU: bf16 LoRA and 4-bit QLoRA, SFT and DPO steps of a Mistral-7B-shaped model, and
the numerical checks that only a GPU in bf16 can answer.

Builds a randomly initialised model with the architecture in ``configs/models/mistral-7b-v0.1.json`` (all 32
layers by default) on the device, in bf16, and writes it with ``save_pretrained`` (safetensors) into a temporary
folder, with a word-level tokenizer of the config's vocabulary (32000 placeholder tokens; the batches are random
token ids, so it never encodes anything, but an SFT export needs one). Nothing comes from the Hub. Each case then
loads that folder through the project's own public paths, as a study run does: ``SFTModule(folder, load=...)``
(``load_in_4bit``: transformers and bitsandbytes quantise to NF4 at load time, with the double quantisation and
compute dtype of ``lightning_modules.loading.quantization_config``), and for DPO an SFT export written by
``CausalLMModule.export_pretrained`` (the LoRA adapter of the SFT case of the same kind after its steps, else the
other kind's: both are the same LoRA on the same base; an untrained one when no SFT case ran), loaded by
``DPOModule(export, reference="precomputed", load=...)``, the SFT adapter merged or stacked as the module decides
when ``merge_sft_adapter`` is unset (stacked, always, on the 4-bit base). The modules (their LoRA, gradient
checkpointing, response-only LM head, losses) train a few steps under a ``lightning.Trainer`` at ``bf16-mixed``.

Per case it prints tokens/s, the peak of ``torch.cuda.max_memory_allocated`` over the timed steps, the MFU
against the dense bf16 peak of the detected GPU, and the memory planner's prediction (``python scripts/plan.py
plan``, which needs jsonargparse) beside it; "planner: not available" when it cannot run.

After the ``dpo-lora`` case's steps, on that same module (no second load, no second hash of the base):

* ``packed_vs_padded``: the summed response log-probs (``DPOModule.sequence_stats``) of rows of different lengths,
  once packed into one ``(1, N)`` row (the packed SDPA path the study trains with) and once right-padded
  ``(B, T)`` with an ``attention_mask`` (stock SDPA), as ``datamodules.collate.build_batch`` builds both; the
  largest difference per row.
* ``attention_kernels``: which SDPA backend ran (flash, efficient, cudnn, math), read from ``torch.profiler`` over
  one forward of each of those two batches.
* ``shared_prompt``: prefix sharing (``data.share_prompt``) on this device: the log-probs of UltraFeedback-shaped
  pairs with each prompt computed once and twice, how far apart, the best of three no-grad forwards of each, and
  the SDPA backends the shared layout's masked calls (a rejected response attending to its prompt) ran.
* ``merge``: the SFT export and this case's DPO adapter (its ``lora_B`` times ``--update-scale``: 8 steps at the
  study's lr 5e-7 move a weight by at most ~4e-6, a whole study run, ~3800 steps of a cosine schedule, by up to
  ~1e-3) loaded once on the base with ``load_sft_model(..., merge_adapter=False)`` and ``load_adapter``: the
  log-probs of SFT and SFT+DPO with the adapters stacked, then with them merged into the bf16 weights (peft's
  merge, as ``evaluation.variants`` merges), the largest merged-vs-stacked difference beside the DPO update's own
  effect, and the share of the DPO weight update the bf16 merge keeps (``lightning_modules.merging.merge_retention``,
  median and min over the LoRA modules).

Results go to one JSON (``--json``; ``gpu_check.sh``: ``benchmarks/results/gpu-check-<date>.json``) and a text
summary beside it (``.txt``), both rewritten after every phase, so a run stopped by a time limit keeps what it
measured. ``--budget-s`` starts no phase after that many seconds; the phases left are listed as skipped.

Time on one H100 at 32 layers, bf16, ``max_length`` 1024, 3 + 5 steps (estimates, not yet measured; the JSON has
every phase's seconds): the base ~15 s to build and 20-60 s to write (~14.5 GB; ``TMPDIR`` picks the disk); each
case's load 15-25 s (bf16) or 30-60 s (NF4 quantisation) plus one SHA-256 pass over the base, which
``common.provenance.source_record`` makes for the provenance record (the ``base:`` line prints the hash rate measured
on 1 GiB, e.g. ~1 GB/s: ~15 s); the steps 5-20 s; the planner ~5 s a case; the three checks ~40 s, most of it
the merge check's load (no hash). About 5 minutes for the default cases (``sft-lora``, ``dpo-lora``,
``dpo-qlora``), ~1.5 more with ``sft-qlora``.

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
import hashlib
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import lightning as L
import torch
import yaml
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from common.atomic import atomic_write_text
from common.constants import IGNORE_INDEX
from datamodules.collate import PreferenceCollator, build_batch
from datamodules.tokenizer import load_tokenizer
from lightning_modules.dpo import DPOModule
from lightning_modules.loading import DPO_ADAPTER, SFT_ADAPTER, LoadSettings, LoraSettings, load_sft_model
from lightning_modules.merging import RETAINED_WARNED_BELOW, merge_retention
from lightning_modules.optim import OptimizerSettings
from lightning_modules.sft import SFTModule

REPO = Path(__file__).resolve().parents[1]
MODEL_CONFIG = REPO / "configs" / "models" / "mistral-7b-v0.1.json"
STAGE_CONFIGS = {"sft": REPO / "configs" / "sft.yaml", "dpo": REPO / "configs" / "dpo.yaml"}
CASES = ("sft-lora", "sft-qlora", "dpo-lora", "dpo-qlora")
DEFAULT_CASES = ("sft-lora", "dpo-lora", "dpo-qlora")  # sft-qlora adds ~1.5 min to the ~5 of these on an H100
WHEEL_LIST = REPO / "benchmarks" / "gpu_wheels.txt"
CARRY_LIMIT_BYTES = 64 * 2**20  # what the device tool carries beside the repository (`carry`), wheels included
# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from the vendors' data sheets; matched in this order.
DENSE_BF16_PEAKS = (
    ("H200", 989.4e12),
    ("H100 PCIe", 756.0e12),
    ("H100", 989.4e12),  # SXM
    ("A100", 312.0e12),
    ("L40S", 362.05e12),
)
# The ATen ops behind F.scaled_dot_product_attention, one per backend; matched in this order (the CPU's flash op
# contains the CUDA one's name).
SDPA_OPS = (
    ("_scaled_dot_product_flash_attention_for_cpu", "flash (CPU)"),
    ("_scaled_dot_product_flash_attention", "flash"),
    ("_scaled_dot_product_efficient_attention", "efficient"),
    ("_scaled_dot_product_cudnn_attention", "cudnn"),
    ("_scaled_dot_product_attention_math", "math"),
    ("_scaled_dot_product_fused_attention_overrideable", "overrideable"),
)
ATTENTION_KERNEL_WORDS = ("flash", "fmha", "attention", "sdpa")  # device kernels worth naming beside the ops


def dense_bf16_peak(device_name: str) -> tuple[str, float] | None:
    """``(name, FLOP/s)`` of the GPU whose name ``device_name`` contains, or ``None`` (a CPU, an unknown GPU)."""
    for name, peak in DENSE_BF16_PEAKS:
        if name.lower() in device_name.lower():
            return name, peak
    return None


def bitsandbytes_version() -> str | None:
    """bitsandbytes' version when it imports here (the QLoRA cases need it), else ``None``."""
    try:
        import bitsandbytes
    except Exception:  # missing, or a build that cannot load its library on this machine
        return None
    return bitsandbytes.__version__


def versions() -> dict[str, str]:
    """The versions this check runs with (``absent`` for bitsandbytes when it does not import)."""
    import peft
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "lightning": L.__version__,
        "bitsandbytes": bitsandbytes_version() or "absent",
    }


# ---- the wheels carried to the GPU machine -------------------------------------------------------------------


@dataclass(frozen=True)
class Wheel:
    """One line of ``benchmarks/gpu_wheels.txt``: the requirement, the wheel's file name and its size in bytes."""

    requirement: str
    filename: str
    size: int


def read_wheel_list(text: str) -> list[Wheel]:
    """The wheels of a ``gpu_wheels.txt`` text (``#`` comments and blank lines skipped)."""
    wheels = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            requirement, filename, size = fields
            wheels.append(Wheel(requirement, filename, int(size)))
    return wheels


def wheel_problems(wheels: list[Wheel], folder: Path | None = None, limit: int = CARRY_LIMIT_BYTES) -> list[str]:
    """What is wrong with the listed wheels: a total over ``limit``; with ``folder``, a listed file missing there or
    of another size than listed (a new upload, a different platform tag), and wheels there that are not listed."""
    problems = []
    total = sum(wheel.size for wheel in wheels)
    if total > limit:
        problems.append(f"the wheels total {total / 2**20:.1f} MiB, over the {limit / 2**20:.0f} MiB carry limit")
    if folder is not None:
        for wheel in wheels:
            path = folder / wheel.filename
            if not path.is_file():
                problems.append(f"{path}: missing (run `make gpu-wheels`)")
            elif path.stat().st_size != wheel.size:
                problems.append(f"{path}: {path.stat().st_size} bytes, {WHEEL_LIST.name} says {wheel.size}")
        listed = {wheel.filename for wheel in wheels}
        problems += [
            f"{path}: not in {WHEEL_LIST.name}" for path in sorted(folder.glob("*.whl")) if path.name not in listed
        ]
    return problems


def check_wheels(folder: Path) -> int:
    """Print the listed wheels' sizes and every problem (:func:`wheel_problems`); the exit status."""
    wheels = read_wheel_list(WHEEL_LIST.read_text())
    for wheel in wheels:
        print(f"{wheel.size / 2**20:6.1f} MiB  {wheel.filename}")
    print(f"{sum(w.size for w in wheels) / 2**20:6.1f} MiB  total (carry limit {CARRY_LIMIT_BYTES / 2**20:.0f} MiB)")
    problems = wheel_problems(wheels, folder)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


# ---- the cases ------------------------------------------------------------------------------------------------


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

    QLoRA is for a 24-40 GB GPU, where the study turns gradient checkpointing back on (planner/README.md): its
    cases run with it whatever the config says, so they measure the run that fits there."""
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


def sha256_rate(folder: Path, sample_bytes: int = 2**30) -> float:
    """Bytes/s of SHA-256 over the first ``sample_bytes`` of the folder's largest file, read in the 1 MiB blocks of
    ``common.provenance.files_sha256``: what each module load's provenance record costs per byte of the base."""
    largest = max(folder.iterdir(), key=lambda path: path.stat().st_size)
    digest, done = hashlib.sha256(), 0
    start = time.perf_counter()
    with largest.open("rb") as handle:
        while done < sample_bytes and (block := handle.read(1 << 20)):
            digest.update(block)
            done += len(block)
    return done / (time.perf_counter() - start)


def write_base(model_config: AutoConfig, folder: Path, device: torch.device, dtype: torch.dtype) -> dict:
    """Build a randomly initialised causal LM of ``model_config`` on ``device`` in ``dtype`` and save it, with
    :func:`placeholder_tokenizer`, into ``folder``; what it cost."""
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
    rate = sha256_rate(folder)
    return {"build_s": built, "write_s": written, "bytes": size, "sha256_bytes_per_s": rate, "sha256_s": size / rate}


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


def export_module(module: L.LightningModule, folder: Path) -> None:
    """Write ``module``'s export (its LoRA adapter, the base's tokenizer, ``export_info.json``) into ``folder``, as
    ``callbacks.export.HFExportCallback`` does at the end of a run."""
    info = {"stage": type(module).__name__, "source_model": module.model_name_or_path, "provenance": module.provenance}
    module.export_pretrained(folder, tokenizer=load_tokenizer(module.model_name_or_path), info=info)


def sft_export_of(case: Case, base: Path, dtype: str, exports: Path) -> Path:
    """The SFT export a DPO ``case`` starts from: the one the SFT case of the same kind wrote in this run, else the
    other kind's (the same LoRA on the same base: the DPO case's steps and memory do not depend on which), else an
    untrained one (one more load and hash of ``base``)."""
    same = study_case(case.name.replace("dpo-", "sft-"))  # dpo-qlora -> sft-qlora
    for name in (same.name, "sft-qlora" if same.name == "sft-lora" else "sft-lora"):
        if (exports / name).is_dir():
            return exports / name
    module = make_sft_module(same, base, dtype)
    export_module(module, exports / same.name)
    del module
    return exports / same.name


def make_module(case: Case, base: Path, dtype: str, exports: Path) -> L.LightningModule:
    """The project's module for ``case``, loaded from the saved ``base`` through its public arguments.

    DPO starts from the SFT export, its LoRA merged or stacked frozen as ``DPOModule`` decides by default."""
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
        labels[0, row * max_length : row * max_length + prompt] = IGNORE_INDEX
    batch = {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": torch.arange(max_length).repeat(rows)[None],  # (1, N): restarts at 0 per row
        "row_lengths": torch.full((rows,), max_length),
        "num_loss_tokens": (labels != IGNORE_INDEX).sum(),
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
    response = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
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
    if importlib.util.find_spec("jsonargparse") is None:
        return "planner: not available (its CLI needs jsonargparse: see benchmarks/gpu_wheels.txt)"
    command = [
        sys.executable, str(REPO / "scripts" / "plan.py"), "plan",
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
    case: Case,
    args: argparse.Namespace,
    model_config: AutoConfig,
    device: torch.device,
    base: Path,
    exports: Path,
    after_fit: Callable[[L.LightningModule], None] | None = None,
) -> dict:
    """Load ``base`` into the case's module, train ``warmup + steps`` steps, measure; freed before the next case.

    An SFT case then writes its export, which the DPO cases start from; ``after_fit`` gets the trained module
    (on the device again: Lightning moves it to the CPU at the end of fit) before it is freed."""
    on_cuda = device.type == "cuda"
    layer_params, head_params = weight_counts(model_config)
    start = time.perf_counter()
    module = make_module(case, base, compute_dtype(device), exports)
    load_s = time.perf_counter() - start
    source = "the base" if case.stage == "sft" else f"the {Path(module.model_name_or_path).name} export"
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
    start = time.perf_counter()
    trainer.fit(module, datamodule=PreparedBatches(batch, args.warmup + args.steps))
    fit_s = time.perf_counter() - start
    if case.stage == "sft":
        export_module(module, exports / case.name)
    if after_fit is not None:
        after_fit(module.to(device))
    tokens = batch["input_ids"].numel() * args.steps
    flops = model_flops_per_step(model_config, layer_params, head_params, batch) * args.steps
    peak = dense_bf16_peak(torch.cuda.get_device_name(device)) if on_cuda else None
    result = {
        "case": case.name,
        "source": source,
        "rows_per_step": int(batch["row_lengths"].numel()),
        "tokens_per_step": int(batch["input_ids"].numel()),
        "tokens_per_s": tokens / timer.elapsed,
        "peak_bytes": timer.peak_bytes,
        "mfu": None if peak is None else flops / timer.elapsed / peak[1],
        "planner": planner_prediction(
            case, args.planner_model_config, args.max_length, args.gpu or (peak or [None])[0]
        ),
        "load_s": load_s,
        "fit_s": fit_s,
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


# ---- the checks on the trained DPO module ----------------------------------------------------------------------


def compute_dtype(device: torch.device) -> str:
    """The weights' dtype here: bf16 on a GPU, fp32 on the CPU (as ``32-true`` there)."""
    return "bfloat16" if device.type == "cuda" else "float32"


@contextmanager
def scoring(model: torch.nn.Module, device: torch.device):
    """Eval mode, no gradients, and the autocast of ``bf16-mixed`` on a GPU (none on the CPU: fp32)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            yield
    finally:
        model.train(was_training)


def comparison_rows(rows: int, max_length: int, vocab_size: int, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    """``rows`` examples of different lengths, ``max_length`` down in steps of ``max_length // (2 rows)``, the first
    half of each prompt (``-100`` labels): ``(input_rows, label_rows)`` for ``datamodules.collate.build_batch``."""
    generator = torch.Generator().manual_seed(seed)
    input_rows, label_rows = [], []
    for row in range(rows):
        length = max_length - row * (max_length // (2 * rows))
        ids = torch.randint(3, vocab_size, (length,), generator=generator).tolist()
        prompt = length // 2
        input_rows.append(ids)
        label_rows.append([IGNORE_INDEX] * prompt + ids[prompt:])
    return input_rows, label_rows


def packed_and_padded(input_rows: list[list[int]], label_rows: list[list[int]], pad_token_id: int) -> tuple[dict, dict]:
    """The same rows as the collator packs them ``(1, N)`` and as it right-pads them ``(B, T)``."""
    return (
        build_batch(input_rows, label_rows, pad_token_id, pack=True),
        build_batch(input_rows, label_rows, pad_token_id, pack=False),
    )


def on_device(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def row_logps(scorer: DPOModule, model: torch.nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
    """``(B,)`` summed response log-probs of each row (``DPOModule.sequence_stats``), in fp32 on the CPU."""
    with scoring(model, device):
        return scorer.sequence_stats(model, on_device(batch, device)).logps.float().cpu()


def packed_vs_padded(scorer: DPOModule, packed: dict, padded: dict, device: torch.device) -> dict:
    """The rows' log-probs packed (the packed SDPA path) and padded (stock SDPA with a mask), and how far apart."""
    packed_logps = row_logps(scorer, scorer.model, packed, device)
    padded_logps = row_logps(scorer, scorer.model, padded, device)
    difference = (packed_logps - padded_logps).abs()
    return {
        "rows": len(padded["input_ids"]),
        "row_lengths": padded["attention_mask"].sum(-1).tolist(),
        "packed_logps": packed_logps.tolist(),
        "padded_logps": padded_logps.tolist(),
        "max_abs_difference": float(difference.max()),
        "max_relative_difference": float((difference / padded_logps.abs().clamp(min=1e-6)).max()),
    }


def comparison_pairs(pairs: int, max_length: int, vocab_size: int, seed: int) -> list[dict]:
    """``pairs`` preference pairs shaped like UltraFeedback's (a prompt about a third of the row, two responses of
    different lengths, shorter pair after pair) as the preference DataModule tokenises them."""
    generator = torch.Generator().manual_seed(seed)

    def ids(n: int) -> list[int]:
        return torch.randint(3, vocab_size, (max(1, n),), generator=generator).tolist()

    step = max_length // (4 * pairs)
    return [
        {"prompt_ids": ids(max_length // 3 - i * step), "chosen_ids": ids(max_length // 2 - i * step),
         "rejected_ids": ids(max_length // 2 - 2 * i * step), "pair_index": i}
        for i in range(pairs)
    ]  # fmt: skip


def shared_vs_unshared(scorer: DPOModule, pairs: list[dict], device: torch.device, repeats: int = 3) -> dict:
    """Prefix sharing on this device: the rows' log-probs with each prompt once (``share_prompt``) and twice, how far
    apart, the SDPA backends the shared layout's masked calls ran, and the best of ``repeats`` no-grad forwards."""
    batches = {share: PreferenceCollator(0, pack=True, share_prompt=share)(pairs) for share in (False, True)}
    logps = {share: row_logps(scorer, scorer.model, batch, device) for share, batch in batches.items()}
    seconds = {}
    for share, batch in batches.items():
        batch, times = on_device(batch, device), []
        with scoring(scorer.model, device):
            for _ in range(repeats + 1):  # the first warms the kernels up
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                scorer.sequence_stats(scorer.model, batch)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - start)
        seconds[share] = min(times[1:])
    difference = (logps[True] - logps[False]).abs()
    return {
        "pairs": len(pairs),
        "tokens": {"unshared": batches[False]["input_ids"].shape[1], "shared": batches[True]["input_ids"].shape[1]},
        "max_abs_difference": float(difference.max()),
        "max_relative_difference": float((difference / logps[False].abs().clamp(min=1e-6)).max()),
        "forward_s": {"unshared": seconds[False], "shared": seconds[True]},
        "forward_speedup": seconds[False] / seconds[True],
        "attention": attention_kernels(scorer, {"shared": batches[True]}, device)["shared"],
    }


def sdpa_backends(names: Iterable[str]) -> list[str]:
    """The SDPA backends whose ATen op is among the profiler's event ``names`` (:data:`SDPA_OPS`), sorted."""
    found = set()
    for name in names:
        for op, backend in SDPA_OPS:
            if op in name:
                found.add(backend)
                break
    return sorted(found)


def attention_kernel_names(names: Iterable[str]) -> list[str]:
    """The device kernels among ``names`` that look like attention (:data:`ATTENTION_KERNEL_WORDS`), not ATen ops."""
    return sorted(
        {
            name
            for name in names
            if not name.startswith("aten::") and any(w in name.lower() for w in ATTENTION_KERNEL_WORDS)
        }
    )


def attention_kernels(scorer: DPOModule, batches: dict[str, dict], device: torch.device) -> dict:
    """Which SDPA backend ran in one forward of each batch, from ``torch.profiler``'s event names."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    found = {}
    for label, batch in batches.items():
        batch = on_device(batch, device)
        with torch.profiler.profile(activities=activities) as profile, scoring(scorer.model, device):
            scorer.sequence_stats(scorer.model, batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        names = {event.key for event in profile.key_averages()}
        found[label] = {"backends": sdpa_backends(names), "kernels": attention_kernel_names(names)[:8]}
    return found


def merge_check(
    scorer: DPOModule, sft_export: Path, dpo_export: Path, batch: dict, device: torch.device, update_scale: float
) -> dict:
    """SFT and SFT+DPO log-probs of ``batch`` with the adapters stacked, then merged into the weights' dtype.

    One load: the base with the SFT adapter (``load_sft_model(..., merge_adapter=False)``) and the DPO adapter
    (``load_adapter``; its ``lora_B`` times ``update_scale``), both stacked and active as ``evaluation.variants``
    stacks them; then SFT merged, then DPO merged (peft's merge, the arithmetic of ``merge_and_unload``), the DPO
    update's retained share measured just before (``lightning_modules.merging.merge_retention``)."""
    start = time.perf_counter()
    model = load_sft_model(str(sft_export), merge_adapter=False, dtype=compute_dtype(device))
    model.load_adapter(str(dpo_export), adapter_name=DPO_ADAPTER, is_trainable=False)
    model.to(device)
    load_s = time.perf_counter() - start
    with torch.no_grad():
        for name, param in model.named_parameters():
            if f".lora_B.{DPO_ADAPTER}." in name:
                param.mul_(update_scale)
    model.base_model.set_adapter([SFT_ADAPTER, DPO_ADAPTER])
    stacked = row_logps(scorer, model, batch, device)
    model.base_model.set_adapter(SFT_ADAPTER)
    stacked_sft = row_logps(scorer, model, batch, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft: "Already following adapters were merged" (the SFT one, on purpose)
        model.base_model.merge_adapter([SFT_ADAPTER])
        merged_sft = row_logps(scorer, model, batch, device)
        retention = merge_retention(model, DPO_ADAPTER)  # into the weights with SFT merged, as the merge below
        model.base_model.merge_adapter([DPO_ADAPTER])
    merged = row_logps(scorer, model, batch, device)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "update_scale": update_scale,
        "stacked_logps": stacked.tolist(),
        "merged_logps": merged.tolist(),
        "max_abs_merged_vs_stacked": float((merged - stacked).abs().max()),
        "max_abs_update_stacked": float((stacked - stacked_sft).abs().max()),
        "max_abs_update_merged": float((merged - merged_sft).abs().max()),
        "retention": {key: value for key, value in retention.summary().items() if key != "below_threshold"}
        | {"modules_below_threshold": len(retention.below(RETAINED_WARNED_BELOW))},
        "load_s": load_s,
    }


def dpo_checks(
    module: DPOModule, args: argparse.Namespace, vocab_size: int, device: torch.device, exports: Path, report: Report
) -> None:
    """The four checks on the trained ``dpo-lora`` module, each recorded in ``report`` as it finishes."""
    rows = 2 * study_case("dpo-lora").batch_size
    packed, padded = packed_and_padded(*comparison_rows(rows, args.max_length, vocab_size, seed=1), pad_token_id=0)
    report.record("packed_vs_padded", packed_vs_padded(module, packed, padded, device))
    report.record("attention_kernels", attention_kernels(module, {"packed": packed, "padded": padded}, device))
    pairs = comparison_pairs(study_case("dpo-lora").batch_size, args.max_length, vocab_size, seed=2)
    report.record("shared_prompt", shared_vs_unshared(module, pairs, device))
    if report.over_budget("merge"):
        return
    export_module(module, exports / "dpo-lora")
    report.record(
        "merge",
        merge_check(module, Path(module.model_name_or_path), exports / "dpo-lora", packed, device, args.update_scale),
    )


# ---- the report --------------------------------------------------------------------------------------------------


def versions_line(found: dict[str, str]) -> str:
    return " | ".join(f"{name} {value}" for name, value in found.items())


def section_lines(key: str, value: dict) -> list[str]:
    """The text summary of one section of the results (``key`` as in the JSON; a case for ``cases``)."""
    if key == "base":
        return [
            f"base: built in {value['build_s']:.1f} s, wrote {value['bytes'] / 1e9:.1f} GB in "
            f"{value['write_s']:.1f} s; "
            f"SHA-256 at {value['sha256_bytes_per_s'] / 1e9:.2f} GB/s: ~{value['sha256_s']:.0f} s per module load"
        ]
    if key == "cases":
        return [f"{describe_result(value)}  (load {value['load_s']:.1f} s, fit {value['fit_s']:.1f} s)"]
    if key == "packed_vs_padded":
        return [
            f"packed vs padded log-probs, {value['rows']} rows of {value['row_lengths']} tokens: largest difference "
            f"{value['max_abs_difference']:.3g} ({value['max_relative_difference']:.2g} relative)"
        ]
    if key == "attention_kernels":
        return [
            f"attention ({label}): SDPA {', '.join(seen['backends']) or 'op not seen'}; kernels {seen['kernels']}"
            for label, seen in value.items()
        ]
    if key == "shared_prompt":
        return [
            f"shared prompt vs unshared, {value['pairs']} pairs ({value['tokens']['shared']} tokens, not "
            f"{value['tokens']['unshared']}): largest log-prob difference {value['max_abs_difference']:.3g} "
            f"({value['max_relative_difference']:.2g} relative); forward {value['forward_speedup']:.2f}x faster; "
            f"SDPA {', '.join(value['attention']['backends']) or 'op not seen'}"
        ]
    if key == "merge":
        return [
            f"merge (DPO update x{value['update_scale']:g}): largest merged-vs-stacked log-prob difference "
            f"{value['max_abs_merged_vs_stacked']:.3g}; the update moves the log-probs by "
            f"{value['max_abs_update_stacked']:.3g} stacked, {value['max_abs_update_merged']:.3g} merged; the "
            f"{value['retention']['dtype']} merge keeps {value['retention']['retained_median']:.3f} of the weight "
            f"update (median of {value['retention']['modules']} modules, min {value['retention']['retained_min']:.3f})"
        ]
    raise KeyError(key)


SECTIONS = ("base", "packed_vs_padded", "attention_kernels", "shared_prompt", "merge")


def summary_lines(results: dict) -> list[str]:
    """The text summary of ``results`` (the JSON's content): versions, device, then a few lines per section."""
    lines = [versions_line(results["versions"]), f"device: {results['device']}; {results['settings']}"]
    if "base" in results:
        lines += section_lines("base", results["base"])
    for case in results["cases"]:
        lines += section_lines("cases", case)
    for key in SECTIONS[1:]:
        if key in results:
            lines += section_lines(key, results[key])
    lines += [f"skipped {item['phase']}: {item['reason']}" for item in results["skipped"]]
    lines.append(f"elapsed {results['elapsed_s']:.0f} s")
    return lines


class Report:
    """The run's results, rewritten to the JSON file (and the ``.txt`` summary beside it) after every phase."""

    def __init__(self, path: Path | None, budget_s: float | None, results: dict) -> None:
        self.path, self.budget_s = path, budget_s
        self.started = time.perf_counter()
        self.results = {**results, "cases": [], "skipped": [], "elapsed_s": 0.0}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def over_budget(self, phase: str) -> bool:
        """Whether ``phase`` must not start (``--budget-s`` spent); if so it is recorded as skipped."""
        if self.budget_s is None or self.elapsed() < self.budget_s:
            return False
        self.skip(phase, f"not started: {self.elapsed():.0f} s spent of --budget-s {self.budget_s:g}")
        return True

    def skip(self, phase: str, reason: str) -> None:
        print(f"[gpu_check] skipped {phase}: {reason}", flush=True)
        self.results["skipped"].append({"phase": phase, "reason": reason})
        self.save()

    def record(self, key: str, value: dict) -> None:
        if key == "cases":
            self.results["cases"].append(value)
        else:
            self.results[key] = value
        self.save()
        for line in section_lines(key, value):
            print(f"[gpu_check] {line}", flush=True)

    def save(self) -> None:
        self.results["elapsed_s"] = self.elapsed()
        if self.path is not None:
            atomic_write_text(self.path, json.dumps(self.results, indent=2))
            atomic_write_text(self.path.with_suffix(".txt"), "\n".join(summary_lines(self.results)) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-config", type=Path, default=MODEL_CONFIG)
    parser.add_argument("--num-layers", type=int, default=None, help="decoder layers (default: the config's, 32)")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument(
        "--cases", nargs="+", choices=CASES, default=list(DEFAULT_CASES),
        help="run in the order of CASES; QLoRA ones are skipped when bitsandbytes does not import",
    )  # fmt: skip
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when visible)")
    parser.add_argument("--gpu", default=None, help="the planner's GPU name (default: the detected one)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here (and a .txt summary beside)")
    parser.add_argument("--budget-s", type=float, default=None, help="start no phase after this many seconds")
    parser.add_argument("--update-scale", type=float, default=100.0, help="the merge check's DPO lora_B factor")
    parser.add_argument("--versions", action="store_true", help="print the versions this runs with, then exit")
    parser.add_argument("--check-wheels", type=Path, metavar="FOLDER", help="check FOLDER against gpu_wheels.txt")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.versions:
        print(versions_line(versions()))
        return {}
    if args.check_wheels is not None:
        sys.exit(check_wheels(args.check_wheels))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda: no CUDA device is visible; use --device cpu for the smoke test.")
    model_config = AutoConfig.from_pretrained(args.model_config)
    if args.num_layers is not None:
        model_config.num_hidden_layers = args.num_layers
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (fp32, 32-true)"
    settings = (
        f"{model_config.num_hidden_layers} layers of {args.model_config.name}; max_length {args.max_length}; "
        f"{args.warmup} warm-up + {args.steps} timed steps"
    )
    header = {"date": date.today().isoformat(), "versions": versions(), "device": where, "settings": settings}
    report = Report(args.json, args.budget_s, header)
    print(f"[gpu_check] {where}; {settings}", flush=True)
    cases = [name for name in CASES if name in args.cases]
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        folder = Path(tmp)
        # The planner reads the same architecture, layer count included.
        args.planner_model_config = folder / "config.json"
        model_config.to_json_file(args.planner_model_config)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        report.record("base", write_base(model_config, folder / "base", device, dtype))

        def checks(module: L.LightningModule) -> None:
            dpo_checks(module, args, model_config.vocab_size, device, folder / "exports", report)

        for name in cases:
            if name.endswith("qlora") and bitsandbytes_version() is None:
                report.skip(name, "bitsandbytes does not import here (benchmarks/gpu_wheels.txt)")
                continue
            if report.over_budget(name):
                continue
            after_fit = checks if name == "dpo-lora" else None
            result = run_case(
                study_case(name), args, model_config, device, folder / "base", folder / "exports", after_fit
            )
            report.record("cases", result)
    report.save()
    return report.results


if __name__ == "__main__":
    main()
