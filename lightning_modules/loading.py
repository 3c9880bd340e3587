"""Loading tokenizers and causal LMs by Hub id or local path, with optional 4-bit and LoRA.

The same ``from_pretrained`` calls load ``mistralai/Mistral-7B-v0.1`` and the embedded tiny model
built by ``scripts/build_tiny_model.py``: nothing here knows which one it is given.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
import yaml
from packaging.version import Version
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    PreTrainedModel,
)

from common.errors import ConfigError, ModelLoadError, QuantizationUnavailableError
from common.precision import AUTO, DTYPES, resolve_dtype
from common.provenance import hub_access_error, is_local, resolve_revision, source_record
from common.settings import LoadSettings, LoraSettings
from lightning_modules.merging import merge_lora

BITSANDBYTES_MIN_VERSION = "0.46.1"
"""The oldest bitsandbytes that runs QLoRA on the CPU as well as on CUDA. Its CPU NF4 kernels (quantise,
dequantise, 4-bit matmul) first shipped in 0.46.0 (bitsandbytes PR #1602, "Add simple op implementations for
CPU"), and transformers 5 refuses any bitsandbytes older than 0.46.1. Verified on this project's CPU:
tests/lightning_modules/test_qlora.py passes with 0.46.1 and with 0.50.2. (The docs call CPU support official
from 0.48.0.)"""


def check_model_source(name_or_path: str) -> None:
    """Fail early, and readably, when a local path is not a saved model."""
    path = Path(name_or_path)
    if is_local(name_or_path, "model") and not (path / "config.json").is_file():
        if (path / "adapter_config.json").is_file():
            return
        hint = " Build the tiny base with `make tiny`." if "tiny" in name_or_path else ""
        raise ModelLoadError(
            f"{name_or_path}: not a model folder (no config.json). Expected a folder written by "
            f"save_pretrained, or a Hub id such as mistralai/Mistral-7B-v0.1.{hint}"
        )


def four_bit_device() -> str:
    """Where a 4-bit model is loaded and computes: this process's CUDA GPU when one is visible, else the CPU.

    bitsandbytes quantises while the weights load, onto the device named here, and the module loads them when it is
    built: before Lightning's strategy has set each process's GPU (``torch.cuda.set_device``). So
    ``torch.cuda.current_device()`` is 0 in every process at that point, and under DDP every rank would quantise onto
    ``cuda:0``. The launcher's ``LOCAL_RANK`` (Lightning's, torchrun's) says which GPU is this process's, as
    Lightning itself maps it with ``devices: N``; with an explicit device list (``devices: [2, 3]``) restrict the
    visible GPUs with ``CUDA_VISIBLE_DEVICES=2,3`` instead.

    Raises:
        ConfigError: ``LOCAL_RANK`` names a GPU that is not visible.
    """
    if not torch.cuda.is_available():
        return "cpu"
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is None:
        return f"cuda:{torch.cuda.current_device()}"
    count = torch.cuda.device_count()
    if not 0 <= int(local_rank) < count:
        raise ConfigError(
            f"load.load_in_4bit: this process is LOCAL_RANK={local_rank}, but {count} CUDA GPU(s) are visible; "
            "run one process per visible GPU (trainer.devices at most the GPU count)."
        )
    return f"cuda:{int(local_rank)}"


def check_bitsandbytes(device: str) -> str:
    """The installed bitsandbytes version, once it is known to run 4-bit NF4 on ``device``.

    Raises:
        QuantizationUnavailableError: bitsandbytes is missing, older than :data:`BITSANDBYTES_MIN_VERSION`,
            or has no kernels for the type of ``device``.
    """
    try:
        installed = version("bitsandbytes")
    except PackageNotFoundError:
        installed = None
    if installed is None or Version(installed) < Version(BITSANDBYTES_MIN_VERSION):
        found = "it is not installed" if installed is None else f"found {installed}"
        raise QuantizationUnavailableError(
            f"load.load_in_4bit: true needs bitsandbytes>={BITSANDBYTES_MIN_VERSION} (4-bit NF4 on the CPU and on "
            f"CUDA); {found}. Install it with pip install 'bitsandbytes>={BITSANDBYTES_MIN_VERSION}', or set "
            "load.load_in_4bit: false to load 16/32-bit weights."
        )
    import bitsandbytes  # imported only here: 4-bit loading is its only use

    device_type = torch.device(device).type
    supported = getattr(bitsandbytes, "supported_torch_devices", set())
    if device_type not in supported:
        raise QuantizationUnavailableError(
            f"load.load_in_4bit: true on {device_type}: bitsandbytes {installed} has 4-bit kernels only for "
            f"{', '.join(sorted(supported)) or 'no device'}. Set load.load_in_4bit: false, or run on one of those."
        )
    return installed


def quantization_config(load_in_4bit: bool, compute_dtype: str = AUTO):
    """The QLoRA 4-bit NF4 config (Dettmers et al. 2023, https://arxiv.org/abs/2305.14314), or ``None``.

    ``compute_dtype`` is the dtype the dequantised weights are multiplied in: the run's compute dtype, which
    ``auto`` takes from the precision rule (``common.precision``: float32 on a CPU without native bf16,
    bfloat16 where bf16 is native).

    Raises:
        QuantizationUnavailableError: see :func:`check_bitsandbytes`.
    """
    if not load_in_4bit:
        return None
    check_bitsandbytes(four_bit_device())
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",  # the one 4-bit type the CPU kernels of bitsandbytes 0.46 know
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=DTYPES[resolve_dtype(compute_dtype)],
    )


def keep_4bit_layout(model: torch.nn.Module) -> None:
    """Keep every 4-bit layer on bitsandbytes' dequantise-then-matmul path, in the compute dtype, in every mode.

    On a CPU with AVX512_BF16, bitsandbytes (0.49 and later) repacks a ``Linear4bit``'s weights in place the
    first time the layer runs in eval mode without gradients (a validation step, a frozen reference, evaluation)
    and from then on multiplies them in a fused bf16 kernel, in training mode too. That kernel ignores the
    compute dtype and has no backward pass. Measured with bitsandbytes 0.50.2 on an AMD EPYC with AVX512_BF16,
    fp32 compute, the tiny base: eval logits differed from training-mode logits by 0.05, and after one no-grad
    eval forward the next backward left 16 of 24 LoRA matrices without a gradient. With the repacking off (it
    only speeds up inference on such CPUs), training, validation, the DPO reference and evaluation compute a
    4-bit layer identically.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def load_causal_lm(
    name_or_path: str,
    *,
    dtype: str = "auto",
    attn_implementation: str | None = "sdpa",
    trust_remote_code: bool = False,
    load_in_4bit: bool = False,
    revision: str | None = None,
    num_labels: int | None = None,
) -> PreTrainedModel:
    """Load a causal LM by Hub id or local path.

    Args:
        name_or_path: Hub id (``mistralai/Mistral-7B-v0.1``) or a folder written by ``save_pretrained``.
        dtype: weight dtype (``float32``, ``bfloat16``, ``float16``), or ``auto``: the compute dtype that
            ``precision: auto`` picks on this machine (``common.precision``), as for frozen weights.
        attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2``.
        trust_remote_code: run modelling code shipped with the checkpoint; off unless you trust it.
        load_in_4bit: quantise the frozen base to 4-bit NF4 (QLoRA), on the CUDA GPU when one is visible,
            else on the CPU (bitsandbytes >= 0.46.1).
        revision: the Hub branch, tag or commit to load (``None``: the default branch); ignored for a path.
        num_labels: ``None``: the causal LM; a number: the same body under a freshly initialised linear
            ``score`` head with that many outputs (``AutoModelForSequenceClassification``; a reward model: 1).
    """
    check_model_source(name_or_path)
    dtype = resolve_dtype(dtype)
    quant = quantization_config(load_in_4bit, compute_dtype=dtype)
    kwargs = {"dtype": DTYPES[dtype], "trust_remote_code": trust_remote_code, "revision": revision}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quant is not None:
        kwargs["quantization_config"] = quant
        # bitsandbytes quantises while loading, on the device that will compute.
        kwargs["device_map"] = {"": four_bit_device()}
    auto_class = AutoModelForCausalLM
    if num_labels is not None:
        auto_class, kwargs["num_labels"] = AutoModelForSequenceClassification, num_labels
    try:
        model = auto_class.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as error:
        denied = hub_access_error(error, name_or_path, "model")  # gated: transformers' OSError wraps GatedRepoError
        if denied is not None:
            raise denied from None
        raise ModelLoadError(f"{name_or_path}: could not be loaded as a causal LM: {error}") from None
    if quant is not None:
        keep_4bit_layout(model)
        # peft's prepare_model_for_kbit_training is not called. Of its three steps, freezing the base is done
        # by peft anyway (get_peft_model, PeftModel.from_pretrained); gradient checkpointing (on by default
        # there, with the reentrant variant's input-gradient hook) is the module's own gradient_checkpointing
        # setting, non-reentrant; and upcasting every weight that is not 4-bit to fp32 would break the
        # precision rule (frozen weights take the compute dtype) for a cost: Mistral-7B's embeddings, LM head
        # and norms are 262M weights, +0.5 GB in fp32 over bf16, beside ~3.6 GB of 4-bit layers. Under
        # `32-true` it would change nothing.
    return model


def training_load_settings(load: LoadSettings | None, lora: LoraSettings | None) -> LoadSettings:
    """The loading settings of a training module's ``load`` argument, with ``dtype: auto`` resolved.

    ``None`` is ``LoadSettings()``: float32 weights, ``sdpa``, no 4-bit, no remote code. ``auto`` is the compute
    dtype for a LoRA's frozen base, fp32 for trained weights (:func:`common.precision.resolve_dtype`).
    """
    load = load or LoadSettings()
    return replace(load, dtype=resolve_dtype(load.dtype, frozen=lora is not None))


def load_trainable_base(
    model_name_or_path: str, revision: str | None, **load_kwargs
) -> tuple[PreTrainedModel, str | None, dict]:
    """:func:`load_causal_lm` at one commit: the revision is resolved once, loaded, and recorded.

    Returns:
        ``(model, commit, provenance)``: the commit actually loaded (offline, the cached snapshot's, which
        transformers records on the config) and its :func:`common.provenance.source_record` record.
    """
    commit = resolve_revision(model_name_or_path, revision, "model")
    model = load_causal_lm(model_name_or_path, revision=commit, **load_kwargs)
    commit = getattr(model.config, "_commit_hash", None) or commit
    return model, commit, source_record(model_name_or_path, revision, commit, "model")


def add_lora(model: PreTrainedModel, lora: LoraSettings, adapter_name: str = "default", task_type: str = "CAUSAL_LM"):
    """Wrap ``model`` in a PEFT LoRA adapter; only the adapter's weights stay trainable.

    ``task_type="SEQ_CLS"`` (a sequence classifier) also trains a full copy of its ``score`` head (peft's
    ``modules_to_save``): a fresh head has nothing for a low-rank update to build on.
    """
    from peft import get_peft_model

    return get_peft_model(model, lora.peft_config(task_type), adapter_name=adapter_name)


def decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The transformer body and the LM head of a (possibly PEFT-wrapped) causal LM.

    Calling them apart lets the trainers project only response positions onto the vocabulary.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def read_export_info(path: str | Path) -> dict:
    """The ``export_info.json`` of an export folder (``{}`` when there is none)."""
    info = Path(path) / "export_info.json"
    return json.loads(info.read_text(encoding="utf-8")) if info.is_file() else {}


def training_config(path: str | Path) -> dict[str, Any]:
    """The training config saved beside an export (``training_config.yaml``, the run's LightningCLI config that
    the export callback copies there), or ``{}``."""
    config = Path(path) / "training_config.yaml"
    return (yaml.safe_load(config.read_text(encoding="utf-8")) or {}) if config.is_file() else {}


def check_sft_export(path: str) -> dict:
    """Read an SFT export folder and fail readably when it is missing or incomplete.

    Returns:
        ``{"kind": "lora_adapter" | "full_model", "base": base model id or path (adapters only),
        "base_revision": the Hub commit the SFT stage loaded the base at (``None``: a local base, or an
        export written before revisions were recorded)}``.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ModelLoadError(
            f"{path}: SFT export not found. Run the SFT stage first (its HFExportCallback writes this "
            "folder at the end of fit), or point model.model_name_or_path at an existing export."
        )
    if (folder / "adapter_config.json").is_file():
        missing = [name for name in ("adapter_model.safetensors",) if not (folder / name).is_file()]
        kind = "lora_adapter"
    else:
        missing = [] if (folder / "config.json").is_file() else ["config.json or adapter_config.json"]
        if not missing and not any(folder.glob("*.safetensors")):
            missing.append("*.safetensors weights")
        kind = "full_model"
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        missing.append("tokenizer.json")
    if missing:
        raise ModelLoadError(f"{path}: incomplete SFT export, missing {', '.join(missing)}. Re-run the SFT stage.")
    base = None
    if kind == "lora_adapter":
        base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    info = read_export_info(folder)
    base_revision = (info.get("provenance") or {}).get("model", {}).get("commit")
    if base_revision is not None and len(base_revision) != 40:  # "unresolved (offline)": load the cached one
        base_revision = None
    return {"kind": kind, "base": base, "base_revision": base_revision}


def load_sft_model(
    path: str,
    *,
    merge_adapter: bool = True,
    dtype: str = "auto",
    attn_implementation: str | None = "sdpa",
    trust_remote_code: bool = False,
    load_in_4bit: bool = False,
) -> PreTrainedModel:
    """Load the SFT stage's export as the starting point of DPO.

    A LoRA export is loaded onto its base and merged into the weights (``merge_adapter``), or kept
    as a frozen adapter named ``sft`` (needed when the base is 4-bit: NF4 weights cannot absorb it).
    A full-model export is loaded as it is. A merge is measured first and refused when rounding to the weights'
    dtype would lose the update (:func:`lightning_modules.merging.merge_lora`).
    """
    export = check_sft_export(path)
    if export["kind"] == "full_model":
        return load_causal_lm(
            path,
            dtype=dtype,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
            load_in_4bit=load_in_4bit,
        )
    if merge_adapter and load_in_4bit:
        # peft would dequantise, add the update and re-quantise: a model other than the one SFT trained.
        raise ConfigError(
            "A LoRA cannot be merged into a 4-bit base without re-quantising it (a different model): "
            "set model.merge_sft_adapter: false to keep it as a frozen stacked adapter."
        )
    from peft import PeftModel

    base = load_causal_lm(
        export["base"],
        dtype=dtype,
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
        load_in_4bit=load_in_4bit,
        revision=export["base_revision"],  # the very base the SFT adapter was trained on
    )
    model = PeftModel.from_pretrained(base, path, adapter_name=SFT_ADAPTER, is_trainable=False)
    if merge_adapter:
        fix = "Set model.merge_sft_adapter: false (stacked, frozen) or load float32 weights (load.dtype: float32)."
        return merge_lora(model, SFT_ADAPTER, f"the SFT adapter {path}", fix)[0]
    return model


SFT_ADAPTER = "sft"
DPO_ADAPTER = "dpo"
