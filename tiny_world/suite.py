"""The tiny study suite: SFT rows, preference pairs, evaluation prompts and a pre-training corpus.

Everything comes from :func:`generate_suite`, a pure function of its arguments: each random choice
draws from its own ``random.Random`` seeded with the seed and a label (``"pool/reasoning"``,
``"rows/sft_train"``...), so changing one split's size leaves the other splits' prompts in place.

How the prompts are split, per category (:mod:`tiny_world.tasks` lists every distinct prompt):

1. The category's prompts are shuffled, stratified over their kind (a test slice of ``safety`` is
   about half harmful, half benign).
2. The first slices are held out, disjoint from one another: evaluation prompts, SFT test,
   preference test, then SFT validation and preference validation.
3. Training rows are drawn from the rest, in shuffled passes (a prompt may repeat, with fresh
   responses). So no held-out prompt text appears in training or validation.

Each split's size is spread evenly over the six categories (the first categories take the
remainder).

Imperfect SFT data, on purpose: real instruction data (Alpaca-GPT4) is not perfect, and DPO's
benefit over SFT comes from preferring the better of the answers SFT learnt to imitate. So in SFT
train and validation, exactly ``round(flawed_fraction * n)`` of the ``n`` rows of each category in
``flawed_categories`` (default: instruction_following, reasoning, safety) carry the flawed
response: a wrong sum, an ignored format, compliance with a harmful request, a refusal of a benign
one. Such a row keeps the check of its prompt, so the check tells it apart. SFT test rows, the
chosen side of every preference pair and all other categories are always correct.
"""

from __future__ import annotations

import copy
import hashlib
import random
from collections import defaultdict
from dataclasses import dataclass, fields
from typing import Any

from tiny_world.pretrain import pretrain_corpus
from tiny_world.tasks import Task, all_tasks
from tiny_world.vocab import CATEGORIES

FLAWED_CATEGORIES: tuple[str, ...] = ("instruction_following", "reasoning", "safety")
DEFAULT_FLAWED_FRACTION = 0.3
PRETRAIN_FILE = "pretrain.txt"

# UltraFeedback-like scores (1-10): every chosen score is above every rejected one.
CHOSEN_SCORES: tuple[float, ...] = (8.0, 8.5, 9.0, 9.5, 10.0)
REJECTED_SCORES: tuple[float, ...] = (2.0, 3.0, 4.0, 5.0, 6.0)


@dataclass(frozen=True)
class SuiteSizes:
    """How many rows each split holds, over all categories.

    Attributes:
        sft_train: SFT training rows (prompts may repeat).
        sft_val: SFT validation rows (distinct prompts).
        sft_test: held-out SFT rows, always correct.
        prefs_train: preference training pairs (prompts may repeat).
        prefs_val: preference validation pairs (distinct prompts).
        prefs_test: held-out preference pairs.
        eval_per_category: held-out evaluation prompts per category.
        pretrain_docs: documents of the pre-training corpus.
    """

    sft_train: int = 1200
    sft_val: int = 100
    sft_test: int = 100
    prefs_train: int = 800
    prefs_val: int = 80
    prefs_test: int = 120
    eval_per_category: int = 10
    pretrain_docs: int = 2000


@dataclass(frozen=True)
class TinySuite:
    """The generated suite; :meth:`jsonl_splits` names the JSONL files it is written to."""

    sft_train: list[dict[str, Any]]
    sft_val: list[dict[str, Any]]
    sft_test: list[dict[str, Any]]
    prefs_train: list[dict[str, Any]]
    prefs_val: list[dict[str, Any]]
    prefs_test: list[dict[str, Any]]
    eval_prompts: list[dict[str, Any]]
    pretrain: list[str]

    def jsonl_splits(self) -> dict[str, list[dict[str, Any]]]:
        """``{"sft_train": rows, ...}``: every split but the corpus, each written to ``<name>.jsonl``."""
        return {item.name: getattr(self, item.name) for item in fields(self) if item.name != "pretrain"}


def generate_suite(
    seed: int = 0,
    sizes: SuiteSizes = SuiteSizes(),
    flawed_fraction: float = DEFAULT_FLAWED_FRACTION,
    flawed_categories: tuple[str, ...] = FLAWED_CATEGORIES,
) -> TinySuite:
    """Generate the whole suite (see the module docstring for how it is split).

    Args:
        seed: the seed of every random choice.
        sizes: the size of each split.
        flawed_fraction: the fraction of SFT train/val rows of ``flawed_categories`` that carry a
            flawed response.
        flawed_categories: the categories whose SFT train/val rows are partly flawed.

    Raises:
        ValueError: a negative size, a fraction outside [0, 1], an unknown category, or sizes
            that need more held-out prompts than a category has.
    """
    if not 0.0 <= flawed_fraction <= 1.0:
        raise ValueError(f"flawed_fraction must be in [0, 1], got {flawed_fraction}.")
    unknown = sorted(set(flawed_categories) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"Unknown flawed categories {unknown}; choose among {', '.join(CATEGORIES)}.")
    negative = [item.name for item in fields(sizes) if getattr(sizes, item.name) < 0]
    if negative:
        raise ValueError(f"Split sizes must not be negative: {', '.join(negative)}.")

    tasks: dict[str, list[Task]] = defaultdict(list)
    for index, category in enumerate(CATEGORIES):
        for split, split_tasks in _category_splits(category, index, seed, sizes).items():
            tasks[split].extend(split_tasks)

    def sft_rows(split: str, fraction: float) -> list[dict[str, Any]]:
        rng = _rng(seed, "rows", split)
        flawed = _pick_flawed(tasks[split], fraction, flawed_categories, rng)
        rows = []
        for position, task in enumerate(tasks[split]):
            good, bad = task.respond(rng)
            rows.append(sft_row(task, bad if position in flawed else good))
        rng.shuffle(rows)
        return rows

    def preference_rows(split: str) -> list[dict[str, Any]]:
        rng = _rng(seed, "rows", split)
        rows = [preference_row(task, *task.respond(rng), rng) for task in tasks[split]]
        rng.shuffle(rows)
        return rows

    return TinySuite(
        sft_train=sft_rows("sft_train", flawed_fraction),
        sft_val=sft_rows("sft_val", flawed_fraction),
        sft_test=sft_rows("sft_test", 0.0),
        prefs_train=preference_rows("prefs_train"),
        prefs_val=preference_rows("prefs_val"),
        prefs_test=preference_rows("prefs_test"),
        eval_prompts=[eval_row(task) for task in tasks["eval_prompts"]],
        pretrain=pretrain_corpus(sizes.pretrain_docs, _rng(seed, "pretrain")),
    )


