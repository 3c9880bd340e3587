"""The same-training check: ours and TRL train on the same batches in the same order, so their losses must agree.

The speed cases cannot show this: each side draws its own order (ours a seeded shuffle, then length-grouped and
packed batches; TRL's Trainer a ``RandomSampler`` on torch's global generator), so after a few steps the two models
differ for reasons that say nothing about either trainer. Here ours runs with TRL's default batches (padded, not
grouped: ``pack=False, group_by_length=False``), its epoch-0 batches are read from its own training loader, and TRL
gets the rows written in that order with ``train_sampling_strategy="sequential"``. Everything else is as in the
speed cases (full fine-tuning, same model, learning rate, AdamW, clipping, precision). Every step's training loss
and the held-out loss after the last step are compared with :data:`TOLERANCE`.
"""

from __future__ import annotations

from pathlib import Path

TOLERANCE = {"32-true": 1e-4, "bf16-mixed": 2e-2}
"""Largest accepted |ours - TRL| of a loss, per precision. fp32 leaves only summation order (fused against
foreach AdamW, the LM head on response positions only against all): measured 9.5e-7 (SFT) and 2.3e-5 (DPO) over
12 steps (2026-12-02, Intel Xeon without AMX, 32.5M parameters). bf16 rounds every matmul input: a bound not yet
measured against TRL (ours bf16 against ours fp32 differed by up to 6e-3 on an AMX Xeon)."""


def write_trl_order(workdir: Path, spec: dict) -> str:
    """Write TRL's rows in the order our loader serves them for ``spec`` (a worker spec without ``impl``); return
    the file's path."""
    from benchmarks.vs_trl.ours import data_module

    data = data_module({**spec, "impl": "ours_same_order"}, Path(spec["workdir"]) / "base")
    data.setup("fit")
    rows = data.train_dataset["row"]  # 1-based line of each example in its source file
    order = [rows[i] - 1 for batch in data.train_dataloader().batch_sampler for i in batch]
    source = Path(spec["files"]["trl_sft" if spec["task"] == "sft" else "trl_prefs"])
    lines = source.read_text().splitlines()
    if sorted(order) != list(range(len(lines))):
        raise RuntimeError(f"our loader did not serve each of the {len(lines)} rows of {source} once: {order}")
    out = workdir / f"{source.stem}_same_order.jsonl"
    out.write_text("".join(lines[i] + "\n" for i in order))
    return str(out)


def agreement(rows: list[dict], precision: str) -> dict | None:
    """Per same-order case: the largest loss differences, and whether they are within the tolerance."""
    cases = {}
    for case in {r["case"] for r in rows if r["case"].endswith("_same_order")}:
        by_impl = {r["impl"]: r for r in rows if r["case"] == case}
        ours, trl = by_impl["ours_same_order"], by_impl["trl_same_order"]
        steps = [abs(a - b) for a, b in zip(ours["losses"], trl["losses"], strict=True)]
        held_out = abs(ours["held_out_loss"] - trl["held_out_loss"])
        tolerance = TOLERANCE.get(precision)
        cases[case] = {
            "steps": len(steps),
            "max_abs_train_loss_diff": max(steps),
            "held_out_loss_diff": held_out,
            "ours_losses": ours["losses"],
            "trl_losses": trl["losses"],
            "tolerance": tolerance,
            "within": None if tolerance is None else max(*steps, held_out) <= tolerance,
        }
    return cases or None


def agreement_text(check: dict) -> str:
    """One line per case for the printed summary."""
    lines = []
    for case, c in sorted(check.items()):
        verdict = (
            "no tolerance for this precision"
            if c["within"] is None
            else (f"within {c['tolerance']:g}" if c["within"] else f"NOT within {c['tolerance']:g}")
        )
        lines.append(
            f"{case}: ours vs TRL on the same batches, {c['steps']} steps: largest |train loss difference| "
            f"{c['max_abs_train_loss_diff']:.2e}, held-out {c['held_out_loss_diff']:.2e} ({verdict})"
        )
    return "\n".join(lines)
