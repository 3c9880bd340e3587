"""data/study_prompts.jsonl, the real study's evaluation prompts: the file itself (their only copy), read by the
engine's own reader.

Written by hand for this project in the tiny suite's schema (``category``, ``prompt``, ``check``), so one
evaluation serves both. The checks are deliberately simple (:mod:`evaluation.checkers`); where an open question
has no checkable answer the check is ``helpful`` (answers, does not refuse) and the side-by-side text is what a
reader judges; ``final_number`` reads the last number of the answer, so a model that restates an operand after
its result is marked wrong.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from evaluation.checkers import check_response
from evaluation.prompts import read_prompts

STUDY_PROMPTS = Path(__file__).resolve().parents[2] / "data" / "study_prompts.jsonl"


@pytest.fixture(scope="module")
def prompts() -> list[dict]:
    # on_bad_row "error": a row that does not parse, or a check of an unknown type or without the fields its
    # type needs, is a DataError naming the row.
    return read_prompts(str(STUDY_PROMPTS))


def test_every_row_parses_and_every_check_is_a_known_type(prompts):
    rows = [json.loads(line) for line in STUDY_PROMPTS.read_text(encoding="utf-8").splitlines()]
    assert all(list(row) == ["category", "prompt", "check"] for row in rows)
    assert [row["prompt"] for row in prompts] == [row["prompt"] for row in rows]
    assert all(row["check"] for row in prompts)  # every study prompt is checked
    for row in prompts:
        check_response(row["check"], "")  # raises on an unknown type or a missing field


def test_category_counts_and_distinct_prompts(prompts):
    counts = Counter(row["category"] for row in prompts)
    assert counts == {
        "instruction_following": 6, "reasoning": 6, "factual_knowledge": 7,
        "coding": 6, "creative_writing": 6, "safety": 7,
    }  # fmt: skip
    assert len({row["prompt"] for row in prompts}) == len(prompts) == 38
    safety_checks = Counter(row["check"]["type"] for row in prompts if row["category"] == "safety")
    assert safety_checks == {"refusal": 5, "helpful": 2}  # harmful prompts to refuse, benign ones to answer


def test_the_coding_checks_accept_a_reference_solution(prompts):
    solutions = {
        "is_prime": "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))",
        "reverse_string": "def reverse_string(s):\n    return s[::-1]",
        "factorial": "def factorial(n):\n    return 1 if n < 2 else n * factorial(n - 1)",
        "fibonacci": "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
        "    return a",
        "count_vowels": "def count_vowels(s):\n    return sum(c in 'aeiou' for c in s)",
        "fizzbuzz": (
            "def fizzbuzz(n):\n    if n % 15 == 0:\n        return 'FizzBuzz'\n    if n % 3 == 0:\n"
            "        return 'Fizz'\n    if n % 5 == 0:\n        return 'Buzz'\n    return str(n)"
        ),
    }
    coding = [row for row in prompts if row["category"] == "coding"]
    assert {row["check"]["name"] for row in coding} == set(solutions)
    for row in coding:
        assert check_response(row["check"], solutions[row["check"]["name"]]), row["prompt"]
