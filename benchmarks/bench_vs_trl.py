"""Ours against TRL on the same machine: the same model, data, batch size, optimiser, precision and threads.

One command runs every case, each implementation in its own fresh process (so peak memory is per run),
and prints one table::

    python benchmarks/bench_vs_trl.py                  # every case, about 10 minutes on a 2-core CPU
    python benchmarks/bench_vs_trl.py --cases sft_full --steps 6
    python benchmarks/bench_vs_trl.py --cases sft_full_levers dpo_full_levers   # each optimisation undone

Cases (the first implementation of each is the reference of its ratios):

* ``sft_full`` / ``sft_lora``: TRL's ``SFTTrainer`` (default: padded batches; ``trl_packing``: its BFD packing,
  padding-free) against ours (``SFTModule`` + ``InstructionDataModule``, defaults).
* ``dpo_full``: TRL's ``DPOTrainer`` with its default separate reference against ours (reference
  precomputed); ``_gc`` variants turn gradient checkpointing on for both (TRL's own default).
* ``dpo_lora``: TRL + peft (reference = adapter disabled) against ours, reference precomputed or ``adapter``.
* ``precision``: ours in bf16-mixed against fp32, same batches: the loss curves must agree.

Settings shared by both sides: the model (a randomly initialised Mistral built here), the generated rows
(prompts and responses of 16 to 400 tokens, log-uniform; TRL gets our Alpaca prompt text already rendered),
batch size, ``max_length`` (no row is cut), AdamW (betas, eps, no weight decay) at a constant learning rate,
gradient clipping at 1.0, the precision the project's rule picks (bf16 autocast over fp32 weights where
the CPU has native bf16, else fp32), LoRA r=16 alpha=32 on all projections, seeds,
no dataloader workers and ``--threads`` threads. TRL packing gets as many rows of ``max_length`` per step
as carry about the tokens of our batch.

Fairness on a shared, noisy machine: the processes of one case start together and train in lock-step, one
step each in turn (TRL, ours, TRL, ours, ...), only one computing at a time. Before each timed step the
parent waits (within ``--quiet-wait`` / ``--quiet-budget``) for other processes to leave the CPUs idle, and
each step records how many cores others kept busy meanwhile: with two threads on two cores, a step beside
someone else's job runs several times slower. Throughput is read from the quiet steps when every
implementation of the case has at least ``MIN_QUIET_STEPS`` of them, else from all timed steps (the table
shows both and how many steps were quiet).

What is measured, per case and implementation:

* tokens/s: real (non-pad) tokens of the timed steps over their wall time; a step is timed from its
  start (batch in hand) to the end of the optimiser step; the first ``--warmup-steps`` are excluded.
* s/step, peak RSS of the process (``ru_maxrss``; glibc's allocator keeps part of what is freed, so this is
  above the live peak for every implementation alike).
* MFU: model FLOPs of the timed steps per second over a matmul peak measured in the same run, in the run's
  compute dtype (the precision rule of ``common/precision.py``: bf16 only where the CPU computes it natively).
  Per real token: full fine-tuning 6 N, LoRA 4 N (forward 2 N + backward to the activations 2 N; frozen
  weights get no weight gradient) + 6 N_lora, with N the decoder weights; the LM head counts on response
  tokens only (6 V H, or 4 V H frozen); causal attention 6 n^2 d per layer and row of n tokens (d = query
  width). DPO counts the policy's two rows per pair; reference forwards and recomputation are not counted.
* the training loss of every step and, after the last step, the loss on a held-out set computed by the same
  function for every implementation (SFT: response NLL; DPO: DPO loss against the initial model).
* DPO with ``reference: precomputed``: the one-off reference pass is timed apart, and an amortised tokens/s
  charges each pair its share of that pass (the benchmark's data set is exactly the pairs trained on, so
  this is one epoch's amortisation; more epochs amortise it further).

Results go to ``benchmarks/results/<date>-<device>.json``; ``benchmarks/README.md`` keeps the latest table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

# Each case lists its implementations; the first is the reference of the ratio column (TRL's default).
CASES: dict[str, list[str]] = {
    "sft_full": ["trl", "trl_packing", "ours"],
    "sft_lora": ["trl", "trl_packing", "ours"],
    "dpo_full": ["trl", "ours", "trl_gc", "ours_gc"],
    "dpo_lora": ["trl", "ours", "ours_adapter"],
    "precision": ["ours_fp32", "ours"],
}
# Measured once to choose the defaults; not part of the default run.
LEVER_CASES: dict[str, list[str]] = {
    "sft_full_levers": ["ours_padded", "ours_dense_packed", "ours_grouped", "ours_unfused", "ours"],
    "dpo_full_levers": ["ours_separate", "ours"],
}
DEFAULT_CASES = list(CASES)
QUIET_CORES = 0.25
"""A step is quiet when other processes kept fewer than this many cores busy on average during it."""
MIN_QUIET_STEPS = 3
"""Throughput is read from the quiet steps when every implementation of a case has at least this many."""
TASK = {
    "sft_full": ("sft", False),
    "sft_lora": ("sft", True),
    "dpo_full": ("dpo", False),
    "dpo_lora": ("dpo", True),
    "precision": ("sft", False),
    "sft_full_levers": ("sft", False),
    "dpo_full_levers": ("dpo", False),
}


# ---------------------------------------------------------------- setup: model, data, peak


def log_uniform_length(rng: random.Random, low: int, high: int) -> int:
    """Many short texts and a few long ones, as in instruction data."""
    return int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))


def build_workdir(workdir: Path, args: argparse.Namespace) -> dict:
    """Tokenizer, randomly initialised Mistral, and generated SFT / preference data in ``workdir``."""
    import build_tiny_model
    import torch
    from transformers import MistralForCausalLM

    from datamodules.templates import format_prompt

    texts = build_tiny_model.corpus_texts(REPO / "data" / "tiny")
    tokenizer = build_tiny_model.train_tokenizer(texts, args.vocab_size)
    config = build_tiny_model.tiny_config(
        len(tokenizer), args.hidden, args.layers, args.heads, args.kv_heads, max_positions=2 * args.max_length
    )
    torch.manual_seed(args.seed)
    model = MistralForCausalLM(config)
    model.save_pretrained(workdir / "base")
    tokenizer.save_pretrained(workdir / "base")

    lines = [line for line in (REPO / "data" / "tiny" / "pretrain.txt").read_text().splitlines() if line.strip()]
    line_ids = [tokenizer(line, add_special_tokens=False)["input_ids"] for line in lines]
    rng = random.Random(args.seed)

    def text(n_tokens: int) -> str:
        ids: list[int] = []
        while len(ids) < n_tokens:
            ids += rng.choice(line_ids) + tokenizer(" ", add_special_tokens=False)["input_ids"]
        return tokenizer.decode(ids[:n_tokens]).strip()

    def shuffled(n_tokens: int) -> str:
        """The words of real text in random order: a rejected answer DPO can learn to tell apart."""
        words = text(n_tokens).split()
        rng.shuffle(words)
        return " ".join(words)

    def length() -> int:
        return log_uniform_length(rng, args.min_text_tokens, args.max_text_tokens)

    def pair() -> dict:
        return {"prompt": text(length()), "chosen": text(length()), "rejected": shuffled(length())}

    total_steps = args.warmup_steps + args.steps
    n_sft = total_steps * args.batch_size
    n_pairs = total_steps * args.dpo_batch_size
    files = {}
    sft_rows = [{"instruction": text(length()), "input": "", "output": text(length())} for _ in range(n_sft)]
    pairs = [pair() for _ in range(n_pairs)]
    sft_eval = [{"instruction": text(length()), "input": "", "output": text(length())} for _ in range(args.eval_rows)]
    pairs_eval = [pair() for _ in range(args.eval_rows)]
    for name, rows in (("sft", sft_rows), ("prefs", pairs), ("sft_eval", sft_eval), ("prefs_eval", pairs_eval)):
        files[name] = workdir / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(row) + "\n" for row in rows))
    # TRL reads the same rows with the prompt already rendered by our template: both see identical text.
    trl_sft = [{"prompt": format_prompt(r["instruction"], r["input"]), "completion": r["output"]} for r in sft_rows]
    trl_prefs = [{**r, "prompt": format_prompt(r["prompt"])} for r in pairs]
    for name, rows in (("trl_sft", trl_sft), ("trl_prefs", trl_prefs)):
        files[name] = workdir / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(row) + "\n" for row in rows))

    body = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "decoder_parameters": body,
        "vocab_size": len(tokenizer),
        "hidden": args.hidden,
        "layers": args.layers,
        "heads": args.heads,
        "kv_heads": args.kv_heads,
        "query_width": config.num_attention_heads * config.head_dim,
        "sft_rows": n_sft,
        "pairs": n_pairs,
        "files": {k: str(v) for k, v in files.items()},
    }


def compute_dtype(precision: str):
    """The matmul dtype of a Lightning precision name (``bf16-mixed`` -> bfloat16, ``32-true`` -> float32)."""
    import torch

    from common.precision import COMPUTE_DTYPES

    return getattr(torch, COMPUTE_DTYPES[precision])


def autocast(precision: str):
    """``torch.autocast`` on the CPU for a mixed precision, nothing for a ``-true`` one."""
    import contextlib

    import torch

    if precision.endswith("-mixed"):
        return torch.autocast("cpu", dtype=compute_dtype(precision))
    return contextlib.nullcontext()


def matmul_peak_gflops(threads: int, precision: str, size: int = 2048, repeats: int = 20) -> float:
    """``size``-cubed matmul throughput in the run's compute dtype, the MFU denominator: the 80th percentile of
    ``repeats`` timings.

    Taken after waiting for idle CPUs, before the first case, between cases and after the last; the run keeps
    the highest (a busy machine halves it, which would inflate the MFU).
    """
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(size, size, dtype=compute_dtype(precision))
    b = torch.randn(size, size, dtype=compute_dtype(precision))
    for _ in range(3):
        a @ b
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
    return sorted(rates)[int(0.8 * (repeats - 1))]


# ---------------------------------------------------------------- worker side


@dataclass
class StepLog:
    """What a worker records per training step."""

    seconds: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    loss_tokens: list[int] = field(default_factory=list)
    row_lengths: list[list[int]] = field(default_factory=list)
    others_cores: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def busy_cpu_seconds() -> float:
    """CPU time spent by every process on the machine so far (``/proc/stat``: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Gate:
    """Lock-step with the parent: announce the step, wait for ``go``, time it, report ``done``.

    Also measures how many cores other processes kept busy during the step: the machine is shared, and a
    step that ran beside someone else's job is reported apart from the quiet ones.
    """

    def __init__(self, proto) -> None:
        self.proto = proto
        self.log = StepLog()
        self._start = (0.0, 0.0, 0.0)
        self.rss_at_first_step: int | None = None

    def begin(self) -> None:
        if self.rss_at_first_step is None:
            import psutil

            self.rss_at_first_step = psutil.Process().memory_info().rss
        self.proto.write("ready\n")
        self.proto.flush()
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("benchmark parent went away")
        self._start = (time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds())

    def end(self, tokens: int, loss_tokens: int, row_lengths: list[int]) -> None:
        wall = time.perf_counter() - self._start[0]
        others = (busy_cpu_seconds() - self._start[1]) - (own_cpu_seconds() - self._start[2])
        self.log.seconds.append(wall)
        self.log.others_cores.append(max(0.0, others) / wall)
        self.log.tokens.append(tokens)
        self.log.loss_tokens.append(loss_tokens)
        self.log.row_lengths.append(row_lengths)
        self.proto.write("done\n")
        self.proto.flush()


def lora_settings():
    from lightning_modules.loading import LoraSettings

    return LoraSettings(r=16, alpha=32, dropout=0.0)


def peft_lora_config():
    from peft import LoraConfig

    lora = lora_settings()
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )


