"""Our side: ``SFTModule`` / ``DPOModule`` with their DataModules under a Lightning Trainer.

The lever variants each undo one optimisation of the default (``ours``) through a public option: ``ours_padded``
(``pack=False``), ``ours_dense_packed`` (``packed_sdpa=False``), ``ours_unfused`` (``OptimizerSettings.fused``),
``ours_separate`` / ``ours_adapter`` (``reference``), ``ours_shared_prompt`` / ``ours_separate_shared_prompt``
(``share_prompt``: the one lever that adds an optimisation), ``ours_gc`` (``gradient_checkpointing``),
``ours_gc_every_layer`` (``checkpoint_last_layer``), ``ours_compiled`` (``compile_layers``), ``ours_fp32``
(the Trainer's precision), ``ours_same_order`` (TRL's default batches, for the same-training check).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L

from benchmarks.vs_trl.protocol import CpuWindow, Gate
from benchmarks.vs_trl.workload import lora_settings


class StepTimer(L.Callback):
    """Each training step between ``gate.begin()`` (batch in hand) and ``gate.end()`` (after the optimiser step);
    with a live reference, also the seconds of each step's reference forward (``reference_seconds``)."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.reference_seconds: list[float] = []
        self._in_step = 0.0

    def time_reference(self, module) -> None:
        """Wrap ``module.reference_logps`` so that each step's reference forward is timed."""
        import time

        reference_logps = module.reference_logps

        def timed(batch):
            start = time.perf_counter()
            try:
                return reference_logps(batch)
            finally:
                self._in_step += time.perf_counter() - start

        module.reference_logps = timed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._in_step = 0.0
        self.gate.begin()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if "row_lengths" in batch:
            lengths = batch["row_lengths"].tolist()
        else:
            lengths = batch["attention_mask"].sum(-1).tolist()
        loss_tokens = int((batch["labels"][:, 1:] != -100).sum())
        self.reference_seconds.append(self._in_step)
        self.gate.end(int(batch["num_real_tokens"]), loss_tokens, lengths)
        self.gate.log.losses.append(float(trainer.callback_metrics["train/loss"]))


class ReferencePassLoad(L.Callback):
    """The cores other processes kept busy while ``DPOModule`` precomputed its reference log-probs.

    The pass runs in the module's ``setup``; a callback's hook runs before the module's hook of the same name, so
    this window opens just before the pass (``setup``, after the DataModule's) and closes at ``on_fit_start``.
    Between the pass and ``on_fit_start`` the Trainer only builds the optimiser and places the model, milliseconds
    against a pass of seconds. The pass's own duration is the module's ``reference_pass_seconds``.
    """

    def __init__(self) -> None:
        self._window: CpuWindow | None = None
        self.others_cores: float | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._window = CpuWindow()

    def on_fit_start(self, trainer, pl_module) -> None:
        _, self.others_cores = self._window.close()


def run_ours(spec: dict, gate: Gate) -> tuple[object, dict]:
    """Our LightningModule + DataModule under a Lightning Trainer; returns the trained HF model."""
    import torch

    from common.settings import OptimizerSettings

    task, lora, impl = spec["task"], spec["lora"], spec["impl"]
    base = str(Path(spec["workdir"]) / "base")
    L.seed_everything(spec["seed"], verbose=False)
    # ours_unfused: torch's default AdamW (a loop over tensors on CPU) instead of the fused kernel.
    optimizer = OptimizerSettings(
        lr=spec["lr"], weight_decay=0.0, warmup_steps=1, schedule="constant", fused=impl != "ours_unfused"
    )
    # ours_dense_packed: transformers' own sdpa, an (N, N) block-diagonal mask per packed batch.
    packed_sdpa = impl != "ours_dense_packed"
    # ours_gc: checkpointing as our modules do it (the last layer left out); ours_gc_every_layer: every layer.
    checkpointing = {"gradient_checkpointing": impl.startswith("ours_gc")}
    checkpointing["checkpoint_last_layer"] = impl == "ours_gc_every_layer"
    layer_options = {**checkpointing, "compile_layers": impl == "ours_compiled"}
    timer = StepTimer(gate)
    callbacks: list[L.Callback] = [timer]
    reference_load: ReferencePassLoad | None = None
    if task == "sft":
        from lightning_modules.sft import SFTModule

        module = SFTModule(
            base,
            lora=lora_settings() if lora else None,
            packed_sdpa=packed_sdpa,
            optimizer=optimizer,
            **layer_options,
        )
    else:
        from lightning_modules.dpo import DPOModule

        references = {"ours_adapter": "adapter", "ours_separate": "separate", "ours_separate_shared_prompt": "separate"}
        reference = references.get(impl, "precomputed")
        module = DPOModule(
            base,
            lora=lora_settings() if lora else None,
            reference=reference,
            beta=0.1,
            # one cache per repeat: a repeat that found the last one's cache would skip (and not charge) the pass
            reference_cache_dir=str(Path(spec["workdir"]) / f"reference-{spec['case']}-{impl}-{spec.get('repeat', 0)}"),
            packed_sdpa=packed_sdpa,
            optimizer=optimizer,
            **layer_options,
        )
        if reference == "precomputed":
            reference_load = ReferencePassLoad()
            callbacks.append(reference_load)
        else:
            timer.time_reference(module)
    data = data_module(spec, base)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true" if impl == "ours_fp32" else spec["precision"],
        max_steps=spec["total_steps"],
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    trainer.fit(module, datamodule=data)
    extra: dict = {}
    if reference_load is not None and "train" in module.reference_pass_seconds:
        extra["reference_pass_s"] = module.reference_pass_seconds["train"]
        extra["reference_pass_others_cores"] = reference_load.others_cores
    if task == "dpo" and any(timer.reference_seconds):
        extra["step_reference_seconds"] = timer.reference_seconds
    extra["threads_in_training"] = torch.get_num_threads()
    extra["dataset_tokens"] = dataset_tokens(data.train_dataset, task)
    return module.model, extra


def data_module(spec: dict, base: Path):
    """Our DataModule for ``spec``: defaults (packed, length-grouped batches) but for ``ours_padded`` (``pack=False``)
    and ``ours_same_order`` (TRL's default batches: padded, not grouped; ``same_order`` hands TRL their order)."""
    from datamodules import InstructionDataModule, PreferenceDataModule

    same_order = spec["impl"] == "ours_same_order"
    batching = {
        "batch_size": spec["batch_size"],
        "pack": spec["impl"] not in ("ours_padded", "ours_same_order"),
        "group_by_length": not same_order,
        "seed": spec["seed"],
    }
    if spec["task"] == "sft":
        return InstructionDataModule(
            str(base), train_files=spec["files"]["sft"], val_fraction=0.0, max_length=spec["max_length"], **batching
        )
    return PreferenceDataModule(
        str(base),
        train_files=spec["files"]["prefs"],
        max_length=spec["max_length"],
        max_prompt_length=spec["max_length"] // 2,
        share_prompt=spec["impl"].endswith("_shared_prompt"),  # ours_shared_prompt, ours_separate_shared_prompt
        **batching,
    )


def dataset_tokens(dataset, task: str) -> int:
    """Tokens of one epoch: both rows of every pair for DPO."""
    if task == "sft":
        return sum(len(ids) for ids in dataset["input_ids"])
    if "prompt_ids" in dataset.column_names:
        return sum(
            2 * len(p) + len(c) + len(r)
            for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True)
        )
    return sum(len(ids) for ids in dataset["input_ids"])
