"""Published numbers to set the study's beside: does our harness reproduce the base model's, and where do our
SFT and SFT+DPO numbers stand next to the literature's?

A published number is comparable only under the same protocol (the same benchmark items, few-shot count,
metric and scoring), and even then lm-eval versions and numerics move a score by a point or so. The base row
is the harness check: Mistral-7B-v0.1 scored by the Open LLM Leaderboard (v1, lm-eval, 2023) under the
protocols below. For a fine-tuned model the literature's numbers come from other SFT data (Zephyr: UltraChat;
ours: Alpaca-GPT4) and other judges (AlpacaEval: GPT-4 Turbo; ours: a reward model), so those rows are set
beside ours with the reason they are not the same measurement, never as a check.
"""

from __future__ import annotations

from dataclasses import dataclass

LEADERBOARD_V1 = (
    "Open LLM Leaderboard v1, mistralai/Mistral-7B-v0.1 "
    "(https://huggingface.co/datasets/open-llm-leaderboard-old/details_mistralai__Mistral-7B-v0.1)"
)
ZEPHYR = "Tunstall et al. 2023, Zephyr, Table 3 (https://arxiv.org/abs/2310.16944)"
SIMPO = "Meng et al. 2024, SimPO, Table 4, Mistral-7B-Base (https://arxiv.org/abs/2405.14734)"


@dataclass(frozen=True)
class Published:
    """One published number.

    Attributes:
        variant: the study's variant it corresponds to (``base``, ``sft``, ``sft_dpo``).
        benchmark: the study's benchmark name (an lm-eval task, ``alpaca_eval``), or a benchmark the study
            does not run (``mt_bench``).
        value: the published score, as a fraction (0.6416 for 64.16 %) or on the benchmark's own scale.
        protocol: how it was measured (few-shot count, metric), in words.
        source: where it is published.
        num_fewshot: the few-shot count, compared with the study's (``None``: not a few-shot benchmark).
        metric: lm-eval 0.4's per-item metric that measures the same thing, compared with the study's
            (``None``: not an lm-eval number).
        filter: lm-eval's filter whose output that metric scores, compared with the study's.
        chat_template: whether the prompts went through a chat template (the leaderboard's did not).
        not_comparable: why it is not the study's measurement whatever the protocol (``None``: it can be).
        kind: ``pct``: a fraction, shown in %; ``float``: the benchmark's own scale (MT-Bench's 1-10).
        task: the lm-eval task whose recorded protocol is checked (``None``: ``benchmark`` itself; MMLU's
            subject mean is a row of the ``mmlu`` task).
    """

    variant: str
    benchmark: str
    value: float
    protocol: str
    source: str
    num_fewshot: int | None = None
    metric: str | None = None
    filter: str = "none"
    chat_template: bool = False
    not_comparable: str | None = None
    kind: str = "pct"
    task: str | None = None


PUBLISHED: tuple[Published, ...] = (
    # The leaderboard averaged the subjects' accuracies; lm-eval 0.4 pools the 14,042 items (a size-weighted
    # mean, about a point away): the study's row of the same mean is the one set beside it.
    Published(
        "base",
        "mmlu/subject_mean",
        0.6416,
        "5-shot, acc, mean of the 57 subjects' accuracies (lm-eval, 2023)",
        LEADERBOARD_V1,
        5,
        "acc",
        task="mmlu",
    ),
    Published(
        "base",
        "gsm8k",
        0.3783,
        "5-shot, exact match of the final number (lm-eval, 2023)",
        LEADERBOARD_V1,
        5,
        "exact_match",
        "strict-match",
    ),
    Published("base", "truthfulqa_mc2", 0.4215, "0-shot, MC2 (lm-eval, 2023)", LEADERBOARD_V1, 0, "acc"),
    Published("base", "arc_challenge", 0.5998, "25-shot, acc_norm (lm-eval, 2023)", LEADERBOARD_V1, 25, "acc_norm"),
    Published("base", "hellaswag", 0.8331, "10-shot, acc_norm (lm-eval, 2023)", LEADERBOARD_V1, 10, "acc_norm"),
    Published(
        "sft",
        "mt_bench",
        6.64,
        "MT-Bench, GPT-4 judge, 1-10",
        ZEPHYR,
        not_comparable="Zephyr's SFT is on UltraChat, ours on Alpaca-GPT4; the study does not run MT-Bench",
        kind="float",
    ),
    Published(
        "sft_dpo",
        "mt_bench",
        7.00,
        "MT-Bench, GPT-4 judge, 1-10",
        ZEPHYR,
        not_comparable="Zephyr's SFT is on UltraChat, ours on Alpaca-GPT4; the study does not run MT-Bench",
        kind="float",
    ),
    Published(
        "sft",
        "alpaca_eval",
        0.8565,
        "AlpacaEval (v1) win rate vs text-davinci-003, GPT-4 judge",
        ZEPHYR,
        not_comparable="GPT-4 judge against text-davinci-003's answers; ours: a reward model between our variants",
    ),
    Published(
        "sft_dpo",
        "alpaca_eval",
        0.8607,
        "AlpacaEval (v1) win rate vs text-davinci-003, GPT-4 judge",
        ZEPHYR,
        not_comparable="GPT-4 judge against text-davinci-003's answers; ours: a reward model between our variants",
    ),
    Published(
        "sft",
        "alpaca_eval",
        0.084,
        "AlpacaEval 2 length-controlled win rate vs GPT-4 Turbo",
        SIMPO,
        not_comparable="GPT-4 Turbo judge and references, UltraChat SFT; ours: a reward model between our variants",
    ),
    Published(
        "sft_dpo",
        "alpaca_eval",
        0.151,
        "AlpacaEval 2 length-controlled win rate vs GPT-4 Turbo",
        SIMPO,
        not_comparable="GPT-4 Turbo judge and references, UltraChat SFT; ours: a reward model between our variants",
    ),
)


