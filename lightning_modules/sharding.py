"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for the causal LMs: :class:`FSDP2Strategy` and the sharding its
``configure_model`` applies (:func:`shard_causal_lm`). The project's one sharding path, on GPUs and CPUs alike.

Why FSDP2 and not Lightning's ``FSDPStrategy`` (FSDP1), which :func:`check_strategy` refuses everywhere: FSDP1 runs
on CUDA only, so nothing of it could be tested here, and a reading of it against this project found it wrong on
every point that matters for a LoRA study (Lightning 2.6, torch 2.13):

* clipping by norm, which the study configs use, raises ``MisconfigurationException`` in ``FSDPPrecision``
  (Lightning issue #19235);
* its wrapped parameters are named ``..._fsdp_wrapped_module...`` while its full state dict's keys are clean, so
  a lean checkpoint (trainable weights only, matched by name) would hold nothing, and a resume would restart the
  LoRA from its initialisation beside a restored optimiser and step;
* its export gathers with a collective that only rank 0 would enter (it holds no DTensors), a hang;
* its ``bf16-mixed`` plugin casts buffers, RoPE's ``inv_freq`` included, to bf16 (phase errors of radians at
  2,048 tokens) and reduces gradients in bf16;
* its flat parameters need one dtype per unit: fp32 frozen weights (28 GB for Mistral-7B) under a LoRA.

FSDP2 shards each parameter as a DTensor under its own name, keeps buffers and dtypes as loaded (a bf16 frozen
base beside fp32 LoRA weights), reduces fp32 gradients in fp32, and clips by norm through torch's DTensor-aware
``clip_grad_norm_``; ``fully_shard`` builds its device mesh on the CPU with gloo too, so all of it is tested here
with two processes (``tests/robustness/test_fsdp.py``).

