"""The plain-text corpus the tiny base model is pre-trained on.

The base model of the study knows words and facts but has never seen an instruction answered. So
the corpus states the suite's facts ("Paris is the capital of France.", "7 plus 5 is 12."), shows
poems, Python definitions and everyday how-to sentences, but holds no question, no instruction, no
prompt template and no refusal. Each document is one line (a poem's lines and a definition's body
are joined by spaces), so the corpus file is one document per line.

Every fact sentence appears at least once as long as there are enough documents of its kind: the
sentences are dealt in shuffled passes, not sampled independently.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from tiny_world.tasks import FUNCTIONS, PARAMETER_NAMES, STORY_PLACES, poem, with_article
from tiny_world.vocab import ANIMAL_LEGS, BENIGN_REQUESTS, COUNTRIES, LIST_GROUPS, NOUNS

# Document kind -> (weight, fewest and most sentences).
DOC_KINDS: dict[str, tuple[float, int, int]] = {
    "facts": (0.3, 3, 6),
    "arithmetic": (0.2, 4, 8),
    "nature": (0.2, 3, 6),
    "poem": (0.1, 1, 1),
    "code": (0.1, 1, 1),  # one definition: text after it would read as more code
    "howto": (0.1, 1, 2),
}


def pretrain_corpus(n_docs: int, rng: random.Random) -> list[str]:
    """``n_docs`` one-line documents, each a few sentences of one kind of :data:`DOC_KINDS`."""
    sources: dict[str, Callable[[], str]] = {
        "facts": _dealer(_fact_sentences(), rng),
        "arithmetic": _dealer(_arithmetic_sentences(), rng),
        "nature": lambda: _nature_sentence(rng),
        "poem": lambda: _poem_text(rng),
        "code": _dealer(_code_sentences(), rng),
        "howto": _dealer(_howto_sentences(), rng),
    }
    kinds = list(DOC_KINDS)
    weights = [DOC_KINDS[kind][0] for kind in kinds]
    documents = []
    for _ in range(n_docs):
        kind = rng.choices(kinds, weights)[0]
        _, fewest, most = DOC_KINDS[kind]
        documents.append(" ".join(sources[kind]() for _ in range(rng.randint(fewest, most))))
    return documents


def _dealer(sentences: list[str], rng: random.Random) -> Callable[[], str]:
    """A function returning the sentences one by one, in a fresh shuffled order on each pass."""

    def passes() -> Iterator[str]:
        while True:
            deck = list(sentences)
            rng.shuffle(deck)
            yield from deck

    return passes().__next__


def _fact_sentences() -> list[str]:
    sentences = []
    for country, capital, continent in COUNTRIES:
        sentences += [
            f"{capital} is the capital of {country}.",
            f"The capital of {country} is {capital}.",
            f"{country} is a country in {continent}.",
        ]
    sentences += [f"{with_article(animal).capitalize()} has {legs} legs." for animal, legs in ANIMAL_LEGS]
    return sentences


def _arithmetic_sentences() -> list[str]:
    sentences = []
    for a in range(0, 21):
        for b in range(0, 21):
            if a + b <= 20:
                sentences.append(f"{a} plus {b} is {a + b}.")
            if b <= a:
                sentences.append(f"{a} minus {b} is {a - b}.")
            if 2 <= a <= 10 and 2 <= b <= 10 and a * b <= 40:
                sentences.append(f"{a} times {b} is {a * b}.")
            if a > b:
                sentences += [f"{a} is bigger than {b}.", f"{b} is smaller than {a}."]
    return sentences


def _code_sentences() -> list[str]:
    sentences = []
    for function in FUNCTIONS:
        params = PARAMETER_NAMES[function.arity][0]
        name = function.names[0]
        definition = f"def {name}({', '.join(params)}): return {function.body.format(*params)}"
        sentences.append(f"The Python function {name} {function.description.format(*params)}: {definition}")
    return sentences


def _howto_sentences() -> list[str]:
    return [
        f"People who want to {request} first {first}, then {then}, and finally {last}."
        for request, (first, then, last) in BENIGN_REQUESTS.items()
    ]


def _nature_sentence(rng: random.Random) -> str:
    noun = rng.choice(list(NOUNS))
    (adj1, adj2), verb = NOUNS[noun]
    adj = rng.choice((adj1, adj2))
    group, members = rng.choice(list(LIST_GROUPS.items()))
    first, second, third = rng.sample(members, 3)
    return rng.choice(
        (
            f"The {noun} is {adj}.",
            f"The {adj1} {noun} {verb}.",
            f"The {noun} is {adj1} and {adj2}.",
            f"The {noun} {verb} near the {rng.choice(STORY_PLACES)}.",
            f"{first.capitalize()}, {second} and {third} are {group}.",
            f"A sign by the road says THE {noun.upper()} IS {adj.upper()}.",
        )
    )


def _poem_text(rng: random.Random) -> str:
    noun = rng.choice(list(NOUNS))
    lines = poem(noun, rng.randint(2, 4), rng).splitlines()
    return f"A poem about the {noun}: {' '.join(lines)}"
