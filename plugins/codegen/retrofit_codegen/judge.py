"""Judge generated completions: correctness in the sandbox, then speed against the references.

Correctness is cached within a :class:`Judge` by a hash of everything the verdict depends on
(program = prompt + completion, tests, entry point, performance input), so identical samples
are executed once. Speed is *not* cached: every :meth:`Judge.judge` call re-times its correct
samples together with the references of the same problems, interleaved round by round, and keeps
each program's minimum; on a noisy shared machine only times taken side by side compare.

With ``measure="instructions"`` the speed of a correct sample is instead the number of
instructions its call on the performance input executes under ``valgrind --tool=callgrind``
(deterministic, so one run per program and no interleaving; see
:func:`retrofit_codegen.sandbox._serve_instructions` for how the call is isolated). It is ~50x
slower per program: a mode for reports, not for the tuning loop.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from queue import Queue
from typing import Any, Self

from .problems import Problem
from .sandbox import DEFAULT_PRELOAD, Job, Limits, Outcome, Sandbox, SandboxError, callgrind_limits, valgrind_path

Progress = Callable[[int, int, str], None]  # (done, total, phase)
MEASURES = ("time", "instructions")  # what Judge(measure=...) compares samples by


@dataclass
class SampleResult:
    """The verdict on one (problem, completion) pair."""

    task_id: str
    status: str  # "passed" | "failed" | "timeout" | "memory" | "crashed" | "killed"
    failing_test: str | None  # source of the failing assert, "perf_input", or None
    seconds: float | None  # the sample's time on perf_input (passed samples only)
    reference_seconds: float | None  # the reference, re-timed in the same batch
    fast_reference_seconds: float | None
    speedup: float | None  # reference_seconds / seconds
    fast: bool | None  # faster than the geometric midpoint of the two references (None without both)
    detail: str = ""
    # measure="instructions" only: callgrind counts of the call on perf_input (the seconds stay None)
    instructions: int | None = None
    reference_instructions: int | None = None
    fast_reference_instructions: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _key(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


class Judge:
    """Classify and time samples in warm sandboxes; a context manager (closing stops them).

    ``repeats`` timing rounds per batch (0: correctness only); ``workers`` sandboxes run jobs
    in parallel (timing is fairest with 1 on a loaded machine); ``check_perf_output`` fails a
    sample whose result on the performance input differs from the reference's (fast because
    wrong is not fast). ``progress(done, total, phase)`` is called as jobs finish.

    ``measure="instructions"`` compares instruction counts under callgrind instead of seconds
    (``SampleResult.instructions`` and friends; ``speedup`` and ``fast`` from the counts, the
    midpoint of the references' counts as for seconds). Counts are deterministic, so each
    program is counted once per batch whatever ``repeats`` (0 still means correctness only),
    and parallel ``workers`` do not disturb them. Counting runs get :func:`callgrind_limits`
    of ``limits`` (CPU and wall x20, memory x4). Without valgrind it raises :class:`SandboxError`.
    """

    def __init__(self, limits: Limits = Limits(), *, repeats: int = 5, workers: int = 1,  # noqa: B008 (frozen)
                 check_perf_output: bool = True, preload: tuple[str, ...] = DEFAULT_PRELOAD,
                 progress: Progress | None = None, measure: str = "time") -> None:
        if repeats < 0 or workers < 1:
            raise ValueError("repeats must be >= 0 and workers >= 1")
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
        if measure == "instructions" and valgrind_path() is None:
            raise SandboxError("measure='instructions' needs valgrind (valgrind --tool=callgrind), "
                               "which is not installed")
        self.measure = measure
        self.limits, self.repeats, self.workers = limits, repeats, workers
        self.check_perf_output, self.progress = check_perf_output, progress
        self._preload = preload
        self._idle: Queue[Sandbox] = Queue()
        self._sandboxes: list[Sandbox] = []
        self._checks: dict[str, Outcome] = {}
        self.executed = 0  # correctness jobs actually run (the rest came from the cache)

    # -- running jobs ---------------------------------------------------------------------
    def _sandbox(self) -> Sandbox:
        if self._idle.empty() and len(self._sandboxes) < self.workers:
            sandbox = Sandbox(self.limits, preload=self._preload)
            sandbox.start()
            self._sandboxes.append(sandbox)
            return sandbox
        return self._idle.get()

    def _run(self, job: Job, limits: Limits | None = None) -> Outcome:
        sandbox = self._sandbox()
        try:
            return sandbox.run(job, limits)
        finally:
            self._idle.put(sandbox)

    def run_jobs(self, jobs: Sequence[Job], phase: str = "jobs", limits: Limits | None = None) -> list[Outcome]:
        """Run ``jobs`` (in order with one worker), each in a fresh contained process, under
        ``limits`` (default: the judge's)."""
        total, done = len(jobs), 0
        outcomes: list[Outcome] = []
        if self.workers == 1:
            for job in jobs:
                outcomes.append(self._run(job, limits))
                done += 1
                if self.progress:
                    self.progress(done, total, phase)
            return outcomes
        with ThreadPoolExecutor(self.workers) as pool:
            for outcome in pool.map(lambda job: self._run(job, limits), jobs):
                outcomes.append(outcome)
                done += 1
                if self.progress:
                    self.progress(done, total, phase)
        return outcomes

    # -- judging --------------------------------------------------------------------------
    def _check_key(self, problem: Problem, program: str) -> str:
        return _key(program, problem.test, problem.entry_point, problem.perf_input)

    def _check_all(self, pending: dict[str, Job]) -> None:
        todo = [(key, job) for key, job in pending.items() if key not in self._checks]
        for (key, _), outcome in zip(todo, self.run_jobs([job for _, job in todo], "checking"), strict=True):
            self._checks[key] = outcome
        self.executed += len(todo)

    def judge(self, items: Sequence[tuple[Problem, str]]) -> list[SampleResult]:
        """Verdicts for ``(problem, completion)`` pairs, in order; the completion continues the
        prompt. Correct samples of problems with a ``perf_input`` are timed against the
        problem's references in this same batch."""
        pending: dict[str, Job] = {}
        keys: list[str] = []
        references: dict[str, tuple[str, str | None]] = {}  # task_id -> reference keys (slow, fast)
        for problem, completion in items:
            key = self._check_key(problem, problem.program(completion))
            keys.append(key)
            pending.setdefault(key, Job(problem.program(completion), problem.entry_point, problem.test,
                                        problem.perf_input))
            if problem.perf_input and problem.task_id not in references:
                pair: list[str | None] = []
                for reference in (problem.reference, problem.fast_reference):
                    if reference is None:
                        pair.append(None)
                        continue
                    ref_key = self._check_key(problem, problem.program(reference))
                    pending.setdefault(ref_key, Job(problem.program(reference), problem.entry_point, problem.test,
                                                    problem.perf_input))
                    pair.append(ref_key)
                references[problem.task_id] = (pair[0] or "", pair[1])
        self._check_all(pending)

        results: list[SampleResult] = []
        timed: dict[str, dict[str, str]] = {}  # task_id -> {program key: program} to time
        for (problem, completion), key in zip(items, keys, strict=True):
            outcome = self._checks[key]
            result = SampleResult(problem.task_id, outcome.status, outcome.failing_test, None, None, None, None, None,
                                  outcome.detail)
            results.append(result)
            if outcome.status != "passed" or not problem.perf_input:
                continue
            slow_key, fast_key = references[problem.task_id]
            slow = self._checks[slow_key]
            if slow.status != "passed":
                result.detail = f"not timed: the reference fails ({slow.status}: {slow.detail or slow.failing_test})"
                continue
            if self.check_perf_output and outcome.digest != slow.digest:
                result.status, result.failing_test = "failed", "perf_input"
                result.detail = "the result on perf_input differs from the reference's"
                continue
            programs = timed.setdefault(problem.task_id, {})
            programs[slow_key] = problem.program(problem.reference)
            if fast_key is not None and self._checks[fast_key].status == "passed":
                programs[fast_key] = problem.program(problem.fast_reference or "")
            programs[key] = problem.program(completion)
        if not timed or self.repeats == 0:
            return results
        counting = self.measure == "instructions"
        counts, failures = self._count(items, timed) if counting else ({}, {})
        measured: dict[str, float] = {**counts} if counting else self._time(items, timed)
        floor = 1 if counting else 1e-9  # a speed-up needs a positive denominator
        for (problem, _), key, result in zip(items, keys, results, strict=True):
            if result.status != "passed" or problem.task_id not in timed:
                continue
            slow_key, fast_key = references[problem.task_id]
            own, reference = measured.get(key), measured.get(slow_key)
            fast_reference = measured.get(fast_key) if fast_key else None
            if counting:
                result.instructions, result.reference_instructions = counts.get(key), counts.get(slow_key)
                result.fast_reference_instructions = counts.get(fast_key) if fast_key else None
            else:
                result.seconds, result.reference_seconds, result.fast_reference_seconds = own, reference, fast_reference
            if own is None:
                result.detail = (f"passed, but its instruction count failed ({failures.get(key, 'no count')})"
                                 if counting else "passed, but no timing run succeeded")
                continue
            if reference is not None:
                result.speedup = reference / max(own, floor)
                if fast_reference is not None:
                    result.fast = own < math.sqrt(reference * fast_reference)
            elif counting:
                result.detail = f"counted, but the reference's count failed ({failures.get(slow_key, 'no count')})"
        return results

    def _count(self, items: Sequence[tuple[Problem, str]],
               timed: dict[str, dict[str, str]]) -> tuple[dict[str, int], dict[str, str]]:
        """Each program's instruction count on perf_input (one callgrind job each), and why
        the count failed for those it did."""
        problems = {problem.task_id: problem for problem, _ in items}
        order = [(key, Job(program, problems[task_id].entry_point, perf_input=problems[task_id].perf_input,
                           mode="instructions"))
                 for task_id, programs in timed.items() for key, program in programs.items()]
        counts: dict[str, int] = {}
        failures: dict[str, str] = {}
        outcomes = self.run_jobs([job for _, job in order], "counting", limits=callgrind_limits(self.limits))
        for (key, _), outcome in zip(order, outcomes, strict=True):
            if outcome.status == "passed" and outcome.instructions is not None:
                counts[key] = outcome.instructions
            else:
                failures[key] = f"{outcome.status}: {outcome.detail}"
        return counts, failures

    def _time(self, items: Sequence[tuple[Problem, str]], timed: dict[str, dict[str, str]]) -> dict[str, float]:
        """Minimum over ``repeats`` interleaved rounds of each program's time on perf_input.

        Each round visits every program once, in an order rotated from round to round, so slow
        drifts of the machine's speed hit all programs alike."""
        problems = {problem.task_id: problem for problem, _ in items}
        order: list[tuple[str, Job]] = []
        for round_index in range(self.repeats):
            for task_id, programs in timed.items():
                problem = problems[task_id]
                entries = list(programs.items())
                shift = round_index % len(entries)
                for key, program in entries[shift:] + entries[:shift]:
                    order.append((key, Job(program, problem.entry_point, perf_input=problem.perf_input, mode="time")))
        best: dict[str, float] = {}
        for (key, _), outcome in zip(order, self.run_jobs([job for _, job in order], "timing"), strict=True):
            if outcome.status == "passed" and outcome.seconds is not None:
                best[key] = min(best.get(key, math.inf), outcome.seconds)
        return best

    # -- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every sandbox."""
        for sandbox in self._sandboxes:
            sandbox.close()
        self._sandboxes.clear()
        self._idle = Queue()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def summarize(results: Sequence[SampleResult]) -> dict[str, Any]:
    """pass@1 (share passed), status counts, and the speed summary over timed passed samples:
    geometric-mean speed-up against the reference and the share faster than the midpoint."""
    counts: dict[str, int] = {}
    per_task: dict[str, list[bool]] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
        per_task.setdefault(result.task_id, []).append(result.status == "passed")
    speedups = [r.speedup for r in results if r.status == "passed" and r.speedup]
    fast = [r.fast for r in results if r.status == "passed" and r.fast is not None]
    return {
        "samples": len(results),
        # pass@1 estimated per task as c/n (the unbiased estimator for k = 1), averaged over tasks
        "pass_at_1": sum(sum(v) / len(v) for v in per_task.values()) / len(per_task) if per_task else 0.0,
        "statuses": counts,
        "timed": len(speedups),
        "speedup_geomean": math.exp(sum(map(math.log, speedups)) / len(speedups)) if speedups else None,
        "fast_share": sum(fast) / len(fast) if fast else None,
    }