def compare_with_published(
    benchmarks: dict[str, dict], protocols: dict[str, dict], published: tuple[Published, ...] = PUBLISHED
) -> list[dict]:
    """Each published number beside the study's for the same variant and benchmark.

    A comparable row "agrees" when the published value lies inside the study's 95 % interval, and "differs"
    otherwise. It is a check of the harness, not a test: the interval measures how much the score would move
    on other items of the same kind, so a published value outside it points at a difference of protocol or
    implementation. A row is "not comparable" when the published number is another measurement (its
    ``not_comparable``), when the study ran part of the benchmark (``limit``), another few-shot count, another
    metric or filter, the other chat-template setting, or left its protocol unrecorded; "not run by the study"
    when the study's table lacks the benchmark or the variant.

    Args:
        benchmarks: ``results["benchmarks"]["table"]``: per benchmark, ``per_variant`` values and intervals.
        protocols: ``results["benchmarks"]["lm_eval"]["protocols"]``: per lm-eval task, its protocol
            (:func:`evaluation.harness.task_outcomes`: ``limit``, ``metric``, ``filter``, ``apply_chat_template``,
            ``num_fewshot`` per leaf task).
        published: the numbers to set beside the study's.

    Returns:
        Rows ``{"variant", "benchmark", "published", "kind", "protocol", "source", "ours", "ci95", "verdict"}``;
        ``ours`` and ``ci95`` are ``None`` where the study did not run it.
    """
    rows = []
    for entry in published:
        ours = (benchmarks.get(entry.benchmark) or {}).get("per_variant", {}).get(entry.variant)
        reason = entry.not_comparable
        if reason is None and ours is not None:
            reason = protocol_difference(entry, protocols.get(entry.task or entry.benchmark))
        if reason is not None:
            verdict = f"not comparable: {reason}"
        elif ours is None:
            verdict = "not run by the study"
        else:
            low, high = ours["ci95"]
            inside = low <= entry.value <= high
            verdict = "agrees (inside our 95 % interval)" if inside else "differs (outside our 95 % interval)"
        rows.append(
            {
                "variant": entry.variant,
                "benchmark": entry.benchmark,
                "published": entry.value,
                "kind": entry.kind,
                "protocol": entry.protocol,
                "source": entry.source,
                "ours": None if ours is None else ours["value"],
                "ci95": None if ours is None else ours["ci95"],
                "verdict": verdict,
            }
        )
    return rows


def protocol_difference(entry: Published, protocol: dict | None) -> str | None:
    """Why the study's lm-eval protocol of a benchmark is not the published number's (``None``: it is the same).

    A protocol the results file does not record cannot be checked, so it is not comparable either.
    """
    if not protocol:
        return "the study's protocol of this benchmark is not recorded"
    if protocol.get("limit"):
        return f"the study ran only {protocol['limit']} items per task (limit)"
    shots = set((protocol.get("num_fewshot") or {}).values())
    if entry.num_fewshot is not None and shots != {entry.num_fewshot}:
        # lm-eval records None for a leaf whose count it did not report: unknown, so not the published one.
        ran = ", ".join(sorted("?" if shot is None else str(shot) for shot in shots)) or "?"
        return f"the study ran {ran}-shot, the published number is {entry.num_fewshot}-shot"
    if entry.metric is not None and protocol.get("metric") != entry.metric:
        return f"the study scored {protocol.get('metric')}, the published number {entry.metric}"
    if entry.metric is not None and (protocol.get("filter") or "none") != entry.filter:
        return f"the study scored under filter {protocol.get('filter')}, the published number under {entry.filter}"
    if bool(protocol.get("apply_chat_template")) != entry.chat_template:
        applied = "with" if protocol.get("apply_chat_template") else "without"
        return f"the study's prompts were {applied} a chat template, the published number's the other way"
    return None
