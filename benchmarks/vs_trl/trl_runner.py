"""TRL's side: ``SFTTrainer`` / ``DPOTrainer`` with the same settings as ours, stepped by the same gate."""

from __future__ import annotations

from pathlib import Path

from benchmarks.vs_trl.protocol import Gate
from benchmarks.vs_trl.workload import peft_lora_config


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
    same_order = impl == "trl_same_order"
    if same_order:  # the rows come in our loader's order (benchmarks/vs_trl/same_order.py): keep it
        common["train_sampling_strategy"] = "sequential"
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

        dataset = load_dataset(
            "json", data_files=files["trl_sft_same_order" if same_order else "trl_sft"], split="train"
        )
        options = {"max_length": spec["max_length"]}
        if impl == "trl_packing":
            # Packing fills rows of max_length tokens: fewer rows per step carry about as many tokens as ours.
            options.update(packing=True, per_device_train_batch_size=spec["packing_batch_size"])
        config = SFTConfig(**{**common, **options})
        trainer_class = SFTTrainer
    else:
        from trl import DPOConfig, DPOTrainer

        dataset = load_dataset(
            "json", data_files=files["trl_prefs_same_order" if same_order else "trl_prefs"], split="train"
        )
        config = DPOConfig(**common, max_length=spec["max_length"], beta=0.1, loss_type=["sigmoid"])

        class CountingDPOTrainer(DPOTrainer):
            """TRL's DPOTrainer, counting each step's tokens through the public ``compute_loss`` (the completion
            mask marks the responses)."""

            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                mask = inputs["completion_mask"]
                count_tokens(
                    None,
                    (),
                    {
                        "input_ids": inputs["input_ids"],
                        "attention_mask": inputs["attention_mask"],
                        "labels": inputs["input_ids"].masked_fill(mask == 0, -100),
                    },
                )
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        trainer_class = CountingDPOTrainer

    trainer = trainer_class(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[Timer()],
    )

    if task == "sft":  # SFT: labels are -100 outside the response; the policy forward of each step, once
        trainer.model.register_forward_pre_hook(count_tokens, with_kwargs=True)
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