def run_ours(spec: dict, gate: Gate) -> tuple[object, dict]:
    """Our LightningModule + DataModule under a Lightning Trainer; returns the trained HF model."""
    import lightning as L
    import torch

    from datamodules import InstructionDataModule, PreferenceDataModule
    from lightning_modules.optim import OptimizerSettings

    task, lora, impl, files = spec["task"], spec["lora"], spec["impl"], spec["files"]
    base = str(Path(spec["workdir"]) / "base")
    L.seed_everything(spec["seed"], verbose=False)
    optimizer = OptimizerSettings(lr=spec["lr"], weight_decay=0.0, warmup_steps=1, schedule="constant")
    pack = impl != "ours_padded"
    extra: dict = {}
    # The lever variants: each undoes one optimisation of the default ("ours").
    if impl == "ours_dense_packed":  # transformers' own sdpa: an (N, N) block-diagonal mask per packed batch
        import lightning_modules.causal_lm as causal_lm

        causal_lm.use_packed_sdpa = lambda model: None
    if impl == "ours_grouped":  # length-grouped batches although packed
        import datamodules.base as base_module

        original_loader = base_module.train_loader

        def grouped_loader(*args, **kwargs):
            kwargs["group_by_length"] = True
            return original_loader(*args, **kwargs)

        base_module.train_loader = grouped_loader

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            gate.begin()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if "row_lengths" in batch:
                lengths = batch["row_lengths"].tolist()
            else:
                lengths = batch["attention_mask"].sum(-1).tolist()
            loss_tokens = int((batch["labels"][:, 1:] != -100).sum())
            gate.end(int(batch["num_real_tokens"]), loss_tokens, lengths)
            gate.log.losses.append(float(trainer.callback_metrics["train/loss"]))

    checkpointing = impl == "ours_gc"
    if task == "sft":
        from lightning_modules.sft import SFTModule

        module = SFTModule(
            base, lora=lora_settings() if lora else None, optimizer=optimizer, gradient_checkpointing=checkpointing
        )
        data = InstructionDataModule(
            base,
            train_files=files["sft"],
            val_fraction=0.0,
            max_length=spec["max_length"],
            batch_size=spec["batch_size"],
            pack=pack,
            seed=spec["seed"],
        )
    else:
        from lightning_modules.dpo import DPOModule

        reference = {"ours_adapter": "adapter", "ours_separate": "separate"}.get(impl, "precomputed")
        module = DPOModule(
            base,
            lora=lora_settings() if lora else None,
            reference=reference,
            beta=0.1,
            reference_cache_dir=str(Path(spec["workdir"]) / f"reference-{spec['case']}-{impl}"),
            optimizer=optimizer,
            gradient_checkpointing=checkpointing,
        )
        data = PreferenceDataModule(
            base,
            train_files=files["prefs"],
            max_length=spec["max_length"],
            max_prompt_length=spec["max_length"] // 2,
            batch_size=spec["batch_size"],
            pack=pack,
            seed=spec["seed"],
        )
        if reference == "precomputed":
            original = module._compute_reference_cache

            def timed_reference_pass(*args, **kwargs):
                start, busy, own = time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds()
                original(*args, **kwargs)
                wall = time.perf_counter() - start
                others = (busy_cpu_seconds() - busy) - (own_cpu_seconds() - own)
                extra["reference_pass_s"] = wall
                extra["reference_pass_others_cores"] = max(0.0, others) / wall

            module._compute_reference_cache = timed_reference_pass
    if impl == "ours_unfused":  # torch's default AdamW (a loop over tensors on CPU)
        from lightning_modules.optim import configure_adamw

        module.configure_optimizers = lambda: configure_adamw(
            module, module.optimizer_settings, int(module.trainer.estimated_stepping_batches)
        )
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
        callbacks=[Timer()],
    )
    trainer.fit(module, datamodule=data)
    extra["threads_in_training"] = torch.get_num_threads()
    extra["dataset_tokens"] = dataset_tokens(data.train_dataset, task)
    return module.model, extra


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


