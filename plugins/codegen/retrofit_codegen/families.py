"""The pack's own task families: small functions with a slow and a fast correct solution.

Each family has a docstring (the task), a pool of function names and argument names, a slow
and a fast template, a ground-truth implementation that computes the expected values of the
tests, and a performance input on which the slow solution is clearly slower.

Design rules learnt from the prototype (DESIGN.md, "Code generation demo recipe"):

* prompts end with the closing docstring quotes, without the trailing newline (byte-level BPE
  would merge it with the indentation of the body);
* constants are arguments (the model does not copy numeric constants reliably) and the tests
  exercise each of them with several values;
* the first token of every slow body and of every fast body belong to two disjoint sets, so a
  context-free logit bias on those "divergence tokens" means the same thing in every family.

Held-out tasks are (function name, argument name) combinations that never occur in the
training corpus nor in the train tasks.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: names of the main argument; a family may add fixed extra arguments after it
ARGUMENTS = ("xs", "items", "values", "data", "nums", "seq", "arr", "elements")
TEXT_ARGUMENTS = ("text", "word", "s", "first", "left", "source")
NUMBER_ARGUMENTS = ("n", "k", "limit", "count_to", "m", "size")
SLOW_SHARE = 0.7  # share of slow solutions in the corpus, as in real code


@dataclass(frozen=True)
class Family:
    """One task family: names, docstring, both solutions, ground truth and inputs."""

    name: str
    doc: str
    functions: tuple[str, ...]
    arguments: tuple[str, ...]
    extra: str  # further parameters after the main one (", target"), fixed names
    slow: str  # body templates: {fn} function name, {a} main argument name
    fast: str
    truth: Callable[..., Any]
    test_inputs: Callable[[random.Random], list[tuple[Any, ...]]]
    perf_input: str  # a Python expression giving the argument tuple of the timing run

    def prompt(self, function: str, argument: str) -> str:
        return f'def {function}({argument}{self.extra}):\n    """{self.doc}"""'

    def body(self, kind: str, function: str, argument: str) -> str:
        """The completion text (starting with the newline the prompt leaves out)."""
        template = self.slow if kind == "slow" else self.fast
        return "\n" + template.format(fn=function, a=argument).strip("\n") + "\n"

    def check(self, rng: random.Random) -> str:
        """Source of ``check(candidate)`` with expected values from the ground truth."""
        lines = ["def check(candidate):"]
        for args in self.test_inputs(rng):
            expected = self.truth(*_copy(args))
            call = ", ".join(repr(a) for a in args)
            lines.append(f"    assert candidate({call}) == {expected!r}, {f'input {call}'!r}")
        return "\n".join(lines) + "\n"


def _copy(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(list(a) if isinstance(a, list) else a for a in args)


def _ints(rng: random.Random, low: int, high: int, count: int) -> list[int]:
    return [rng.randint(low, high) for _ in range(count)]


def _lists(rng: random.Random, low: int = -5, high: int = 9) -> list[tuple[Any, ...]]:
    sizes = [0, 1, 2, 5, 8, 12]
    return [(_ints(rng, low, high, size),) for size in sizes]


def _dedupe(xs: list[int]) -> list[int]:
    return list(dict.fromkeys(xs))


def _counts(xs: list[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for x in xs:
        counts[x] = counts.get(x, 0) + 1
    return counts


def _fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def _pair(xs: list[int], target: int) -> bool:
    return any(xs[i] + xs[j] == target for i in range(len(xs)) for j in range(i + 1, len(xs)))


def _pair_inputs(rng: random.Random) -> list[tuple[Any, ...]]:
    cases = []
    for size in (0, 1, 2, 4, 7, 10):
        xs = _ints(rng, -6, 12, size)
        cases.append((xs, rng.randint(-4, 20)))
    cases.append(([3, 3], 6))  # one value may not pair with itself, but two equal values may
    cases.append(([3], 6))
    cases.append(([1, 5, 9], 14))
    return cases


def _anagram_inputs(rng: random.Random) -> list[tuple[Any, ...]]:
    cases: list[tuple[Any, ...]] = [("", ""), ("ab", "ba"), ("aab", "abb"), ("abc", "abcd")]
    for size in (3, 6, 9):
        word = "".join(rng.choice("abcde") for _ in range(size))
        shuffled = "".join(rng.sample(word, len(word)))
        cases.append((word, shuffled))
        cases.append((word, shuffled[:-1] + ("e" if shuffled[-1] != "e" else "a")))
    return cases


def _common_inputs(rng: random.Random) -> list[tuple[Any, ...]]:
    return [(_ints(rng, 0, 9, size), _ints(rng, 0, 9, other)) for size, other in
            ((0, 3), (3, 0), (4, 4), (6, 3), (8, 8), (10, 5))]


def _primes(n: int) -> int:
    return sum(1 for k in range(2, n) if all(k % d for d in range(2, int(k ** 0.5) + 1)))


def _max_sub(xs: list[int]) -> int:
    best = current = xs[0]
    for x in xs[1:]:
        current = max(x, current + x)
        best = max(best, current)
    return best


def _powmod_inputs(rng: random.Random) -> list[tuple[Any, ...]]:
    cases = [(2, 0, 7), (3, 1, 5), (0, 5, 11)]
    for modulus in (2, 13, 97, 1009, 10 ** 9 + 7):  # every modulus is tested, not just one
        cases.append((rng.randint(2, 50), rng.randint(2, 60), modulus))
    return cases


def _prefix(xs: list[int]) -> list[int]:
    out, total = [], 0
    for x in xs:
        total += x
        out.append(total)
    return out


FAMILIES: tuple[Family, ...] = (
    Family(
        "dedupe", "Return the items of the list without duplicates, keeping first occurrences in order.",
        ("dedupe", "unique", "remove_duplicates", "distinct", "uniq", "drop_repeats"), ARGUMENTS, "",
        slow="""
    out = []
    for x in {a}:
        if x not in out:
            out.append(x)
    return out""",
        fast="""
    return list(dict.fromkeys({a}))""",
        truth=_dedupe, test_inputs=_lists,
        perf_input="([i % 700 for i in range(2100)],)"),
    Family(
        "count", "Return a dict mapping each item of the list to how many times it occurs.",
        ("count_items", "frequencies", "tally", "histogram", "occurrences", "counter"), ARGUMENTS, "",
        slow="""
    out = {{}}
    for x in {a}:
        out[x] = {a}.count(x)
    return out""",
        fast="""
    counts = {{}}
    for x in {a}:
        counts[x] = counts.get(x, 0) + 1
    return counts""",
        truth=_counts, test_inputs=_lists,
        perf_input="([i % 300 for i in range(1000)],)"),
    Family(
        "reverse", "Return a new list with the items in reverse order.",
        ("reverse", "reversed_list", "backwards", "flip", "mirror", "invert_order"), ARGUMENTS, "",
        slow="""
    out = []
    for x in {a}:
        out.insert(0, x)
    return out""",
        fast="""
    return {a}[::-1]""",
        truth=lambda xs: xs[::-1], test_inputs=_lists,
        perf_input="(list(range(10000)),)"),
    Family(
        "fibonacci", "Return the n-th Fibonacci number, with fib(0) = 0 and fib(1) = 1.",
        ("fib", "fibonacci", "nth_fib", "fib_number", "fibo", "golden_seq"), NUMBER_ARGUMENTS, "",
        slow="""
    if {a} < 2:
        return {a}
    return {fn}({a} - 1) + {fn}({a} - 2)""",
        fast="""
    prev, cur = 0, 1
    for _ in range({a}):
        prev, cur = cur, prev + cur
    return prev""",
        truth=_fib, test_inputs=lambda rng: [(n,) for n in (0, 1, 2, 3, 7, rng.randint(10, 16))],
        perf_input="(23,)"),
    Family(
        "pair_sum", "Return True if two items at different positions add up to target.",
        ("has_pair_sum", "two_sum", "pair_exists", "find_pair", "sums_to", "any_pair"), ARGUMENTS, ", target",
        slow="""
    for i in range(len({a})):
        for j in range(i + 1, len({a})):
            if {a}[i] + {a}[j] == target:
                return True
    return False""",
        fast="""
    seen = set()
    for x in {a}:
        if target - x in seen:
            return True
        seen.add(x)
    return False""",
        truth=_pair, test_inputs=_pair_inputs,
        perf_input="(list(range(0, 1200, 2)), 1)"),
    Family(
        "anagram", "Return True if the two strings are anagrams of each other.",
        ("is_anagram", "anagrams", "same_letters", "permutation_of", "letters_match", "scrambled"),
        TEXT_ARGUMENTS, ", other",
        slow="""
    for c in {a} + other:
        if {a}.count(c) != other.count(c):
            return False
    return len({a}) == len(other)""",
        fast="""
    return sorted({a}) == sorted(other)""",
        truth=lambda a, b: sorted(a) == sorted(b), test_inputs=_anagram_inputs,
        perf_input="('abcdefghij' * 300, 'jihgfedcba' * 300)"),
    Family(
        "common", "Return the items of the first list that also occur in other, in order.",
        ("common_items", "intersect", "shared", "in_both", "overlap", "keep_known"), ARGUMENTS, ", other",
        slow="""
    out = []
    for x in {a}:
        if x in other:
            out.append(x)
    return out""",
        fast="""
    lookup = set(other)
    return [x for x in {a} if x in lookup]""",
        truth=lambda a, b: [x for x in a if x in b], test_inputs=_common_inputs,
        perf_input="(list(range(1000)), list(range(700, 1700)))"),
    Family(
        "primes", "Return how many prime numbers are smaller than n.",
        ("count_primes", "primes_below", "prime_count", "num_primes", "pi_below", "primes_under"),
        NUMBER_ARGUMENTS, "",
        slow="""
    count = 0
    for k in range(2, {a}):
        if all(k % d for d in range(2, k)):
            count += 1
    return count""",
        fast="""
    sieve = [True] * max({a}, 2)
    sieve[0] = sieve[1] = False
    for i in range(2, int({a} ** 0.5) + 1):
        if sieve[i]:
            for j in range(i * i, {a}, i):
                sieve[j] = False
    return sum(sieve[:{a}])""",
        truth=_primes, test_inputs=lambda rng: [(n,) for n in (0, 1, 2, 3, 10, 30, rng.randint(40, 120))],
        perf_input="(1500,)"),
    Family(
        "max_subarray", "Return the largest sum of a non-empty contiguous run of the list.",
        ("max_subarray", "best_run", "largest_sum", "max_segment", "top_window", "kadane"), ARGUMENTS, "",
        slow="""
    out = {a}[0]
    for i in range(len({a})):
        total = 0
        for j in range(i, len({a})):
            total += {a}[j]
            if total > out:
                out = total
    return out""",
        fast="""
    best = cur = {a}[0]
    for x in {a}[1:]:
        cur = max(x, cur + x)
        best = max(best, cur)
    return best""",
        truth=_max_sub, test_inputs=lambda rng: [(xs,) for (xs,) in _lists(rng, -9, 9) if xs] + [([-3, -1, -2],)],
        perf_input="([(i * 37) % 23 - 11 for i in range(500)],)"),
    Family(
        "power_mod", "Return base ** exponent % modulus for non-negative integers.",
        ("power_mod", "modpow", "pow_mod", "mod_exp", "expmod", "power_modulo"), ("base", "b", "x", "value", "num", "g"),
        ", exponent, modulus",
        slow="""
    out = 1
    for _ in range(exponent):
        out = out * {a} % modulus
    return out""",
        fast="""
    return pow({a}, exponent, modulus)""",
        truth=lambda b, e, m: pow(b, e, m), test_inputs=_powmod_inputs,
        perf_input="(7, 150000, 1000003)"),
    Family(
        "prefix_sums", "Return the list of running totals of the list.",
        ("prefix_sums", "running_total", "cumsum", "accumulate", "partial_sums", "scan_sum"), ARGUMENTS, "",
        slow="""
    out = []
    for i in range(len({a})):
        out.append(sum({a}[:i + 1]))
    return out""",
        fast="""
    total = 0
    result = []
    for x in {a}:
        total += x
        result.append(total)
    return result""",
        truth=_prefix, test_inputs=_lists,
        perf_input="(list(range(1400)),)"),
)
BY_NAME = {family.name: family for family in FAMILIES}


@dataclass(frozen=True)
class Task:
    """One task: a family with a function name and an argument name."""

    family: str
    function: str
    argument: str

    @property
    def task_id(self) -> str:
        return f"{self.family}/{self.function}/{self.argument}"


def split_combinations(seed: int = 0, held_out_diagonals: int = 2) -> tuple[list[Task], list[Task]]:
    """All (function, argument) combinations of every family, split into train and held-out.

    Held out are ``held_out_diagonals`` shuffled "diagonals" of the function x argument grid:
    each function name and each argument name keeps most of its combinations in train, so
    held-out tasks are new *combinations*, not new words.
    """
    rng = random.Random(seed)
    train: list[Task] = []
    held: list[Task] = []
    for family in FAMILIES:
        arguments = list(family.arguments)
        rng.shuffle(arguments)
        shifts = rng.sample(range(len(arguments)), held_out_diagonals)
        for i, function in enumerate(family.functions):
            for j, argument in enumerate(arguments):
                task = Task(family.name, function, argument)
                (held if (j - i) % len(arguments) in shifts else train).append(task)
    return train, held


def corpus(size: int, seed: int = 0, slow_share: float = SLOW_SHARE) -> list[str]:
    """Training texts (prompt + body) from the train combinations, slow with ``slow_share``."""
    rng = random.Random(seed)
    train, _ = split_combinations()
    texts = []
    for _ in range(size):
        task = rng.choice(train)
        family = BY_NAME[task.family]
        kind = "slow" if rng.random() < slow_share else "fast"
        texts.append(family.prompt(task.function, task.argument) + family.body(kind, task.function, task.argument))
    return texts


def problems(tasks: Sequence[Task], seed: int = 0) -> list[Any]:
    """:class:`retrofit_codegen.problems.Problem` objects for ``tasks`` (tests drawn with ``seed``)."""
    from .problems import Problem

    out = []
    for index, task in enumerate(tasks):
        family = BY_NAME[task.family]
        rng = random.Random(f"{seed}:{task.task_id}")
        out.append(Problem(
            task_id=task.task_id, prompt=family.prompt(task.function, task.argument), entry_point=task.function,
            test=family.check(rng), reference=family.body("slow", task.function, task.argument),
            perf_input=family.perf_input, fast_reference=family.body("fast", task.function, task.argument),
            family=family.name))
    return out


def family_problems(split: str, per_family: int = 0, seed: int = 0) -> list[Any]:
    """The train or validation ("held-out") problems; ``per_family`` > 0 keeps that many per family."""
    train, held = split_combinations()
    tasks = train if split == "train" else held
    if per_family:
        rng = random.Random(f"pick:{seed}:{split}")
        picked = []
        for family in FAMILIES:
            mine = [t for t in tasks if t.family == family.name]
            picked.extend(rng.sample(mine, min(per_family, len(mine))))
        tasks = picked
    return problems(tasks, seed)
