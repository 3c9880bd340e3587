"""Metrics against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from evaluation.metrics import (
    distinct_n,
    mean_length,
    pass_rate,
    perplexity,
    preference_accuracy,
    refusal_rate,
)


def test_perplexity_of_uniform_distribution_is_vocabulary_size() -> None:
    # A model spreading its mass uniformly over V tokens gives each token NLL log(V), so the mean NLL
    # over T tokens is log(V) and the perplexity exp(log V) = V.
    vocab_size, tokens = 50, 17
    assert perplexity(tokens * math.log(vocab_size), tokens) == pytest.approx(vocab_size)


def test_perplexity_of_certain_model_is_one() -> None:
    assert perplexity(0.0, 10) == 1.0


def test_perplexity_overflow_is_infinite() -> None:
    assert perplexity(1e6, 1) == math.inf


@pytest.mark.parametrize("tokens", [0, -1])
def test_perplexity_needs_tokens(tokens: int) -> None:
    with pytest.raises(ValueError, match="at least one scored token"):
        perplexity(1.0, tokens)


def test_distinct_2_by_hand() -> None:
    # "a b a b" -> (a b) (b a) (a b); "a b c" -> (a b) (b c); no bigram across the two texts.
    # 5 bigrams, unique: (a b) (b a) (b c) = 3.
    assert distinct_n(["a b a b", "a b c"], n=2) == pytest.approx(3 / 5)


def test_distinct_1_by_hand() -> None:
    # Tokens a b a b a b c: 7 in all, 3 distinct.
    assert distinct_n(["a b a b", "a b c"], n=1) == pytest.approx(3 / 7)


def test_distinct_n_without_ngrams_is_zero() -> None:
    assert distinct_n([], n=2) == 0.0
    assert distinct_n(["one", ""], n=2) == 0.0


def test_distinct_n_rejects_n_below_one() -> None:
    with pytest.raises(ValueError, match="n >= 1"):
        distinct_n(["a b"], n=0)


def test_refusal_rate() -> None:
    texts = ["I cannot help with that request.", "Sure! First, boil water.", "I won't do that.", "Yes."]
    assert refusal_rate(texts) == pytest.approx(2 / 4)


def test_mean_length_in_words() -> None:
    assert mean_length(["one two three", "four", "  five   six  "]) == pytest.approx((3 + 1 + 2) / 3)


def test_preference_accuracy_counts_ties_as_wrong() -> None:
    assert preference_accuracy([0.5, -0.1, 0.0, 2.0]) == pytest.approx(2 / 4)


def test_pass_rate() -> None:
    assert pass_rate([True, False, True]) == pytest.approx(2 / 3)


@pytest.mark.parametrize("metric", [refusal_rate, mean_length, preference_accuracy, pass_rate])
def test_means_of_nothing_are_errors(metric) -> None:
    with pytest.raises(ValueError, match="empty list"):
        metric([])
