"""Predicted peak accelerator memory of one training step, term by term.

Notation: ``h`` hidden, ``i`` MLP width, ``q = heads * head_dim``, ``kv = kv_heads * head_dim``, ``L`` layers,
``V`` vocabulary, ``b`` bytes of the compute dtype (2 for bf16, 4 for fp32), ``T`` tokens in the batch and
``R`` response positions (where the LM head runs, ``response_forward``). The batch is the worst case the
config allows: ``rows = batch_size`` (x2 for preference pairs: chosen + rejected), every row ``max_length``
tokens, ``T = rows * max_length`` (packed or padded alike) and ``R = T - rows`` (a prompt of one token).

Persistent (whole run):

* base weights: every parameter in the weight dtype (``dtype: auto`` -> the precision rule: the compute dtype
  for a frozen LoRA base, fp32 for weights trained under mixed precision); 4-bit: the projections in NF4,
  :func:`nf4_bytes`, embeddings, LM head and norms in the compute dtype;
* LoRA: ``r * (in + out)`` per targeted projection per layer, fp32 (peft keeps adapters in fp32);
  DPO on a 4-bit base also holds the SFT adapter, frozen, stacked;
* gradients: one per trained weight, in its dtype; AdamW: ``m`` and ``v`` in the trained weights' dtype
  (fp32). No separate fp32 master copy: under ``bf16-mixed`` Lightning keeps the trained weights themselves in
  fp32 (they are the master) and autocast makes bf16 copies for the matmuls, which the backward pass keeps:
  ``trainable * b``, counted as "autocast weight copies";
* reference: ``separate`` a second copy of the frozen weights; ``adapter`` nothing; ``precomputed`` nothing on
  the accelerator (a cache of two fp32 log-probs per pair on disk and in host memory).

Per step, what autograd saves per token per decoder layer (checked tensor by tensor against
``torch.autograd.graph.saved_tensors_hooks`` in tests/planner/test_memory.py):

* each RMSNorm: its fp32 input or fp32 upcast, ``4h``, plus ``rsqrt`` (4 bytes);
* attention: q and k after RoPE, v, the output (``b(2q + 2kv)``), and the log-sum-exp (``4 * heads``);
* MLP: gate, up and ``silu(gate)``: ``3bi``;
* the inputs of the projections whose weights need a gradient. A frozen projection (or a 4-bit one) saves no
  input. A LoRA saves its own input copy per projection (``b * in``) when dropout is on, or when peft casts
  the input to the adapter's fp32 (mixed precision); with neither, projections that read the same tensor
  (q/k/v, gate/up) share it. Dropout adds its mask (1 byte per element on CUDA, the input's dtype on a CPU);
  the first layer's input carries no gradient (frozen embeddings), so its first norm and q/k/v masks are not
  saved. The adapter's ``A`` output: ``r`` values per projection;
* once per token: RoPE's cos and sin (``2 * head_dim * b``) and the final norm (``4h``).

With gradient checkpointing (non-reentrant, per decoder layer) only each checkpointed layer's input is saved
(``h`` per layer in the residual stream's dtype) and one layer at a time is recomputed in the backward pass. The
last layer is not checkpointed unless ``checkpoint_last_layer`` (``lightning_modules.decoder_layers``): it keeps its
activations, and in the backward pass it is the layer whose activations are live.

The peak is the largest of three moments of the step:

1. end of forward / start of backward: all saved activations plus the logits phase, ``12 R V`` bytes (the
   logits in the compute dtype, their fp32 copy saved for the log-softmax, and the fp32 and compute-dtype
   gradients the head's backward builds; 4 + 4 + 4 for fp32 logits, 2 + 4 + 4 + 2 for bf16);
2. a decoder layer's backward: its saved activations (recomputed when checkpointing) and its gradients,
   about ``3bi + 8h`` per token, plus for 4-bit the largest projection dequantised (``b * in * out``);
3. DPO with a live reference (``separate`` / ``adapter``): the reference's no-grad forward, which the module runs
   before the policy's (``DPOModule._shared_step``), so with nothing of the step's own beside it: its logits and
   fp32 softmax, ``(b + 8) R V``, and one layer's projections.

Framework overhead is added on top (:mod:`planner.devices`): the CUDA context and workspaces, and the caching
allocator's fragmentation as a share of activations and logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from common.precision import PrecisionChoice, resolve_dtype, resolve_precision
from planner.devices import Device
from planner.settings import Lora, PlannedRun
from planner.shapes import Architecture

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LORA_BYTES = 4  # peft's autocast_adapter_dtype: adapters in fp32 whatever the base
NF4_BLOCK = 64
NF4_NESTED_BLOCK = 256
LOGITS_BYTES_PER_ENTRY = 12
GROUPS = (  # projections that read the same input tensor
    ("attention input", ("q_proj", "k_proj", "v_proj")),
    ("attention output", ("o_proj",)),
    ("MLP input", ("gate_proj", "up_proj")),
    ("MLP product", ("down_proj",)),
)


def nf4_bytes(num_weights: int, double_quant: bool = True) -> int:
    """Bytes of one weight matrix quantised by bitsandbytes to NF4 (QLoRA, Dettmers et al. 2023).

    Two 4-bit codes per byte, and one scale (absmax) per block of 64 weights: fp32 without double
    quantisation (0.5 bit per weight); with it (the project's setting), the scales are themselves quantised to
    8 bits with one fp32 scale per 256 of them, plus a 256-entry fp32 code book per matrix (~0.127 bit per
    weight). Plus the 16-entry NF4 code book and the offset.
    """
    blocks = math.ceil(num_weights / NF4_BLOCK)
    packed = math.ceil(num_weights / 2)
    nf4_code = 16 * 4
    if not double_quant:
        return packed + 4 * blocks + nf4_code
    return packed + blocks + 4 * math.ceil(blocks / NF4_NESTED_BLOCK) + 256 * 4 + 4 + nf4_code


@dataclass(frozen=True)
class Dtypes:
    """How the run holds its numbers, decided by the project's precision rule for the target device."""

    precision: PrecisionChoice
    compute_bytes: int  # b
    base_bytes: int  # the frozen (or, without LoRA, trained) weights
    trained_bytes: int
    mixed: bool

    @classmethod
    def of(cls, settings: PlannedRun, device: Device) -> Dtypes:
        choice = resolve_precision(settings.precision, device.hardware)
        base = DTYPE_BYTES[resolve_dtype(settings.dtype, choice, frozen=settings.lora is not None)]
        trained = LORA_BYTES if settings.lora is not None else base
        return cls(choice, DTYPE_BYTES[choice.compute_dtype], base, trained, choice.precision.endswith("-mixed"))


@dataclass(frozen=True)
class Batch:
    """The worst-case batch of one training step on one device."""

    rows: int
    tokens: int  # T
    response_positions: int  # R

    @classmethod
    def of(cls, settings: PlannedRun) -> Batch:
        rows = settings.batch_size * settings.rows_per_example
        tokens = rows * settings.max_length
        return cls(rows, tokens, tokens - rows)


@dataclass
class MemoryPlan:
    """The predicted peak and its parts (bytes).

    Attributes:
        persistent: weights, adapters, gradients, optimiser states, reference copy (held all run).
        step: what the peak moment of the step adds (activations, logits, transients).
        peak_moment: which moment of the step is the peak.
        overhead: framework memory outside tensors (CUDA context, allocator fragmentation).
        notes: one line per assumption worth reading next to the figures.
        activations_checkpointed / activations_full: saved activations with and without gradient
            checkpointing, whichever the config uses (both shown).
        moments: what each candidate moment of the step adds (``step`` is the largest).
    """

    persistent: dict[str, int]
    step: dict[str, int]
    peak_moment: str
    overhead: dict[str, int]
    activations_checkpointed: int
    activations_full: int
    batch: Batch
    dtypes: Dtypes
    device: Device
    moments: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def allocated_bytes(self) -> int:
        """Tensor memory at the peak: comparable with ``torch.cuda.max_memory_allocated``."""
        return sum(self.persistent.values()) + sum(self.step.values())

    @property
    def peak_bytes(self) -> int:
        """What must fit in the device's memory."""
        return self.allocated_bytes + sum(self.overhead.values())

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.device.memory_bytes


def base_weight_bytes(arch: Architecture, settings: PlannedRun, dtypes: Dtypes) -> int:
    """The frozen (or fully trained) model's weights; a reward model has a 1-wide score head, no LM head."""
    head = 0 if settings.stage == "reward" else arch.head_params
    unquantised = arch.embedding_params + head + arch.norm_params
    if settings.load_in_4bit:
        per_layer = sum(nf4_bytes(n_in * n_out) for n_in, n_out in arch.linear_shapes().values())
        return arch.layers * per_layer + unquantised * dtypes.compute_bytes
    score = 4 * arch.hidden if settings.stage == "reward" else 0
    return (arch.body_linear_params + unquantised) * dtypes.base_bytes + score


def trainable_params(arch: Architecture, settings: PlannedRun) -> int:
    if settings.lora is not None:
        return arch.lora_params(settings.lora)
    head = arch.hidden if settings.stage == "reward" else arch.head_params
    return arch.body_linear_params + arch.embedding_params + head + arch.norm_params


def layer_activation_bytes(
    arch: Architecture,
    lora: Lora | None,
    dtypes: Dtypes,
    device: Device,
    input_grad: bool = True,
    frozen_adapter: Lora | None = None,
) -> int:
    """Bytes autograd saves per token in one decoder layer (see the module docstring).

    Args:
        input_grad: the layer's input needs a gradient (false for the first layer over frozen embeddings).
        frozen_adapter: a stacked adapter that is not trained (DPO's SFT adapter on a 4-bit base): only its
            dropout masks are saved.
    """
    b, h, i = dtypes.compute_bytes, arch.hidden, arch.intermediate
    norm = 4 * h + 4
    saved = norm if input_grad else 0  # input_layernorm
    saved += b * (2 * arch.q_width + 2 * arch.kv_width) + 4 * arch.heads  # q, k (RoPE'd), v, output; lse
    saved += norm  # post_attention_layernorm: its input is the residual after attention, which needs a grad
    saved += 3 * b * i  # gate, up, silu(gate)
    widths = {name: n_in for name, (n_in, _) in arch.linear_shapes().items()}
    # peft casts a LoRA's input to the adapter's fp32 when they differ; autocast then casts it back to b.
    cast = dtypes.mixed or b != LORA_BYTES
    copy_bytes = b if dtypes.mixed else LORA_BYTES
    mask_bytes = device.dropout_mask_bytes or (LORA_BYTES if cast else b)
    for group, names in GROUPS:
        grad_in = input_grad or group != "attention input"
        width = widths[names[0]]
        if lora is None:
            saved += b * width  # trained projections share their saved input
            continue
        targeted = [name for name in names if name in lora.target_modules]
        if lora.dropout > 0:
            saved += len(targeted) * width * (copy_bytes + (mask_bytes if grad_in else 0))
        elif cast:
            saved += len(targeted) * width * copy_bytes
        elif targeted:
            saved += b * width
        saved += len(targeted) * lora.r * copy_bytes  # the A output, input of B
        if frozen_adapter is not None and frozen_adapter.dropout > 0 and grad_in:
            saved += sum(name in frozen_adapter.target_modules for name in names) * width * mask_bytes
    if lora is None:
        saved += 2 * b * h  # trained norm weights: each norm also saves its normalised output
    return saved


def per_token_extra_bytes(arch: Architecture, dtypes: Dtypes) -> int:
    """Saved once per token outside the layers: RoPE cos and sin, the final norm."""
    return 2 * arch.head_dim * dtypes.compute_bytes + 4 * arch.hidden + 4


def saved_activation_bytes(
    arch: Architecture,
    settings: PlannedRun,
    dtypes: Dtypes,
    device: Device,
    checkpointing: bool,
    tokens: int,
    frozen: Lora | None = None,
) -> int:
    """Activations saved for the backward pass over ``tokens`` tokens, all layers (``frozen``: a stacked
    adapter that is not trained)."""
    full_layer = layer_activation_bytes(arch, settings.lora, dtypes, device, True, frozen)
    if checkpointing:
        per_token = checkpoint_inputs_bytes(arch, settings, dtypes) + per_token_extra_bytes(arch, dtypes)
        if not settings.checkpoint_last_layer:  # the last layer keeps its activations
            kept_grad = settings.lora is None or arch.layers > 1  # the first layer's input has no gradient in a LoRA
            per_token += layer_activation_bytes(arch, settings.lora, dtypes, device, kept_grad, frozen)
        return tokens * per_token
    first_grad = settings.lora is None  # trained embeddings give the first layer's input a gradient
    first = layer_activation_bytes(arch, settings.lora, dtypes, device, first_grad, frozen)
    per_token = first + (arch.layers - 1) * full_layer + per_token_extra_bytes(arch, dtypes)
    return tokens * per_token


def checkpoint_inputs_bytes(arch: Architecture, settings: PlannedRun, dtypes: Dtypes) -> int:
    """Per token: the inputs the checkpointed layers keep (in the residual stream's dtype)."""
    residual = dtypes.base_bytes if settings.lora is None else dtypes.compute_bytes
    return settings.checkpointed_layers(arch.layers) * residual * arch.hidden


def plan_memory(
    arch: Architecture, settings: PlannedRun, device: Device, sft_adapter: Lora | None = None
) -> MemoryPlan:
    """The predicted peak of one training step of ``settings`` on ``device`` (per device when sharded).

    Args:
        sft_adapter: the SFT LoRA that DPO stacks frozen on a 4-bit base (``None``: assumed the shape of the
            DPO adapter).
    """
    dtypes = Dtypes.of(settings, device)
    batch = Batch.of(settings)
    notes: list[str] = []
    shards = settings.devices if settings.fsdp else 1
    trainable = trainable_params(arch, settings)
    stacked = settings.stacked_sft_adapter and settings.lora is not None
    if stacked and sft_adapter is None:
        sft_adapter = settings.lora
        notes.append("the stacked SFT adapter is assumed to have the DPO adapter's shape")
    frozen = sft_adapter if stacked else None

    base = base_weight_bytes(arch, settings, dtypes)
    frozen_adapter = arch.lora_params(sft_adapter) * LORA_BYTES if stacked else 0
    persistent = {
        "base weights": base // shards,
        "frozen SFT adapter": frozen_adapter,
        "LoRA weights (trained)": trainable * LORA_BYTES if settings.lora is not None else 0,
        "gradients": trainable * dtypes.trained_bytes // shards,
        "AdamW m + v": 2 * trainable * dtypes.trained_bytes // shards,
        "reference model": 0,
    }
    if settings.stage == "dpo" and settings.reference == "separate":
        persistent["reference model"] = (base + frozen_adapter) // shards
    if settings.fsdp and settings.devices > 1:
        gathered_bytes = dtypes.compute_bytes if dtypes.mixed else dtypes.base_bytes
        persistent["FSDP gathered layers (2)"] = 2 * arch.layer_linear_params * gathered_bytes
        notes.append(f"FSDP: weights, gradients and AdamW states sharded over {settings.devices} devices")
    elif settings.devices > 1:
        persistent["DDP gradient buckets"] = trainable * dtypes.trained_bytes

    recast = dtypes.mixed and dtypes.trained_bytes != dtypes.compute_bytes
    autocast_copies = trainable * dtypes.compute_bytes if recast else 0
    tokens, responses = batch.tokens, batch.response_positions
    with_ckpt = saved_activation_bytes(arch, settings, dtypes, device, True, tokens, frozen)
    without_ckpt = saved_activation_bytes(arch, settings, dtypes, device, False, tokens, frozen)
    saved = with_ckpt if settings.gradient_checkpointing else without_ckpt
    vocab = 1 if settings.stage == "reward" else arch.vocab
    logits = LOGITS_BYTES_PER_ENTRY * responses * vocab
    b = dtypes.compute_bytes
    layer_transient = tokens * (3 * b * arch.intermediate + 8 * arch.hidden)
    if settings.load_in_4bit:
        layer_transient += max(n_in * n_out for n_in, n_out in arch.linear_shapes().values()) * b
    recomputed, saved_in_backward = 0, saved
    if settings.gradient_checkpointing:
        # The layer in its backward: recomputed, or the last one's kept activations (then not counted twice).
        recomputed = tokens * layer_activation_bytes(arch, settings.lora, dtypes, device, True, frozen)
        inputs = checkpoint_inputs_bytes(arch, settings, dtypes) + per_token_extra_bytes(arch, dtypes)
        saved_in_backward = tokens * inputs

    moments = {
        "end of forward (activations + logits)": {
            "autocast weight copies": autocast_copies,
            "activations (saved)": saved,
            "logits (response positions)": logits,
        },
        "decoder layer backward": {
            "autocast weight copies": autocast_copies,
            "activations (saved)": saved_in_backward,
            "one layer recomputed": recomputed,
            "layer backward buffers": layer_transient,
        },
    }
    if settings.stage == "dpo" and settings.reference in ("separate", "adapter"):
        # Before the policy's forward: none of the policy's activations or logits are alive yet.
        moments["live reference forward"] = {
            "autocast weight copies": autocast_copies,
            "reference forward (logits, softmax)": (b + 8) * responses * vocab
            + tokens * b * (2 * arch.q_width + 2 * arch.kv_width + 4 * arch.intermediate),
        }
    peak_moment = max(moments, key=lambda name: sum(moments[name].values()))
    step = {name: value for name, value in moments[peak_moment].items() if value}
    short_lived = sum(value for name, value in step.items() if name != "autocast weight copies")
    overhead = {
        "CUDA context and workspaces": device.fixed_overhead_bytes,
        "allocator fragmentation": int(device.fragmentation * short_lived),
    }
    if settings.stage == "dpo" and settings.reference == "precomputed":
        notes.append("reference: precomputed, a cache of 2 fp32 log-probs per pair on disk / host, none on the device")
    return MemoryPlan(
        persistent={k: v for k, v in persistent.items() if v or k == "reference model"},
        step=step,
        peak_moment=peak_moment,
        overhead={k: v for k, v in overhead.items() if v},
        activations_checkpointed=with_ckpt,
        activations_full=without_ckpt,
        batch=batch,
        dtypes=dtypes,
        device=device,
        moments=moments,
        notes=notes,
    )
