"""The semantic cache's guard: each rule turns its kind of near miss into a miss and lets
paraphrases through (the labelled set in bench/data measures it at scale)."""

from __future__ import annotations

import pytest

from flaregate.cache.semantic.guard import PromptFeatures, disagreement, features

NEAR_MISSES = [
    ("numbers", "What is 2 + 2?", "What is 2 + 3?"),
    ("numbers", "Is two plus two four?", "Is two plus three four?"),
    ("negations", "Do cats like water?", "Don't cats like water?"),
    ("negations", "List foods with gluten.", "List foods without gluten."),
    ("entities", "What is the capital of France?", "What is the capital of Germany?"),
    ("entities", "How do I sort a list in python?", "How do I sort a list in rust?"),
    ("units", "Convert 10 miles to kilometers.", "Convert 10 miles to meters."),
    ("units", "What is 100 degrees Fahrenheit in Celsius?", "What is 100 degrees Celsius in Fahrenheit?"),
    ("languages", "What is the capital of France?", "Quelle est la capitale de la France ?"),
    ("languages", "Answer in English: what is DNA?", "Answer in French: what is DNA?"),
    ("spans", "What does `ls -la` show?", "What does `ls -lh` show?"),
    ('spans', 'Define the word "ephemeral".', 'Define the word "ethereal".'),
]

PARAPHRASES = [
    ("What is the capital of France?", "Which city is the capital of France?"),
    ("Why don't penguins fly?", "Why can't penguins fly?"),
    ("Convert 10 miles to kilometers.", "How many kilometers is 10 miles?"),
    ("Who was the first president of the United States?", "Who served as the first US president?"),
    ("What is 15% of 200?", "How much is 15 percent of 200?"),
]


@pytest.mark.parametrize(("rule", "a", "b"), NEAR_MISSES)
def test_each_rule_catches_its_near_miss(rule: str, a: str, b: str) -> None:
    assert disagreement(features(a), features(b), (rule,)) == rule
    assert disagreement(features(a), features(b)) is not None


@pytest.mark.parametrize(("a", "b"), PARAPHRASES)
def test_paraphrases_agree(a: str, b: str) -> None:
    assert disagreement(features(a), features(b)) is None


def test_features_round_trip_through_json() -> None:
    f = features('Convert 10 miles to kilometers in "France" with `x = 1`, not 2')
    assert PromptFeatures.from_json(f.to_json()) == f


@pytest.mark.parametrize("raw", [{}, {"numbers": "1"}, {"numbers": [], "negations": True}, {"numbers": [1]}])
def test_corrupt_features_are_refused(raw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PromptFeatures.from_json(raw)


@pytest.mark.parametrize("text", ["", " ", "```", "`", '"', "\u0000", "٣", "½", "1,2,3,,,", "🙂" * 50, "a" * 10000])
def test_any_text_has_features(text: str) -> None:
    f = features(text)
    assert disagreement(f, features(text)) is None