The units, one all-gather each::

    decoder layer 0 .. L-1         one unit per layer (the class named by the model's ``_no_split_modules``)
    decoder body                   embeddings + final norm: a root of its own
    LM head                        a root of its own

Two roots because :meth:`~lightning_modules.causal_lm.CausalLMModule.response_forward` calls the decoder and the
head apart (the head sees only response positions); the causal LM's own ``forward`` never runs, so a unit on it
would never gather its weights.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from common.errors import ConfigError
from common.precision import Hardware
from lightning_modules.loading import decoder_and_head

FSDP2_CLASS_PATH = "lightning_modules.sharding.FSDP2Strategy"
METADATA_FILE = "meta.pt"  # beside the shards: what Lightning's ModelParallelStrategy saves besides weights


class ShardingError(ConfigError):
    """A model or strategy setting that the FSDP2 sharding here cannot serve."""


class FSDP2Strategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` for FSDP2 alone, on GPUs or CPUs: every process holds a shard of the
    model (no tensor parallelism), and a LoRA run's sharded checkpoint holds only the trained weights and resumes.

    The modules' ``configure_model`` applies the sharding (:func:`shard_causal_lm`). Lightning's own loader of a
    sharded checkpoint asks it for every weight of the model, frozen base included, and fails on a lean one
    (``Missing key in checkpoint state_dict``); :meth:`load_checkpoint` asks for the trained weights only.

    Args:
        save_distributed_checkpoint: ``True``: each rank writes its shard of the trained weights and optimiser
            state (a folder of ``__<rank>_0.distcp`` files and ``meta.pt``), nothing is gathered. ``False``: one
            file written by rank 0, after gathering the whole model there (frozen base included) at every save.
        process_group_backend: ``None``: ``nccl`` on GPUs, ``gloo`` on CPUs.
        timeout: how long a collective waits for the other ranks.
    """

    def __init__(
        self,
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
    ) -> None:
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
            timeout=timeout,
        )

    def setup_environment(self) -> None:
        # ModelParallelStrategy reads data_parallel_size "auto" as the number of nodes (tensor parallel inside each).
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    def load_checkpoint(self, checkpoint_path: str | Path, weights_only: bool | None = None) -> dict[str, Any]:
        path = Path(self.broadcast(checkpoint_path))
        if not (path.is_dir() and (path / METADATA_FILE).is_file()):
            return super().load_checkpoint(path, weights_only=weights_only)  # one full file
        # The trained weights only: CausalLMModule.on_save_checkpoint wrote no others, and the frozen base was
        # loaded from its source when the module was built.
        weights = {"state_dict": get_model_state_dict(self.model, options=StateDictOptions(ignore_frozen_params=True))}
        dcp.load(weights, checkpoint_id=path)
        set_model_state_dict(self.model, weights["state_dict"], options=StateDictOptions(strict=False))
        for index, optimizer in enumerate(self.optimizers):
            key = f"optimizer_{index}"  # the key ModelParallelStrategy.save_checkpoint writes
            state = {key: get_optimizer_state_dict(self.model, optimizer)}
            dcp.load(state, checkpoint_id=path)
            set_optimizer_state_dict(self.model, optimizer, optim_state_dict=state[key])
        # The rest (loops, callbacks, data module, hyper-parameters), through the trainer's checkpoint plugin.
        return self.checkpoint_io.load_checkpoint(path / METADATA_FILE, weights_only=weights_only)


def check_strategy(strategy: Any, hardware: Hardware) -> None:
    """Refuse, before any process starts, the strategies that are not implemented here: Lightning's ``FSDPStrategy``
    (FSDP1; see the module doc for why) and a ``ModelParallelStrategy`` other than :class:`FSDP2Strategy`; say what
    runs instead.

    Lightning raises a bare ``ValueError`` for the name ``fsdp`` off CUDA; on CUDA FSDP1 would start and fail or
    train wrongly later (module doc).

    Args:
        strategy: the trainer's ``strategy``: a registered name, a ``Strategy`` instance or class.
        hardware: the device the run computes on (``common.precision.detect_hardware``).
    """
    named = isinstance(strategy, str) and strategy in FSDPStrategy.get_registered_strategies()
    kind = strategy if isinstance(strategy, type) else type(strategy)
    if named or issubclass(kind, FSDPStrategy):
        name = strategy if named else kind.__name__
        raise ShardingError(
            f"trainer.strategy: {name} is Lightning's FSDPStrategy (FSDP1), which is not supported here (this run "
            f"computes on the {hardware.device}): it cannot clip gradients by norm, and its LoRA checkpoints and "
            f"bf16 buffers are wrong (lightning_modules/sharding.py). Shard with FSDP2: strategy: "
            f"{{class_path: {FSDP2_CLASS_PATH}}}, or, when the model fits one GPU, use strategy: ddp."
        )
    if issubclass(kind, ModelParallelStrategy) and not issubclass(kind, FSDP2Strategy):
        raise ShardingError(
            f"trainer.strategy: {kind.__name__} is not implemented here (its tensor parallelism needs a plan per "
            f"model, and Lightning cannot resume its sharded checkpoints of a LoRA); shard with FSDP2: strategy: "
            f"{{class_path: {FSDP2_CLASS_PATH}}}."
        )


def decoder_layer_classes(model: nn.Module) -> set[type[nn.Module]]:
    """The decoder-layer classes of a (possibly PEFT-wrapped) causal LM: those its ``_no_split_modules`` names
    and that occur in it (Mistral: ``MistralDecoderLayer``). Each instance becomes one FSDP unit."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    classes = {type(module) for module in base.modules() if type(module).__name__ in names}
    if not classes:
        raise ShardingError(
            f"FSDP: {type(base).__name__} names no decoder-layer class in _no_split_modules ({sorted(names)}); "
            "cannot choose the layers to shard."
        )
    return classes


def data_parallel_mesh(mesh: DeviceMesh) -> DeviceMesh:
    """The mesh to shard over: ``ModelParallelStrategy``'s ``data_parallel`` dimension, tensor parallelism off.

    :class:`FSDP2Strategy` always gives that; this guards a plain ``lightning.Trainer`` given another
    ``ModelParallelStrategy`` (the ``StudyTrainer`` refuses those, see :func:`check_strategy`).
    """
    if mesh["tensor_parallel"].size() != 1:
        raise ShardingError(f"trainer.strategy: tensor parallelism is not implemented here; use {FSDP2_CLASS_PATH}.")
    return mesh["data_parallel"]


def shard_causal_lm(model: nn.Module, mesh: DeviceMesh) -> None:
    """Apply ``fully_shard`` to every decoder layer, then to the decoder body and to the LM head (see module doc).

    Idempotent: Lightning calls ``configure_model`` again for each ``trainer`` entry point.
    """
    decoder, head = decoder_and_head(model)
    if isinstance(decoder, FSDPModule):
        return
    if any(head_param is decoder_param for head_param in head.parameters() for decoder_param in decoder.parameters()):
        raise ShardingError("FSDP: the model ties its LM head to its input embeddings; shard an untied model.")
    layers = tuple(decoder_layer_classes(model))
    for module in decoder.modules():
        if isinstance(module, layers):
            fully_shard(module, mesh=mesh)
    fully_shard(decoder, mesh=mesh)
    fully_shard(head, mesh=mesh)


def is_sharded(model: nn.Module) -> bool:
    """The model's weights are DTensor shards (FSDP2 or tensor parallel)."""
    return any(isinstance(param, DTensor) for param in model.parameters())


def gather_full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with every shard gathered whole, on rank 0's CPU (other ranks get ``{}``).

    A collective: every rank calls it. The frozen base is gathered too, because PEFT decides which weights an
    adapter export holds (the base LM head as well, when the LoRA targets it); for Mistral-7B that is about
    14.5 GB of bf16 in rank 0's CPU memory, once, at the end of fit.
    """
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)
