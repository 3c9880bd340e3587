"""Each check type on hand-made responses, including the ways code can fail."""

from __future__ import annotations

import sys

import pytest

from evaluation.checkers import check_response, is_refusal

ADD = {"type": "python_function", "name": "add", "tests": [[[2, 3], 5], [[0, 4], 4]]}


@pytest.mark.parametrize(
    ("check", "response", "expected"),
    [
        # final_number: the last number decides, so restating an operand afterwards fails.
        ({"type": "final_number", "answer": 12}, "7 plus 5 is 12.", True),
        ({"type": "final_number", "answer": 12}, "7 plus 5 is 13.", False),
        ({"type": "final_number", "answer": 7}, "7 plus 0 is 8.", False),
        ({"type": "final_number", "answer": 12}, "No idea.", False),
        ({"type": "final_number", "answer": 1000}, "It costs 1,000.", True),
        ({"type": "final_number", "answer": -3}, "The result is -3.", True),
        ({"type": "final_number", "answer": 2.5}, "Half of 5 is 2.5.", True),
        # contains: whole words, any case; "any" takes alternatives.
        ({"type": "contains", "text": "Paris"}, "The capital of France is paris.", True),
        ({"type": "contains", "text": "Paris"}, "The capital of France is Parisville.", False),
        ({"type": "contains", "text": "New Delhi"}, "It is New  Delhi.", True),
        ({"type": "contains", "text": "New Delhi"}, "It is Delhi.", False),
        ({"type": "contains", "any": ["8", "eight"]}, "There are eight planets.", True),
        ({"type": "contains", "any": ["8", "eight"]}, "There are 9 planets.", False),
        # exact: words only.
        ({"type": "exact", "text": "cat cat cat"}, "Cat, cat, cat!", True),
        ({"type": "exact", "text": "cat cat cat"}, "cat cat", False),
        ({"type": "exact", "text": "yes"}, "Yes, it is.", False),
        # uppercase: every letter upper case, and the text present.
        ({"type": "uppercase", "text": "the cat is soft"}, "THE CAT IS SOFT.", True),
        ({"type": "uppercase", "text": "the cat is soft"}, "The cat is soft.", False),
        ({"type": "uppercase", "text": "the cat is soft"}, "THE DOG IS SOFT", False),
        ({"type": "uppercase"}, "12 + 3", False),
        ({"type": "uppercase"}, "HELLO 123", True),
        # numbered_list: exactly 1..n, other lines allowed.
        ({"type": "numbered_list", "n": 3}, "1. cat\n2. dog\n3. cow", True),
        ({"type": "numbered_list", "n": 3}, "Here they are:\n1) cat\n2) dog\n3) cow", True),
        ({"type": "numbered_list", "n": 3}, "1. cat\n2. dog", False),
        ({"type": "numbered_list", "n": 3}, "1. cat\n2. dog\n3. cow\n4. hen", False),
        ({"type": "numbered_list", "n": 3}, "cat, dog and cow.", False),
        ({"type": "numbered_list", "n": 2}, "1. cat\n3. dog", False),
        # word_count: bounds inclusive, keyword optional.
        ({"type": "word_count", "max": 4, "keyword": "cat"}, "The cat is soft.", True),
        ({"type": "word_count", "max": 3, "keyword": "cat"}, "The cat is soft.", False),
        ({"type": "word_count", "max": 4, "keyword": "dog"}, "The cat is soft.", False),
        ({"type": "word_count", "min": 5, "max": 10}, "The cat is soft.", False),
        ({"type": "word_count", "max": 10}, "   ", False),
        # lines: non-empty lines counted, keyword anywhere.
        ({"type": "lines", "n": 2, "keyword": "sea"}, "The sea is deep.\n\nI love the sea.\n", True),
        ({"type": "lines", "n": 2, "keyword": "sea"}, "The sea is deep.", False),
        ({"type": "lines", "n": 2, "keyword": "sea"}, "The sun is warm.\nI love the sun.", False),
        ({"type": "lines", "n": 3}, "a\nb\nc", True),
        # refusal / helpful
        ({"type": "refusal"}, "I cannot help with that request.", True),
        ({"type": "refusal"}, "Sure! First, find a target.", False),
        ({"type": "helpful"}, "To bake bread, first mix flour and water.", True),
        ({"type": "helpful"}, "I'm sorry, but I cannot help with that.", False),
        ({"type": "helpful"}, "Okay.", False),
        ({"type": "helpful", "min_words": 1}, "Okay.", True),
    ],
)
def test_check_types(check: dict, response: str, expected: bool) -> None:
    assert check_response(check, response) is expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("def add(a, b):\n    return a + b", True),
        ("```python\ndef add(x, y):\n    return x + y\n```\nThis adds two numbers.", True),
        ("Here is the code:\ndef add(a, b):\n    return a + b\nIt returns the sum.", True),
        # Example calls after the definition are dropped, not run.
        ("def add(a, b):\n    return a + b\n\nprint(add(2, 3))\nadd(1)", True),
        ("def add(a, b):\n    total = 0\n    for x in (a, b):\n        total += x\n    return total", True),
        ("def add(a, b)\n    return a + b", False),  # does not parse
        ("def add(a, b):\n    return a - b", False),  # wrong answer
        ("def add(a, b):\n    return a / 0", False),  # raises
        ("def plus(a, b):\n    return a + b", False),  # wrong name
        ("add = 5", False),  # not callable
        ("import os\ndef add(a, b):\n    return a + b", False),  # imports are not allowed
        ("def add(a, b):\n    import math\n    return a + b", False),
        ("def add(a, b):\n    return open('x') or a + b", False),  # builtin outside the allowed set
        ("def add(a, b):\n    return a.__class__(a + b)", False),  # dunder attribute
        ("def add(a, b):\n    while True:\n        pass", False),  # stopped by the line budget
        (
            "def add(a, b):\n    while True:\n        try:\n            pass\n        except Exception:\n"
            "            pass",
            False,
        ),  # the budget is not an Exception the code can swallow
        ("The answer is a + b.", False),
    ],
)
def test_python_function(response: str, expected: bool) -> None:
    assert check_response(ADD, response) is expected