def run_trl(spec: dict, gate: Gate) -> tuple[object, dict]:
    """TRL's SFTTrainer / DPOTrainer with the same settings; returns the trained model."""
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    task, lora, impl, files = spec["task"], spec["lora"], spec["impl"], spec["files"]
    base = str(Path(spec["workdir"]) / "base")
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.pad_token = tokenizer.eos_token  # as our loader does (Mistral has no pad token)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, attn_implementation="sdpa")
    common = dict(
        output_dir=str(Path(spec["workdir"]) / f"trl-{spec['case']}-{impl}"),
        per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1,
        max_steps=spec["total_steps"],
        learning_rate=spec["lr"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        bf16=spec["precision"] == "bf16-mixed",
        use_cpu=True,
        # TRL's default is on, ours off: both off, except in the "_gc" variants where both are on.
        gradient_checkpointing=impl.endswith("_gc"),
        dataloader_num_workers=0,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=1,
        seed=spec["seed"],
        disable_tqdm=True,
    )
    counted: list[int] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs) -> None:
            counted.clear()
            gate.begin()

        def on_step_end(self, args, state, control, **kwargs) -> None:
            tokens, loss_tokens, lengths = counted[0], counted[1], counted[2:]
            gate.end(tokens, loss_tokens, lengths)

    def count_tokens(module, args, kwargs) -> None:
        # The policy's forward (with gradients) of the step; reference forwards run under no_grad.
        if not torch.is_grad_enabled() or counted:
            return
        ids = kwargs["input_ids"]
        if kwargs.get("attention_mask") is not None:
            lengths = kwargs["attention_mask"].sum(-1).tolist()
        else:  # padding-free: one row, positions restart at every example
            starts = torch.nonzero(kwargs["position_ids"][0] == 0).flatten().tolist() + [ids.shape[1]]
            lengths = [b - a for a, b in zip(starts[:-1], starts[1:], strict=True)]
        labels = kwargs.get("labels")
        if labels is None and "completion_mask" in kwargs:
            labels = kwargs["completion_mask"]
        loss_tokens = int((labels[:, 1:] != -100).sum()) if labels is not None else 0
        counted.extend([sum(lengths), loss_tokens, *lengths])

    peft_config = peft_lora_config() if lora else None
    if task == "sft":
        from trl import SFTConfig, SFTTrainer

        dataset = load_dataset("json", data_files=files["trl_sft"], split="train")
        options = {"max_length": spec["max_length"]}
        if impl == "trl_packing":
            # Packing fills rows of max_length tokens: fewer rows per step carry about as many tokens as ours.
            options.update(packing=True, per_device_train_batch_size=spec["packing_batch_size"])
        config = SFTConfig(**{**common, **options})
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[Timer()],
        )
    else:
        from trl import DPOConfig, DPOTrainer

        dataset = load_dataset("json", data_files=files["trl_prefs"], split="train")
        config = DPOConfig(**common, max_length=spec["max_length"], beta=0.1, loss_type=["sigmoid"])
        trainer = DPOTrainer(
            model=model,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[Timer()],
        )

    # DPO: the completion mask marks the response; SFT: labels are -100 outside it. Wrap the model
    # call so the policy forward of each step is counted once.
    trained = trainer.model
    if task == "dpo":
        original_compute = trainer._compute_loss

        def compute_with_labels(model, inputs, return_outputs):
            mask = inputs["completion_mask"]
            inputs_for_count = {
                "input_ids": inputs["input_ids"],
                "attention_mask": inputs["attention_mask"],
                "labels": inputs["input_ids"].masked_fill(mask == 0, -100),
            }
            count_tokens(None, (), inputs_for_count)
            return original_compute(model, inputs, return_outputs)

        trainer._compute_loss = compute_with_labels
    else:
        trained.register_forward_pre_hook(count_tokens, with_kwargs=True)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    gate.log.losses = losses[: spec["total_steps"]]
    return trainer.model, {
        "threads_in_training": torch.get_num_threads(),
        "dataset_tokens": trl_dataset_tokens(trainer.train_dataset, task),
        "optim": str(config.optim),
    }


