"""The judge: verdicts, the perf-input result check, speed against references timed in the same batch."""

from __future__ import annotations

import pytest
from retrofit_codegen.judge import Judge, SampleResult, summarize
from retrofit_codegen.problems import Problem
from retrofit_codegen.sandbox import Limits

COMMON = Problem(
    task_id="fam/common", prompt="def common(xs, ys):\n    \"\"\"How many items of xs are in ys.\"\"\"\n",
    entry_point="common",
    test="def check(candidate):\n    assert candidate([1, 2, 3], [2, 3, 4]) == 2\n    assert candidate([], [1]) == 0\n",
    reference="    return sum(1 for x in xs if x in ys)\n",
    fast_reference="    seen = set(ys)\n    return sum(1 for x in xs if x in seen)\n",
    perf_input="(list(range(2000)), list(range(1000, 3000)))", family="membership")
UNTIMED = Problem("plain/inc", "def inc(x):\n", "inc", "def check(candidate):\n    assert candidate(1) == 2\n",
                  "    return x + 1\n", "")
SLOW = "    total = 0\n    for x in xs:\n        if x in ys:\n            total += 1\n    return total\n"
FAST = "    lookup = set(ys)\n    return len([x for x in xs if x in lookup])\n"
WRONG = "    return 0\n"
WRONG_ON_BIG_INPUTS = "    return sum(1 for x in xs if x in ys) if len(xs) < 100 else 0\n"  # passes the weak tests


@pytest.fixture(scope="module")
def judged() -> tuple[list[SampleResult], Judge]:
    judge = Judge(Limits(cpu_seconds=5, wall_seconds=10), repeats=3)
    items = [(COMMON, SLOW), (COMMON, FAST), (COMMON, WRONG), (COMMON, WRONG_ON_BIG_INPUTS), (UNTIMED, "    return x + 1\n"),
             (COMMON, FAST)]
    yield judge.judge(items), judge
    judge.close()


def test_statuses_and_failing_tests(judged):
    results, _ = judged
    assert [r.status for r in results] == ["passed", "passed", "failed", "failed", "passed", "passed"]
    assert results[2].failing_test == "assert candidate([1, 2, 3], [2, 3, 4]) == 2"
    assert results[3].failing_test == "perf_input" and "differs from the reference" in results[3].detail


def test_correct_samples_are_timed_against_both_references(judged):
    results, _ = judged
    slow, fast = results[0], results[1]
    for result in (slow, fast):
        assert result.seconds and result.reference_seconds and result.fast_reference_seconds
        assert result.speedup == pytest.approx(result.reference_seconds / result.seconds)
    # list membership against set membership on 2000 x 2000 items: orders of magnitude apart,
    # so even a noisy shared machine keeps a wide margin
    assert fast.speedup > 5 * slow.speedup
    assert fast.fast is True and slow.fast is False
    assert results[5].speedup is not None  # a duplicate sample is timed too (once per program)
    assert results[4].seconds is None and results[4].speedup is None and results[4].fast is None  # no perf_input


def test_identical_samples_are_checked_once_and_classified_the_same(judged):
    results, judge = judged
    executed = judge.executed
    again = judge.judge([(COMMON, SLOW), (COMMON, WRONG), (COMMON, FAST)])
    assert judge.executed == executed  # every program came from the cache
    assert [r.status for r in again] == [results[0].status, results[2].status, results[1].status]
    assert again[0].seconds is not None  # but timing is redone in each batch


def test_parallel_workers_give_the_same_verdicts_and_repeats_zero_skips_timing():
    items = [(COMMON, SLOW), (COMMON, WRONG), (UNTIMED, "    return x + 2\n"), (UNTIMED, "    return x + 1\n")]
    with Judge(repeats=0, workers=2) as judge:
        results = judge.judge(items)
    assert [r.status for r in results] == ["passed", "failed", "failed", "passed"]
    assert all(r.seconds is None for r in results)


def test_a_broken_reference_leaves_samples_untimed_with_a_reason():
    broken = Problem(**{**COMMON.__dict__, "task_id": "fam/broken", "reference": "    return -1\n"})
    with Judge(repeats=1) as judge:
        (result,) = judge.judge([(broken, FAST)])
    assert result.status == "passed" and result.seconds is None and "reference fails" in result.detail


def test_summarize_reports_pass_at_1_and_the_geometric_mean_speedup():
    def result(task: str, status: str, speedup: float | None = None, fast: bool | None = None) -> SampleResult:
        return SampleResult(task, status, None, 1.0 if speedup else None, None, None, speedup, fast)

    summary = summarize([result("a", "passed", 2.0, False), result("a", "failed"), result("b", "passed", 8.0, True),
                         result("b", "passed")])
    assert summary["pass_at_1"] == pytest.approx((1 / 2 + 2 / 2) / 2)
    assert summary["speedup_geomean"] == pytest.approx(4.0)
    assert summary["fast_share"] == pytest.approx(0.5)
    assert summary["statuses"] == {"passed": 3, "failed": 1} and summary["timed"] == 2


def test_time_mode_leaves_the_instruction_fields_empty(judged):
    results, judge = judged
    assert judge.measure == "time"
    assert all(r.instructions is None and r.reference_instructions is None and r.fast_reference_instructions is None
               for r in results)
    assert {"instructions", "reference_instructions", "fast_reference_instructions"} <= set(results[0].to_dict())
