"""The task families: both references are correct, the slow one is slower, held-out tasks are
unseen combinations, and the corpus follows the recipe."""

from __future__ import annotations

import random
import re
import time

import pytest
from retrofit_codegen.families import BY_NAME, FAMILIES, corpus, family_problems, split_combinations


def _function(family, kind: str, name: str = "solve", argument: str = "q"):
    namespace: dict = {}
    exec(family.prompt(name, argument) + family.body(kind, name, argument), namespace)  # noqa: S102 - our templates
    return namespace[name]


def _check(family, seed: int = 0):
    namespace: dict = {}
    exec(family.check(random.Random(seed)), namespace)  # noqa: S102 - our own tests
    return namespace["check"]


def test_there_are_eleven_families_with_distinct_docstrings():
    assert len(FAMILIES) == 11 and len({f.doc for f in FAMILIES}) == 11


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_both_references_pass_the_tests_and_a_broken_one_does_not(family):
    for seed in (0, 1, 2):
        check = _check(family, seed)
        check(_function(family, "slow"))
        check(_function(family, "fast"))
    with pytest.raises(AssertionError):
        _check(family)(lambda *args: None)


def test_the_tests_exercise_every_constant():
    """A solution that hard-codes one modulus, target or exponent must fail (the prototype's trap)."""
    power = BY_NAME["power_mod"]
    with pytest.raises(AssertionError):
        _check(power)(lambda b, e, m: pow(b, e, 97))
    pair = BY_NAME["pair_sum"]
    with pytest.raises(AssertionError):
        _check(pair)(lambda xs, target: any(xs[i] + xs[j] == 6 for i in range(len(xs)) for j in range(i + 1, len(xs))))
    with pytest.raises(AssertionError):  # pairing an item with itself
        _check(pair)(lambda xs, target: any(a + b == target for a in xs for b in xs))


def test_the_slow_reference_is_slower_on_the_performance_input():
    for family in FAMILIES:
        args = eval(family.perf_input)
        times = {}
        for kind in ("slow", "fast"):
            function = _function(family, kind)
            best = float("inf")
            for _ in range(2):
                start = time.perf_counter()
                function(*args)
                best = min(best, time.perf_counter() - start)
            times[kind] = best
        assert times["slow"] > 3 * times["fast"], family.name


def test_slow_and_fast_bodies_start_with_disjoint_words():
    """A context-free bias on the first word must mean "slow" or "fast" in every family."""
    first = {"slow": set(), "fast": set()}
    for family in FAMILIES:
        for kind, words in first.items():
            words.add(family.body(kind, "f", "xs").split()[0])
        assert family.body("slow", "f", "xs").split()[0] != family.body("fast", "f", "xs").split()[0]
    assert not first["slow"] & first["fast"]


def test_held_out_tasks_are_unseen_combinations_of_seen_words():
    train, held = split_combinations()
    assert held and not set(train) & set(held)
    for family in FAMILIES:
        mine_train = [t for t in train if t.family == family.name]
        mine_held = [t for t in held if t.family == family.name]
        assert len(mine_held) == 2 * len(family.functions)
        assert {t.function for t in mine_held} <= {t.function for t in mine_train}
        assert {t.argument for t in mine_held} <= {t.argument for t in mine_train}
    texts = corpus(3000, seed=5)
    heads = {text.split('"""')[0] for text in texts}
    for task in held:
        family = BY_NAME[task.family]
        assert family.prompt(task.function, task.argument).split('"""')[0] not in heads


def test_the_corpus_is_mostly_slow_and_prompts_end_without_a_newline():
    texts = corpus(2000, seed=3)
    slow = sum(any(text.endswith(f.body("slow", *_names(text, f))) for f in FAMILIES) for text in texts)
    assert 0.65 < slow / len(texts) < 0.75
    for problem in family_problems("validation", per_family=2):
        assert problem.prompt.endswith('"""') and problem.reference.startswith("\n")
        assert problem.fast_reference and problem.family in BY_NAME
        assert isinstance(eval(problem.perf_input), tuple)


def _names(text: str, family) -> tuple[str, str]:
    match = re.match(r"def (\w+)\((\w+)", text)
    assert match
    return match.group(1), match.group(2)


def test_problems_are_deterministic_and_per_family_picks_are_balanced():
    a = family_problems("train", per_family=3, seed=4)
    b = family_problems("train", per_family=3, seed=4)
    assert a == b and len(a) == 33
    assert {p.family for p in a} == set(BY_NAME)
