"""`retrofit codegen check`: HumanEval canonical and mutated solutions, result files, bad input."""

from __future__ import annotations

import json
import re

import click
import pytest
import retrofit.cli
from click.testing import CliRunner
from retrofit.errors import UsageError
from retrofit_codegen import commands, plugin
from retrofit_codegen.check import check_command, format_summary, run_check
from retrofit_codegen.humaneval import load as load_humaneval
from retrofit_codegen.problems import write_jsonl

from .test_judge import COMMON, FAST, SLOW, WRONG


def _samples(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def humaneval():
    return load_humaneval()


def test_humaneval_canonical_solutions_all_pass(tmp_path, humaneval):
    samples = _samples(tmp_path / "s.jsonl", [{"task_id": p.task_id, "completion": p.reference} for p in humaneval])
    summary = run_check("humaneval", samples, repeats=0)
    assert summary["statuses"] == {"passed": 164} and summary["pass_at_1"] == 1.0
    lines = (tmp_path / "s.jsonl_results.jsonl").read_text().splitlines()
    assert len(lines) == 164 and json.loads(lines[0])["task_id"] == "HumanEval/0"


def test_humaneval_mutated_solutions_fail(tmp_path, humaneval):
    rows = [{"task_id": p.task_id, "completion": "    return None\n"} for p in humaneval]
    flipped = []
    for problem in humaneval:  # flip the first == (else <) of each canonical solution
        mutant = re.sub(r"(?<![<>=!])==(?!=)", "!=", problem.reference, count=1)
        if mutant == problem.reference:
            mutant = re.sub(r"<(?!=)", ">=", problem.reference, count=1)
        if mutant != problem.reference:
            flipped.append(problem.task_id)
            rows.append({"task_id": problem.task_id, "completion": mutant})
    summary = run_check("humaneval", _samples(tmp_path / "m.jsonl", rows), tmp_path / "out.jsonl", repeats=0)
    results = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert not [r["task_id"] for r in results[:164] if r["status"] == "passed"]
    # HumanEval/124's first `==` guards a branch an earlier `day < 1` check already covers: an
    # equivalent mutant, which no test can fail
    assert [r["task_id"] for r in results[164:] if r["status"] == "passed"] == ["HumanEval/124"]
    assert len(flipped) > 80 and summary["statuses"]["passed"] == 1


def test_results_carry_status_failing_test_runtime_and_speedup(tmp_path):
    write_jsonl([COMMON], tmp_path / "p.jsonl")
    samples = _samples(tmp_path / "s.jsonl", [{"task_id": COMMON.task_id, "completion": c} for c in (SLOW, FAST, WRONG)])
    summary = run_check(tmp_path / "p.jsonl", samples, tmp_path / "r.jsonl", repeats=2)
    slow, fast, wrong = (json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines())
    assert (slow["status"], fast["status"], wrong["status"]) == ("passed", "passed", "failed")
    assert wrong["failing_test"].startswith("assert candidate(") and wrong["completion"] == WRONG
    assert fast["speedup"] > slow["speedup"] and fast["seconds"] > 0 and fast["fast"] is True
    assert summary["timed"] == 2 and summary["pass_at_1"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(("content", "message"), [
    ('{"task_id": "fam/common", "completion": "x"}\nnot json\n', r"s.jsonl:2: not valid JSON"),
    ('{"task_id": "nope", "completion": "x"}\n', r"s.jsonl:1: unknown task_id 'nope'"),
    ('{"task_id": "fam/common"}\n', r"s.jsonl:1: a sample needs 'task_id' and a string 'completion'"),
    ('\n', r"s.jsonl: no samples"),
])
def test_bad_samples_are_usage_errors(tmp_path, content, message):
    write_jsonl([COMMON], tmp_path / "p.jsonl")
    (tmp_path / "s.jsonl").write_text(content)
    with pytest.raises(UsageError, match=message):
        run_check(tmp_path / "p.jsonl", tmp_path / "s.jsonl")
    with pytest.raises(UsageError, match="no such file"):
        run_check(tmp_path / "absent.jsonl", tmp_path / "s.jsonl")


def test_the_click_command_prints_pass_at_1_and_the_speed_summary(tmp_path):
    write_jsonl([COMMON], tmp_path / "p.jsonl")
    _samples(tmp_path / "s.jsonl", [{"task_id": COMMON.task_id, "completion": FAST}])
    group = click.Group("codegen")
    group.add_command(check_command)
    done = CliRunner().invoke(group, ["check", str(tmp_path / "p.jsonl"), str(tmp_path / "s.jsonl"), "--repeats", "1",
                                      "--output", str(tmp_path / "out.jsonl")])
    assert done.exit_code == 0, done.output
    assert "pass@1 1.0000 over 1 samples (passed 1)" in done.output
    assert "speed-up (geometric mean over 1 timed passed samples)" in done.output
    assert (tmp_path / "out.jsonl").is_file()


def _load_with_check(**kwargs):
    """The plugins as installed, plus the check command until plugin.py imports it (see commands.py)."""
    from retrofit.plugins import load

    wired = hasattr(plugin, "retrofit_register_commands")
    return load(**kwargs) if wired else load(extra=[commands], **kwargs)


def test_retrofit_main_runs_check_and_maps_bad_input_to_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(retrofit.cli, "load", _load_with_check)
    write_jsonl([COMMON], tmp_path / "p.jsonl")
    _samples(tmp_path / "s.jsonl", [{"task_id": COMMON.task_id, "completion": WRONG}])
    assert retrofit.cli.main(["codegen", "check", str(tmp_path / "p.jsonl"), str(tmp_path / "s.jsonl"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["statuses"] == {"failed": 1}
    _samples(tmp_path / "bad.jsonl", [{"task_id": "nope", "completion": ""}])
    assert retrofit.cli.main(["codegen", "check", str(tmp_path / "p.jsonl"), str(tmp_path / "bad.jsonl")]) == 2
    assert capsys.readouterr().err.strip() == f"retrofit: error: {tmp_path / 'bad.jsonl'}:1: unknown task_id 'nope'"


def test_plugin_module_registers_the_check_command():
    """Fails until plugin.py has `from .commands import retrofit_register_commands  # noqa: F401`."""
    assert getattr(plugin, "retrofit_register_commands", None) is commands.retrofit_register_commands


def test_the_summary_line_names_the_measure():
    summary = {"statuses": {"passed": 1}, "pass_at_1": 1.0, "samples": 1, "timed": 1, "speedup_geomean": 2.0,
               "fast_share": None, "output": "r.jsonl", "seconds": 1.0}
    assert "over 1 timed passed samples) 2x" in format_summary(summary)  # without "measure": time, as before
    assert "over 1 instruction-counted passed samples) 2x" in format_summary({**summary, "measure": "instructions"})
    with pytest.raises(UsageError, match="--measure must be one of time, instructions"):
        run_check("humaneval", "unused.jsonl", measure="cycles")
