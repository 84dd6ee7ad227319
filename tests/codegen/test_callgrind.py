"""The deterministic speed mode: instruction counts of the call under valgrind's callgrind.

Needs valgrind (CI installs it in .ci/run). Perf inputs are tiny: callgrind runs the
interpreter ~50x slower, and every count is two runs (with and without the call).
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import retrofit.cli
from retrofit_codegen.judge import Judge
from retrofit_codegen.problems import Problem, write_jsonl
from retrofit_codegen.sandbox import Job, Limits, Sandbox, SandboxError, _dumps, _imported_modules, callgrind_limits

from .test_check import _load_with_check, _samples
from .test_judge import COMMON

LIMITS = Limits(cpu_seconds=1, wall_seconds=2, memory_mb=256)  # scaled x20 / x4 for callgrind
# a run's total can move by 3 instructions (interpreter start-up, with the random names of the
# working directory), so a count by 6: measured, at most 6 over 5 rounds of 8 programs
# (docs/codegen.md, "Deterministic mode")
TOLERANCE = 16
SLOW = "def f(xs, ys):\n    return sum(1 for x in xs if x in ys)\n"
FAST = "def f(xs, ys):\n    seen = set(ys)\n    return sum(1 for x in xs if x in seen)\n"
PERF = "(list(range(300)), list(range(150, 450)))"
SMALL = Problem(**{**COMMON.__dict__, "task_id": "cg/common", "perf_input": PERF})


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(LIMITS, preload=("os",)) as box:
        yield box


def _count(sandbox: Sandbox, program: str, perf_input: str = PERF, limits: Limits | None = None):
    return sandbox.run(Job(program, "f", perf_input=perf_input, mode="instructions"), limits or callgrind_limits(LIMITS))


def test_counts_are_deterministic_and_see_c_level_work(sandbox):
    first, again, fast = _count(sandbox, SLOW), _count(sandbox, SLOW), _count(sandbox, FAST)
    assert first.status == again.status == fast.status == "passed", (first, fast)
    assert abs(first.instructions - again.instructions) <= TOLERANCE
    # the same bytecode loop, but `x in list` scans in C: bytecode counts would call these equal
    assert first.instructions > 10 * fast.instructions > 0
    assert first.seconds is None and first.digest is None  # a count, not a timing


def test_only_the_call_is_counted_and_the_sample_is_contained(sandbox):
    # heavy top-level work is in both runs and cancels; the checks run as the sample, under
    # callgrind: an empty working directory, no job on stdin, the scrubbed environment, nobody
    program = ("import os\nassert os.listdir('.') == [], os.listdir('.')\nassert os.read(0, 100) == b''\n"
               "assert sorted(os.environ) == ['HOME', 'LANG', 'LC_ALL', 'PATH', 'PYTHONHASHSEED', 'TMPDIR'], "
               "sorted(os.environ)\n"
               f"assert os.geteuid() == {65534 if os.geteuid() == 0 else os.geteuid()}\n"
               "TABLE = sorted(range(200000), key=lambda i: -i)\n"
               "def f(xs, ys):\n    return len(xs)\n")
    outcome = _count(sandbox, program)
    assert outcome.status == "passed", outcome
    assert 0 < outcome.instructions < 100_000  # a call of len(): the 200 000-item sort is not in it


# name -> (program defining f, expected status, a phrase of the detail)
HOSTILE = {
    "infinite loop": ("def f(xs, ys):\n    while True:\n        pass\n", "timeout", "CPU time over"),
    "fork": ("import os\ndef f(xs, ys):\n    os.fork()\n", "failed", "os.fork is not allowed"),
    "write outside": ("def f(xs, ys):\n    open('{CANARY}', 'w').write('pwned')\n", "failed",
                      "outside the working directory"),
    "one huge allocation": ("def f(xs, ys):\n    return bytearray(10**11)\n", "memory", "MemoryError"),
    "closing the profile's descriptor": ("import os\ndef f(xs, ys):\n    os.close(4)\n", "crashed", ""),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_samples_under_callgrind_are_contained_and_classified(sandbox, tmp_path, name):
    canary = tmp_path / "canary.txt"
    canary.write_text("intact")
    os.chmod(tmp_path, 0o777)  # writable by anyone: the audit hook, not only the uid, must stop it
    os.chmod(canary, 0o666)
    program, status, phrase = HOSTILE[name]
    # unscaled CPU limit for the loop (3 s covers callgrind's start-up), so the test stays short
    outcome = _count(sandbox, program.replace("{CANARY}", str(canary)), limits=Limits(cpu_seconds=3, wall_seconds=20))
    assert (outcome.status, outcome.instructions) == (status, None), outcome
    assert phrase in outcome.detail and "(under callgrind)" in outcome.detail
    assert canary.read_text() == "intact" and sorted(os.listdir(tmp_path)) == ["canary.txt"]


def test_the_sandbox_still_counts_after_the_hostile_corpus(sandbox):
    outcome = _count(sandbox, "def f(xs, ys):\n    return 0\n")
    assert outcome.status == "passed" and outcome.instructions is not None


def test_judge_counts_instructions_and_compares_with_the_references():
    wrong = "    return -1\n"
    with Judge(LIMITS, repeats=1, preload=(), measure="instructions") as judge:
        slow, fast, failed = judge.judge([(SMALL, SMALL.reference), (SMALL, SMALL.fast_reference), (SMALL, wrong)])
    assert failed.status == "failed" and failed.instructions is None
    for result in (slow, fast):
        assert result.status == "passed" and result.seconds is None and result.reference_seconds is None
        assert (result.reference_instructions, result.fast_reference_instructions) == (
            slow.instructions, fast.instructions)
        assert result.speedup == result.reference_instructions / result.instructions
    # a sample that is the reference is counted as exactly the reference: no timing noise
    assert slow.speedup == 1.0 and slow.fast is False
    assert fast.speedup > 5 and fast.fast is True


def test_the_check_command_measures_instructions(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(retrofit.cli, "load", _load_with_check)
    write_jsonl([SMALL], tmp_path / "p.jsonl")
    _samples(tmp_path / "s.jsonl", [{"task_id": SMALL.task_id, "completion": SMALL.fast_reference}])
    argv = ["codegen", "check", str(tmp_path / "p.jsonl"), str(tmp_path / "s.jsonl"), "--measure", "instructions",
            "--output", str(tmp_path / "r.jsonl")]
    assert retrofit.cli.main(argv) == 0
    assert "speed-up (geometric mean over 1 instruction-counted passed samples)" in capsys.readouterr().out
    (row,) = (json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines())
    assert row["instructions"] > 0 and row["reference_instructions"] > 5 * row["instructions"]
    assert row["seconds"] is None and row["fast"] is True


def test_without_valgrind_the_mode_is_a_one_line_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(retrofit.cli, "load", _load_with_check)
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    write_jsonl([SMALL], tmp_path / "p.jsonl")
    _samples(tmp_path / "s.jsonl", [{"task_id": SMALL.task_id, "completion": SMALL.reference}])
    argv = ["codegen", "check", str(tmp_path / "p.jsonl"), str(tmp_path / "s.jsonl"), "--measure", "instructions"]
    assert retrofit.cli.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("retrofit: error: --measure instructions needs valgrind") and "\n" not in error
    with pytest.raises(SandboxError, match="needs valgrind"):
        Judge(measure="instructions")
    with pytest.raises(ValueError, match="measure must be one of"):
        Judge(measure="cycles")


def test_the_runner_helpers():
    verdict = {"status": "failed", "failing_test": None, "detail": 'a"b\\c\n\x00\u00e9\u20ac\U0001f600\udcff', "n": 3}
    assert json.loads(_dumps(verdict)) == verdict  # the runner's JSON without importing json
    program = "import os.path, collections as c\nfrom itertools import chain\ndef f():\n    import re\n"
    assert _imported_modules(program) == ["os", "os.path", "collections", "itertools", "re"]
    assert _imported_modules("def f(:\n") == []