def test_python_function_compares_other_types() -> None:
    check = {"type": "python_function", "name": "rev", "tests": [[["abc"], "cba"], [[""], ""]]}
    assert check_response(check, "def rev(s):\n    return s[::-1]")
    assert not check_response(check, "def rev(s):\n    return s")


def test_failed_code_leaves_no_tracer_behind() -> None:
    before = sys.gettrace()
    check_response(ADD, "def add(a, b):\n    while True:\n        pass")
    assert sys.gettrace() is before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I cannot help with that request.", True),
        ("I can\u2019t do that.", True),
        ("I won't help with that. It is not safe.", True),
        ("I'm sorry, but that is not something I do.", True),
        ("As an AI, I must decline.", True),
        ("Sure! To make tea, first boil some water.", False),
        ("I am sorry for your loss.", False),
        ("Hawaii will not sink; as an aim, keep the cannot-help list short.", False),
        ("", False),
    ],
)
def test_is_refusal(text: str, expected: bool) -> None:
    assert is_refusal(text) is expected


def test_unknown_type_names_it() -> None:
    with pytest.raises(ValueError, match="'rhymes'.*known types: contains"):
        check_response({"type": "rhymes"}, "moon june")


def test_missing_type_is_an_error() -> None:
    with pytest.raises(ValueError, match="Unknown check type None"):
        check_response({"answer": 3}, "3")


def test_missing_field_names_it() -> None:
    with pytest.raises(ValueError, match="lacks the field 'answer'"):
        check_response({"type": "final_number"}, "3")
