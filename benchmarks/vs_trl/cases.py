"""What runs: the cases, their implementations, and the task each trains."""

from __future__ import annotations

# Each case lists its implementations; the first is the reference of the ratio column (TRL's default).
CASES: dict[str, list[str]] = {
    "sft_full": ["trl", "trl_packing", "ours"],
    "sft_lora": ["trl", "trl_packing", "ours"],
    "dpo_full": ["trl", "ours", "ours_separate"],
    "dpo_lora": ["trl", "ours", "ours_adapter"],
    # Gradient checkpointing on both sides (TRL's own default; ours leaves the last layer out). Cases of their own:
    # a case's processes are alive together, and five of ~120M parameters outgrew 24 GiB.
    "sft_full_gc": ["trl_gc", "ours_gc"],
    "sft_lora_gc": ["trl_gc", "ours_gc"],
    "dpo_full_gc": ["trl_gc", "ours_gc"],
    "dpo_lora_gc": ["trl_gc", "ours_gc"],
    "precision": ["ours_fp32", "ours"],
    # The same training: ours with TRL's default batches, TRL in our order (benchmarks/vs_trl/same_order.py).
    "sft_same_order": ["trl_same_order", "ours_same_order"],
    "dpo_same_order": ["trl_same_order", "ours_same_order"],
}
# Measured once to choose the defaults; not part of the default run. Each lever is a public option of ours.
LEVER_CASES: dict[str, list[str]] = {
    "sft_full_levers": ["ours_padded", "ours_dense_packed", "ours_unfused", "ours"],
    "dpo_full_levers": ["ours_separate", "ours"],
    # Checkpointing every layer (transformers' default) against ours, which leaves the last layer out.
    "sft_checkpointing_levers": ["ours_gc_every_layer", "ours_gc"],
    "dpo_checkpointing_levers": ["ours_gc_every_layer", "ours_gc"],
    # torch.compile of each decoder layer (compile_layers); its compilation falls in the warm-up steps.
    "sft_compile_levers": ["ours", "ours_compiled"],
    "dpo_compile_levers": ["ours", "ours_compiled"],
    # glibc's allocator with a fixed mmap threshold and no trimming (IMPL_ENV): freed blocks stay in the heap for
    # the next step instead of going back to the kernel and faulting in again (an environment setting, not ours).
    "sft_allocator_levers": ["ours", "ours_mmap_threshold"],
    "dpo_allocator_levers": ["ours", "ours_mmap_threshold"],
    # oneDNN's primitive cache capped at 64 entries (default 1,024) on both sides: with bf16 on a CPU each new
    # sequence shape adds primitives that keep their memory, so the resident set grows step after step.
    "dpo_onednn_cache_levers": ["trl_onednn_cache", "ours_onednn_cache", "trl", "ours"],
    # Prefix sharing (data.share_prompt): each pair's prompt computed once for both responses, in the training step
    # and in the reference's pass (precomputed), or in the step's two forwards (a separate reference).
    "dpo_prefix_sharing_levers": ["ours", "ours_shared_prompt"],
    "dpo_separate_prefix_sharing_levers": ["ours_separate", "ours_separate_shared_prompt"],
}
IMPL_ENV: dict[str, dict[str, str]] = {
    "ours_mmap_threshold": {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(8 * 2**30)},
    "ours_onednn_cache": {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64"},
    "trl_onednn_cache": {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64"},
}
"""Environment variables an implementation's worker process starts with (read by glibc before the first malloc,
by oneDNN before its first primitive)."""
DEFAULT_CASES = list(CASES)
TASK = {
    "sft_full": ("sft", False),
    "sft_lora": ("sft", True),
    "dpo_full": ("dpo", False),
    "dpo_lora": ("dpo", True),
    "sft_full_gc": ("sft", False),
    "sft_lora_gc": ("sft", True),
    "dpo_full_gc": ("dpo", False),
    "dpo_lora_gc": ("dpo", True),
    "precision": ("sft", False),
    "sft_same_order": ("sft", False),
    "dpo_same_order": ("dpo", False),
    "sft_full_levers": ("sft", False),
    "dpo_full_levers": ("dpo", False),
    "sft_checkpointing_levers": ("sft", False),
    "dpo_checkpointing_levers": ("dpo", False),
    "sft_compile_levers": ("sft", False),
    "dpo_compile_levers": ("dpo", False),
    "sft_allocator_levers": ("sft", False),
    "dpo_allocator_levers": ("dpo", False),
    "dpo_onednn_cache_levers": ("dpo", False),
    "dpo_prefix_sharing_levers": ("dpo", False),
    "dpo_separate_prefix_sharing_levers": ("dpo", False),
}
"""Per case: the task (``sft`` or ``dpo``) and whether it trains a LoRA adapter."""
