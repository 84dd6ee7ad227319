"""The problem format and its readers: HumanEval- and MBPP-style JSONL, and the bundled HumanEval."""

from __future__ import annotations

import json

import pytest
from retrofit.errors import UsageError
from retrofit_codegen.humaneval import load as load_humaneval
from retrofit_codegen.problems import Problem, read_jsonl, write_jsonl

TWICE = Problem(task_id="t/0", prompt="def twice(x):\n    \"\"\"2x.\"\"\"\n", entry_point="twice",
                test="def check(candidate):\n    assert candidate(2) == 4\n", reference="    return x + x\n",
                perf_input="(3,)", fast_reference="    return 2 * x\n", family="arith")


@pytest.mark.parametrize("name", ["p.jsonl", "p.jsonl.gz"])
def test_write_then_read_round_trips(tmp_path, name):
    bare = Problem("t/1", "def f():\n", "f", "def check(candidate):\n    pass\n", "    return 1\n", "")
    write_jsonl([TWICE, bare], tmp_path / name)
    assert read_jsonl(tmp_path / name) == [TWICE, bare]


def test_humaneval_fields_map_and_perf_input_defaults_to_empty(tmp_path):
    line = {"task_id": "HumanEval/0", "prompt": "def f(x):\n", "canonical_solution": "    return x\n",
            "test": "def check(candidate):\n    assert candidate(1) == 1\n", "entry_point": "f"}
    (tmp_path / "h.jsonl").write_text(json.dumps(line) + "\n\n")
    (problem,) = read_jsonl(tmp_path / "h.jsonl")
    assert (problem.reference, problem.perf_input, problem.fast_reference) == ("    return x\n", "", None)


def test_mbpp_lines_become_problems_whose_tests_call_the_function_by_name(tmp_path):
    line = {"task_id": 11, "text": "Write a function to add two numbers.",
            "code": "def add(a, b):\r\n    return a + b", "test_setup_code": "",
            "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"], "challenge_test_list": []}
    (tmp_path / "m.jsonl").write_text(json.dumps(line) + "\n")
    (problem,) = read_jsonl(tmp_path / "m.jsonl")
    assert (problem.task_id, problem.entry_point) == ("11", "add")
    assert problem.prompt.startswith("# Write a function") and "assert add(1, 2) == 3" in problem.prompt
    for code, correct in ((problem.reference, True), ("def add(a, b):\n    return a - b\n", False)):
        namespace: dict = {}
        exec(problem.program(code) + "\n" + problem.test, namespace)  # noqa: S102 (trusted test data)
        if correct:
            namespace["check"](namespace["add"])
        else:
            with pytest.raises(AssertionError):
                namespace["check"](namespace["add"])


@pytest.mark.parametrize(("content", "message"), [
    ('{"task_id": "a"\n', r"x.jsonl:1: not valid JSON"),
    ('[1, 2]\n', r"x.jsonl:1: expected a JSON object"),
    ('{"task_id": "a", "prompt": "p"}\n', r"x.jsonl:1: not a HumanEval- or MBPP-style problem \(missing field"),
    ('{"task_id": "a", "text": "t", "code": "c", "test_list": []}\n', r"x.jsonl:1: .*test_list"),
])
def test_bad_lines_are_usage_errors_naming_file_and_line(tmp_path, content, message):
    (tmp_path / "x.jsonl").write_text(content)
    with pytest.raises(UsageError, match=message):
        read_jsonl(tmp_path / "x.jsonl")


def test_missing_file_duplicate_ids_and_corrupt_gzip_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        read_jsonl(tmp_path / "absent.jsonl")
    write_jsonl([TWICE, TWICE], tmp_path / "d.jsonl")
    with pytest.raises(UsageError, match=r"d.jsonl:2: task_id 't/0' appears twice"):
        read_jsonl(tmp_path / "d.jsonl")
    (tmp_path / "c.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UsageError, match="cannot read"):
        read_jsonl(tmp_path / "c.jsonl.gz")


def test_humaneval_ships_164_problems():
    problems = load_humaneval()
    assert len(problems) == 164
    assert problems[0].task_id == "HumanEval/0" and problems[-1].task_id == "HumanEval/163"
    assert all(p.prompt and p.reference and "def check(candidate)" in p.test and p.perf_input == "" for p in problems)
