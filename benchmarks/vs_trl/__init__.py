"""Ours against TRL on the same machine: the same model, data, batch size, optimiser, precision and threads.

One command runs every case, each implementation in its own fresh process (so peak memory is per run),
and prints one table::

    python benchmarks/bench_vs_trl.py                  # every case, 15-25 minutes on a 2-core CPU
    python benchmarks/bench_vs_trl.py --cases sft_full --steps 6
    python benchmarks/bench_vs_trl.py --cases sft_full_levers dpo_full_levers   # each optimisation undone
    python benchmarks/bench_vs_trl.py --cases sft_checkpointing_levers sft_compile_levers   # the layer options

Cases (the first implementation of each is the reference of its ratios):

* ``sft_full`` / ``sft_lora``: TRL's ``SFTTrainer`` (default: padded batches; ``trl_packing``: its BFD packing,
  padding-free) against ours (``SFTModule`` + ``InstructionDataModule``, defaults).
* ``dpo_full``: TRL's ``DPOTrainer`` with its default separate reference against ours (reference
  precomputed, or ``separate`` like TRL's).
* ``dpo_lora``: TRL + peft (reference = adapter disabled) against ours, reference precomputed or ``adapter``.
* ``sft_full_gc``, ``sft_lora_gc``, ``dpo_full_gc``, ``dpo_lora_gc``: ``trl_gc`` / ``ours_gc``, gradient
  checkpointing on for both (TRL's own default; transformers recomputes every layer, ours every layer but the
  last). Each of our rows is also compared with TRL's default at its checkpointing setting ("vs TRL matched").
* lever cases (not in the default run): ``sft_full_levers`` / ``dpo_full_levers`` undo one default each;
  ``*_checkpointing_levers`` checkpoint every layer against ours; ``*_compile_levers`` add ``compile_layers``.
* ``precision``: ours in bf16-mixed against fp32, same batches: the loss curves must agree.
* ``sft_same_order`` / ``dpo_same_order``: the same training. Ours with TRL's default batches (padded, not grouped)
  and TRL fed our loader's order: every step's loss and the held-out loss must agree within a tolerance
  (``same_order``).

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
* s/step, peak RSS of the process (its own high-water mark, ``VmHWM``; not ``ru_maxrss``, which Linux carries
  over from the parent; glibc's allocator keeps part of what is freed, so this is above the live peak for every
  implementation alike), and its increase over the RSS after the side's imports.
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

The modules, one job each: ``cases`` (what runs), ``workload`` (generated data, model, LoRA settings),
``protocol`` (the parent/worker lock-step and the CPU-load readings), ``ours`` and ``trl_runner`` (one
implementation each), ``held_out`` (the common held-out loss), ``worker`` (the subprocess),
``flops`` (model FLOPs, matmul peak, throughput), ``table`` (summary and table), ``same_order`` (TRL's rows in
our order, the agreement check), ``run`` (arguments, the cases, the result file). ``benchmarks/bench_vs_trl.py``
is the entry point, also of each worker process.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository root: the tiny data, the results folder and the workers' working directory."""