def sft_row(task: Task, output: str) -> dict[str, Any]:
    """An Alpaca-GPT4 row (``instruction``, ``input``, ``output``) plus ``category`` and ``check``."""
    return {
        "instruction": task.instruction,
        "input": task.input,
        "output": output,
        "category": task.category,
        "check": copy.deepcopy(task.check),
    }


def preference_row(task: Task, chosen: str, rejected: str, rng: random.Random) -> dict[str, Any]:
    """An UltraFeedback-binarized row plus ``category`` and ``check``; ``messages`` is the chosen chat."""
    prompt = task.prompt

    def chat(response: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]

    return {
        "prompt": prompt,
        "prompt_id": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
        "chosen": chat(chosen),
        "rejected": chat(rejected),
        "messages": chat(chosen),
        "score_chosen": rng.choice(CHOSEN_SCORES),
        "score_rejected": rng.choice(REJECTED_SCORES),
        "category": task.category,
        "check": copy.deepcopy(task.check),
    }


def eval_row(task: Task) -> dict[str, Any]:
    """An evaluation prompt: ``category``, ``prompt`` and ``check``."""
    return {"category": task.category, "prompt": task.prompt, "check": copy.deepcopy(task.check)}


def share(total: int, index: int, parts: int = len(CATEGORIES)) -> int:
    """Category ``index``'s part of ``total`` rows split evenly over ``parts`` (the first take the rest)."""
    return total // parts + (1 if index < total % parts else 0)


def _rng(seed: int, *labels: str) -> random.Random:
    # A str seed is hashed with SHA-512 by ``random``: stable across runs and PYTHONHASHSEED.
    return random.Random("/".join([str(seed), *labels]))


def _category_splits(category: str, index: int, seed: int, sizes: SuiteSizes) -> dict[str, list[Task]]:
    pool = _stratified_shuffle(all_tasks(category), _rng(seed, "pool", category))
    held_out = {
        "eval_prompts": sizes.eval_per_category,
        "sft_test": share(sizes.sft_test, index),
        "prefs_test": share(sizes.prefs_test, index),
        "sft_val": share(sizes.sft_val, index),
        "prefs_val": share(sizes.prefs_val, index),
    }
    needed = sum(held_out.values())
    if needed >= len(pool):
        raise ValueError(
            f"Category {category!r} has {len(pool)} distinct prompts, but the evaluation, test and "
            f"validation sizes hold out {needed} of them and training needs at least one more: "
            "lower those sizes."
        )
    splits: dict[str, list[Task]] = {}
    start = 0
    for split, count in held_out.items():
        splits[split] = pool[start : start + count]
        start += count
    train_pool, rng = pool[start:], _rng(seed, "train", category)
    splits["sft_train"] = _draw(train_pool, share(sizes.sft_train, index), rng)
    splits["prefs_train"] = _draw(train_pool, share(sizes.prefs_train, index), rng)
    return splits


def _stratified_shuffle(tasks: list[Task], rng: random.Random) -> list[Task]:
    """Shuffle so that every prefix holds each kind in about its share of the whole.

    Each kind is shuffled, its ``j``-th of ``m`` tasks placed at ``(j + u) / m`` for a random
    offset ``u``, and all tasks sorted by place.
    """
    by_kind: dict[str, list[Task]] = {}
    for task in tasks:
        by_kind.setdefault(task.kind, []).append(task)
    placed = []
    for order, group in enumerate(by_kind.values()):
        rng.shuffle(group)
        offset = rng.random()
        placed.extend(((j + offset) / len(group), order, task) for j, task in enumerate(group))
    placed.sort(key=lambda item: item[:2])
    return [task for _, _, task in placed]


def _draw(pool: list[Task], count: int, rng: random.Random) -> list[Task]:
    """``count`` tasks from ``pool`` in shuffled passes: each prompt is used once before any repeats."""
    drawn: list[Task] = []
    while len(drawn) < count:
        batch = list(pool)
        rng.shuffle(batch)
        drawn.extend(batch)
    return drawn[:count]


def _pick_flawed(
    tasks: list[Task], fraction: float, categories: tuple[str, ...], rng: random.Random
) -> set[int]:
    """Positions of the rows to flaw: ``round(fraction * n)`` of the ``n`` rows of each category."""
    positions: dict[str, list[int]] = defaultdict(list)
    for position, task in enumerate(tasks):
        positions[task.category].append(position)
    flawed: set[int] = set()
    for category in categories:
        candidates = positions[category]
        flawed.update(rng.sample(candidates, round(fraction * len(candidates))))
    return flawed
