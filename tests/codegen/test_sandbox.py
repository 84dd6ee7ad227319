"""The sandbox's ordinary behaviour: verdicts, failing tests, limits, a fresh directory per job."""

from __future__ import annotations

import os

import pytest
from retrofit_codegen.sandbox import Job, Limits, Sandbox

CHECK = "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(5) == 6\n"


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(Limits(cpu_seconds=2, wall_seconds=3, memory_mb=256)) as box:
        yield box


def test_a_correct_program_passes_and_a_wrong_one_names_its_failing_assert(sandbox):
    assert sandbox.run(Job("def inc(x):\n    return x + 1\n", "inc", CHECK)).status == "passed"
    outcome = sandbox.run(Job("def inc(x):\n    return 2 if x == 1 else 0\n", "inc", CHECK))
    assert (outcome.status, outcome.failing_test) == ("failed", "assert candidate(5) == 6")
    assert outcome.detail == "AssertionError in the tests"


@pytest.mark.parametrize(("program", "detail"), [
    ("def inc(x):\n    return x +\n", "SyntaxError"),
    ("def other(x):\n    return x\n", "no function 'inc' defined"),
    ("raise ValueError('at import')\n", "ValueError: at import while defining the sample"),
    ("def inc(x):\n    return {}[x]\n", "KeyError: 1 in the tests"),
])
def test_programs_that_do_not_get_to_an_answer_fail_with_a_reason(sandbox, program, detail):
    outcome = sandbox.run(Job(program, "inc", CHECK))
    assert outcome.status == "failed"
    assert detail in outcome.detail


def test_each_job_gets_a_fresh_empty_working_directory(sandbox):
    program = ("import os\nassert os.listdir('.') == [], os.listdir('.')\nopen('left.txt', 'w').write('x')\n"
               "def inc(x):\n    return x + 1\n")
    assert [sandbox.run(Job(program, "inc", CHECK)).status for _ in range(2)] == ["passed", "passed"]


def test_time_mode_times_the_call_and_digests_its_result(sandbox):
    slow = sandbox.run(Job("def f(n):\n    return sum(i for i in range(n))\n", "f", perf_input="(300000,)", mode="time"))
    fast = sandbox.run(Job("def f(n):\n    return n * (n - 1) // 2\n", "f", perf_input="(300000,)", mode="time"))
    assert slow.status == fast.status == "passed"
    assert slow.digest == fast.digest  # same value, so the same digest
    assert slow.seconds > fast.seconds > 0  # a linear loop against one multiplication: far apart


def test_the_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("RETROFIT_FAKE_SECRET", "hunter2")  # in the host before the zygote starts
    program = "import os\ndef inc(x):\n    print(sorted(os.environ))\n    assert 'hunter2' not in str(os.environ)\n    return x + 1\n"
    with Sandbox(Limits(wall_seconds=5)) as box:
        outcome = box.run(Job(program, "inc", CHECK))
    assert outcome.status == "passed", outcome
    assert "RETROFIT_FAKE_SECRET" not in outcome.output and "PATH" in outcome.output


def test_isolation_reports_what_the_os_allowed(sandbox):
    assert {"process", "session", "rlimits", "audit", "workdir", "env"} <= set(sandbox.isolation)
    if os.geteuid() == 0:  # root can drop to nobody and (normally) unshare the network
        assert "user" in sandbox.isolation


def test_limits_are_validated():
    with pytest.raises(ValueError, match="cpu_seconds"):
        Limits(cpu_seconds=0)


def test_a_dead_zygote_is_replaced(sandbox):
    os.killpg(sandbox._process.pid, 9)  # simulate the worker dying under us
    assert sandbox.run(Job("def inc(x):\n    return x + 1\n", "inc", CHECK)).status == "killed"
    assert sandbox.run(Job("def inc(x):\n    return x + 1\n", "inc", CHECK)).status == "passed"