def trl_dataset_tokens(dataset, task: str) -> int:
    if task == "sft":
        return sum(len(ids) for ids in dataset["input_ids"])
    return sum(
        2 * len(p) + len(c) + len(r)
        for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True)
    )


def held_out_loss(model, spec: dict) -> float:
    """The same loss function for every implementation: response NLL (SFT) or DPO loss (DPO)."""
    import torch

    from datamodules.collate import PreferenceCollator, SFTCollator
    from datamodules.instruction import tokenize_instruction
    from datamodules.preference import tokenize_preference
    from lightning_modules.loading import load_tokenizer
    from lightning_modules.losses import dpo_loss, sequence_logps, sft_loss

    tokenizer = load_tokenizer(str(Path(spec["workdir"]) / "base"))
    eval_file = spec["files"]["sft_eval" if spec["task"] == "sft" else "prefs_eval"]
    rows = [json.loads(line) for line in Path(eval_file).read_text().splitlines()]
    model.eval()

    def logits_and_labels(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad(), autocast(spec["precision"]):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return logits[:, :-1].float(), batch["labels"][:, 1:]

    if spec["task"] == "sft":
        examples = [
            tokenize_instruction({**r, "_row": i, "_source": "eval"}, tokenizer, "alpaca", spec["max_length"])
            for i, r in enumerate(rows)
        ]
        batch = SFTCollator(tokenizer.pad_token_id)(examples)
        logits, labels = logits_and_labels(batch)
        return float(sft_loss(logits, labels))
    examples = [
        {
            **tokenize_preference(
                {**r, "_row": i, "_source": "eval"}, tokenizer, "alpaca", spec["max_length"], spec["max_length"] // 2
            ),
            "pair_index": i,
        }
        for i, r in enumerate(rows)
    ]
    batch = PreferenceCollator(tokenizer.pad_token_id)(examples)
    logits, labels = logits_and_labels(batch)
    logps, _ = sequence_logps(logits, labels)
    reference = torch.tensor(spec["reference_eval_logps"])
    pairs = len(examples)
    losses, _, _ = dpo_loss(logps[:pairs], logps[pairs:], reference[:pairs], reference[pairs:], beta=0.1)
    return float(losses.mean())


def worker(spec_path: str) -> None:
    """One implementation of one case, in its own process."""
    import psutil
    import torch

    # Protocol lines go to the real stdout; everything libraries print goes to stderr.
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    if spec["impl"].startswith("ours"):
        import lightning  # noqa: F401

        import lightning_modules.causal_lm  # noqa: F401
    else:
        import trl  # noqa: F401
    baseline_rss = psutil.Process().memory_info().rss
    if sys.stdin.readline().strip() != "start":
        raise SystemExit("benchmark parent went away")
    gate = Gate(proto)
    start = time.perf_counter()
    runner = run_ours if spec["impl"].startswith("ours") else run_trl
    model, extra = runner(spec, gate)
    total = time.perf_counter() - start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {
        "case": spec["case"],
        "impl": spec["impl"],
        "step_seconds": gate.log.seconds,
        "step_tokens": gate.log.tokens,
        "step_loss_tokens": gate.log.loss_tokens,
        "step_row_lengths": gate.log.row_lengths,
        "step_others_cores": gate.log.others_cores,
        "losses": gate.log.losses,
        "peak_rss_bytes": peak_rss,
        "baseline_rss_bytes": baseline_rss,
        "rss_at_first_step_bytes": gate.rss_at_first_step,
        "wall_s": total,
        **extra,
    }
    result["held_out_loss"] = held_out_loss(model, spec)
    Path(spec["result_path"]).write_text(json.dumps(result))
    proto.write("finished\n")
    proto.flush()


# ---------------------------------------------------------------- parent side


def reference_eval_logps(workdir: Path, args: argparse.Namespace, files: dict) -> list[float]:
    """Log-probs of the held-out pairs under the initial model (the DPO reference), computed once."""
    import torch
    from transformers import AutoModelForCausalLM

    from datamodules.collate import PreferenceCollator
    from datamodules.preference import tokenize_preference
    from lightning_modules.loading import load_tokenizer
    from lightning_modules.losses import sequence_logps

    tokenizer = load_tokenizer(str(workdir / "base"))
    model = AutoModelForCausalLM.from_pretrained(str(workdir / "base")).eval()
    rows = [json.loads(line) for line in Path(files["prefs_eval"]).read_text().splitlines()]
    examples = [
        {
            **tokenize_preference(
                {**r, "_row": i, "_source": "eval"}, tokenizer, "alpaca", args.max_length, args.max_length // 2
            ),
            "pair_index": i,
        }
        for i, r in enumerate(rows)
    ]
    batch = PreferenceCollator(tokenizer.pad_token_id)(examples)
    with torch.no_grad(), autocast(args.resolved_precision):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps, _ = sequence_logps(logits[:, :-1].float(), batch["labels"][:, 1:])
    return logps.tolist()


def read_line(process: subprocess.Popen, expected: str, name: str, log_path: Path) -> None:
    line = process.stdout.readline().strip()
    if line != expected:
        process.kill()
        tail = log_path.read_text()[-4000:] if log_path.exists() else ""
        raise RuntimeError(f"{name}: expected {expected!r}, got {line!r} (exit {process.poll()}).\n{tail}")


class QuietWait:
    """Before a timed step, wait (within a budget) until other processes leave the CPUs idle.

    The machine may be shared: a step that starts while another job computes runs several times slower, as
    two busy threads then share cores with it. Waiting costs at most ``per_step`` seconds a step and
    ``budget`` seconds in all; steps that still overlap other work are reported apart (``QUIET_CORES``).
    """

    def __init__(self, per_step: float, budget: float, window: float = 0.2) -> None:
        self.per_step, self.budget, self.window = per_step, budget, window
        self.waited = 0.0

    def wait(self) -> None:
        start = time.perf_counter()
        limit = min(self.per_step, self.budget - self.waited)
        while time.perf_counter() - start < limit:
            busy, tick = busy_cpu_seconds(), time.perf_counter()
            time.sleep(self.window)
            if (busy_cpu_seconds() - busy) / (time.perf_counter() - tick) < QUIET_CORES:
                break
        self.waited += time.perf_counter() - start


def run_case(
    case: str, impls: list[str], setup: dict, args: argparse.Namespace, workdir: Path, waiting: QuietWait
) -> list[dict]:
    """Start one process per implementation, then step them in turn; return their results."""
    task, lora = TASK[case]
    total_steps = args.warmup_steps + (args.precision_steps if case == "precision" else args.steps)
    mean_row = setup["mean_sft_row_tokens"]
    processes = {}
    for impl in impls:
        spec = {
            "case": case,
            "impl": impl,
            "task": task,
            "lora": lora,
            "workdir": str(workdir),
            "files": setup["files"],
            "seed": args.seed,
            "threads": args.threads,
            "lr": (args.sft_lr if task == "sft" else args.dpo_lr) * (0.1 if not lora else 1.0),
            "batch_size": args.batch_size if task == "sft" else args.dpo_batch_size,
            "packing_batch_size": max(1, round(args.batch_size * mean_row / args.max_length)),
            "max_length": args.max_length,
            "precision": args.resolved_precision,
            "total_steps": total_steps,
            "reference_eval_logps": setup.get("reference_eval_logps"),
            "result_path": str(workdir / f"result-{case}-{impl}.json"),
        }
        spec_path = workdir / f"spec-{case}-{impl}.json"
        spec_path.write_text(json.dumps(spec))
        log_path = workdir / f"log-{case}-{impl}.txt"
        processes[impl] = (
            subprocess.Popen(
                [sys.executable, __file__, "--worker", str(spec_path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_path.open("w"),
                text=True,
                cwd=REPO,
            ),
            log_path,
        )
    try:
        # Set-up one process at a time (so the reference pass is timed alone), then lock-step training.
        for impl, (process, log_path) in processes.items():
            process.stdin.write("start\n")
            process.stdin.flush()
            read_line(process, "ready", f"{case}/{impl}", log_path)
        for step in range(total_steps):
            for impl, (process, log_path) in processes.items():
                if step:
                    read_line(process, "ready", f"{case}/{impl}", log_path)
                if step >= args.warmup_steps:
                    waiting.wait()
                process.stdin.write("go\n")
                process.stdin.flush()
                read_line(process, "done", f"{case}/{impl}", log_path)
            print(f"  {case}: step {step + 1}/{total_steps}", end="\r", flush=True)
        print()
        for impl, (process, log_path) in processes.items():
            read_line(process, "finished", f"{case}/{impl}", log_path)
            process.wait(timeout=600)
    finally:
        for process, _ in processes.values():
            if process.poll() is None:
                process.kill()
    return [json.loads((workdir / f"result-{case}-{impl}.json").read_text()) for impl in impls]


def step_flops(result: dict, setup: dict, task: str, lora: bool, step: int) -> float:
    """Model FLOPs of one training step (see the module docstring)."""
    n_body = setup["decoder_parameters"]
    head = setup["vocab_size"] * setup["hidden"]
    tokens = result["step_tokens"][step]
    loss_tokens = result["step_loss_tokens"][step]
    per_token, per_head_token = (4 * n_body, 4 * head) if lora else (6 * n_body, 6 * head)
    flops = per_token * tokens + per_head_token * loss_tokens
    if lora:
        flops += 6 * setup["lora_parameters"] * tokens
    attention = sum(6 * n * n * setup["query_width"] * setup["layers"] for n in result["step_row_lengths"][step])
    return flops + attention


def throughput(result: dict, steps: list[int], setup: dict, task: str, lora: bool, peak: float) -> dict:
    seconds = sum(result["step_seconds"][i] for i in steps)
    tokens = sum(result["step_tokens"][i] for i in steps)
    flops = sum(step_flops(result, setup, task, lora, i) for i in steps)
    return {
        "steps": len(steps),
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "s_per_step": seconds / len(steps),
        "mfu": flops / seconds / (peak * 1e9),
    }


def summarise(results: list[dict], case: str, setup: dict, args: argparse.Namespace, peak: float) -> list[dict]:
    """Per implementation: throughput over the quiet timed steps when every implementation of the case has
    at least ``MIN_QUIET_STEPS`` of them, else over all timed steps; memory; losses; ratios to the first."""
    task, lora = TASK[case]
    stats = []
    for result in results:
        timed = list(range(args.warmup_steps, len(result["step_seconds"])))
        others = result.get("step_others_cores") or [0.0] * len(result["step_seconds"])
        quiet = [i for i in timed if others[i] < QUIET_CORES]
        stats.append(
            {
                "all": throughput(result, timed, setup, task, lora, peak),
                "quiet": throughput(result, quiet, setup, task, lora, peak) if len(quiet) >= MIN_QUIET_STEPS else None,
            }
        )
    basis = "quiet" if all(s["quiet"] for s in stats) else "all"
    rows = []
    for result, stat in zip(results, stats, strict=True):
        chosen = stat[basis]
        row = {
            "case": case,
            "impl": result["impl"],
            "basis": basis,
            "tokens_per_s": chosen["tokens_per_s"],
            "s_per_step": chosen["s_per_step"],
            "mfu": chosen["mfu"],
            "timed_steps": stat["all"]["steps"],
            "quiet_steps": stat["quiet"]["steps"] if stat["quiet"] else 0,
            "tokens_per_s_all_steps": stat["all"]["tokens_per_s"],
            "tokens_per_s_quiet_steps": stat["quiet"]["tokens_per_s"] if stat["quiet"] else None,
            "tokens_per_step": stat["all"]["tokens"] / stat["all"]["steps"],
            "peak_rss_mib": result["peak_rss_bytes"] / 2**20,
            "rss_increase_mib": (result["peak_rss_bytes"] - result["baseline_rss_bytes"]) / 2**20,
            "final_train_loss": result["losses"][-1] if result["losses"] else float("nan"),
            "held_out_loss": result["held_out_loss"],
            "losses": result["losses"],
            "threads_in_training": result.get("threads_in_training"),
            "dataset_tokens": result.get("dataset_tokens"),
        }
        if "reference_pass_s" in result:
            # One epoch over exactly these pairs: each pair carries its share of the one-off pass.
            share = result["reference_pass_s"] * chosen["tokens"] / sum(result["step_tokens"])
            row["reference_pass_s"] = result["reference_pass_s"]
            row["reference_pass_others_cores"] = result.get("reference_pass_others_cores")
            row["amortised_tokens_per_s"] = chosen["tokens"] / (chosen["seconds"] + share)
        rows.append(row)
    first = rows[0]
    for row in rows:
        row["tokens_per_s_ratio"] = row["tokens_per_s"] / first["tokens_per_s"]
        row["tokens_per_s_all_steps_ratio"] = row["tokens_per_s_all_steps"] / first["tokens_per_s_all_steps"]
        row["peak_rss_ratio"] = row["peak_rss_mib"] / first["peak_rss_mib"]
        row["rss_increase_ratio"] = row["rss_increase_mib"] / first["rss_increase_mib"]
    return rows


def print_table(rows: list[dict]) -> str:
    header = (
        "| case | impl | tokens/s | x first | s/step | all steps: tokens/s (x first) | quiet steps "
        "| peak RSS MiB (x first) | MFU | final train loss | held-out loss |"
    )
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for r in rows:
        tps = f"{r['tokens_per_s']:.0f}"
        if "amortised_tokens_per_s" in r:
            tps += f" ({r['amortised_tokens_per_s']:.0f} amortised over a {r['reference_pass_s']:.1f} s reference pass)"
        lines.append(
            f"| {r['case']} | {r['impl']} | {tps} | {r['tokens_per_s_ratio']:.2f} | {r['s_per_step']:.2f} "
            f"| {r['tokens_per_s_all_steps']:.0f} ({r['tokens_per_s_all_steps_ratio']:.2f}) "
            f"| {r['quiet_steps']}/{r['timed_steps']} | {r['peak_rss_mib']:.0f} ({r['peak_rss_ratio']:.2f}) "
            f"| {100 * r['mfu']:.0f}% | {r['final_train_loss']:.4f} | {r['held_out_loss']:.4f} |"
        )
    table = "\n".join(lines)
    print(table)
    return table


def device_name() -> str:
    cores = os.cpu_count()
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{cores}-core {model}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES, choices=[*CASES, *LEVER_CASES])
    # Mistral's shape in small: head size 128, 4 query heads per key/value head; wide enough for the matmuls
    # to dominate as they do at 7B (a narrower model spends relatively more time in attention and casts).
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=8, help="SFT rows per step")
    parser.add_argument("--dpo-batch-size", type=int, default=4, help="preference pairs per step")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--min-text-tokens", type=int, default=16)
    parser.add_argument("--max-text-tokens", type=int, default=400)
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per case")
    parser.add_argument("--precision-steps", type=int, default=8, help="steps of the bf16-vs-fp32 loss check")
    parser.add_argument("--eval-rows", type=int, default=16)
    parser.add_argument("--sft-lr", type=float, default=1e-3, help="LoRA; full fine-tuning uses a tenth")
    parser.add_argument("--dpo-lr", type=float, default=1e-4, help="LoRA; full fine-tuning uses a tenth")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--precision", default="auto", help="auto (the project's rule: bf16-mixed only where bf16 is native) or a name"
    )
    parser.add_argument("--quiet-wait", type=float, default=10.0, help="most seconds to wait for idle CPUs a step")
    parser.add_argument("--quiet-budget", type=float, default=240.0, help="most seconds of such waiting in all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default results/<date>-<device>.json)")
    parser.add_argument("--keep-workdir", action="store_true")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    from common.precision import announce, detect_hardware, resolve_precision

    # One precision for both sides, by the project's rule: timing emulated bf16 would measure the emulation.
    choice = resolve_precision(args.precision, detect_hardware("cpu"))
    announce(choice, "bench")
    args.resolved_precision = choice.precision
    if choice.precision != "bf16-mixed" and "precision" in args.cases:
        print("[bench] skipping the 'precision' case (bf16-mixed against fp32): this run does not compute in bf16")
        args.cases = [case for case in args.cases if case != "precision"]
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="bench-vs-trl-"))
    try:
        import torch
        import transformers
        import trl

        setup = build_workdir(workdir, args)
        from datamodules.instruction import tokenize_instruction
        from lightning_modules.loading import load_tokenizer

        tokenizer = load_tokenizer(str(workdir / "base"))
        sft_rows = [json.loads(line) for line in Path(setup["files"]["sft"]).read_text().splitlines()]
        row_lengths = [
            tokenize_instruction({**r, "_row": i, "_source": ""}, tokenizer, "alpaca", args.max_length)["length"]
            for i, r in enumerate(sft_rows)
        ]
        setup["mean_sft_row_tokens"] = sum(row_lengths) / len(row_lengths)
        setup["sft_row_tokens_min_max"] = [min(row_lengths), max(row_lengths)]
        setup["lora_parameters"] = lora_parameter_count(workdir, setup)
        if any(TASK[c][0] == "dpo" for c in args.cases):
            setup["reference_eval_logps"] = reference_eval_logps(workdir, args, setup["files"])
        setup["initial_held_out_loss"] = initial_held_out_losses(workdir, args, setup)
        waiting = QuietWait(args.quiet_wait, args.quiet_budget)
        waiting.wait()
        peak = matmul_peak_gflops(args.threads, args.resolved_precision)
        print(
            f"model: {setup['parameters'] / 1e6:.1f}M parameters ({setup['decoder_parameters'] / 1e6:.1f}M decoder), "
            f"hidden {args.hidden}, {args.layers} layers, vocabulary {setup['vocab_size']}; "
            f"SFT rows {setup['sft_row_tokens_min_max'][0]}-{setup['sft_row_tokens_min_max'][1]} tokens "
            f"(mean {setup['mean_sft_row_tokens']:.0f}); {choice.compute_dtype} matmul peak {peak:.0f} GFLOP/s"
        )
        raw, case_info = {}, {}
        all_cases = {**CASES, **LEVER_CASES}
        for case in args.cases:
            waiting.wait()
            peak = max(peak, matmul_peak_gflops(args.threads, args.resolved_precision))
            case_start, load_before = time.perf_counter(), os.getloadavg()[0]
            raw[case] = run_case(case, all_cases[case], setup, args, workdir, waiting)
            case_info[case] = {"load_average_before": load_before, "case_wall_s": time.perf_counter() - case_start}
        waiting.wait()
        peak = max(peak, matmul_peak_gflops(args.threads, args.resolved_precision))
        rows = [
            {**row, **case_info[case]} for case in args.cases for row in summarise(raw[case], case, setup, args, peak)
        ]
        precision = precision_check(rows)
        print()
        table = print_table(rows)
        print(
            "held-out loss before training: "
            + ", ".join(f"{task} {loss:.4f}" for task, loss in setup["initial_held_out_loss"].items())
        )
        if precision:
            print(
                f"\nbf16-mixed vs fp32 (ours, SFT full, {len(precision['bf16'])} steps): max |loss difference| "
                f"{precision['max_abs_diff']:.4f} (largest relative {precision['max_rel_diff']:.2%})"
            )
        wall = time.perf_counter() - started
        print(
            f"\nwall time {wall / 60:.1f} min, of which {waiting.waited:.0f} s waiting for idle CPUs; "
            f"load average {os.getloadavg()}"
        )
        date = datetime.date.today().isoformat()
        device = device_name()
        out = args.out or RESULTS / f"{date}-{device.replace(' ', '-').lower()}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {
                    "date": date,
                    "device": device,
                    "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "trl": trl.__version__,
                    "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "model": {k: v for k, v in setup.items() if k not in ("files", "reference_eval_logps")},
                    "matmul_peak_gflops": peak,
                    "precision": str(choice),
                    "rows": rows,
                    "precision_check": precision,
                    "table": table,
                    "wall_s": wall,
                    "quiet_wait_s": waiting.waited,
                    "quiet_cores_threshold": QUIET_CORES,
                    "raw": raw,
                },
                indent=1,
            )
        )
        print(f"wrote {out}")
    finally:
        if args.keep_workdir:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def initial_held_out_losses(workdir: Path, args: argparse.Namespace, setup: dict) -> dict:
    """The held-out losses before any step (the same model for every implementation)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(workdir / "base"))
    spec = {
        "workdir": str(workdir),
        "files": setup["files"],
        "max_length": args.max_length,
        "precision": args.resolved_precision,
    }
    losses = {"sft": held_out_loss(model, {**spec, "task": "sft"})}
    if "reference_eval_logps" in setup:
        losses["dpo"] = held_out_loss(model, {**spec, "task": "dpo", **setup})
    return losses


def lora_parameter_count(workdir: Path, setup: dict) -> int:
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(workdir / "base")), peft_lora_config())
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def precision_check(rows: list[dict]) -> dict | None:
    by_impl = {r["impl"]: r for r in rows if r["case"] == "precision"}
    if {"ours", "ours_fp32"} - set(by_impl):
        return None
    bf16, fp32 = by_impl["ours"]["losses"], by_impl["ours_fp32"]["losses"]
    diffs = [abs(a - b) for a, b in zip(bf16, fp32, strict=True)]
    return {
        "bf16": bf16,
        "fp32": fp32,
        "max_abs_diff": max(diffs),
        "max_rel_diff": max(d / abs(b) for d, b in zip(diffs, fp32, strict=True)),
        "bf16_speedup": by_impl["ours"]["tokens_per_s"] / by_impl["ours_fp32"]["tokens_per_s"],
    }


if __name__ == "__main__":
    main()
