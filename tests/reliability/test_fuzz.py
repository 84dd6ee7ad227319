"""Fuzzing what users type and what a crash or a bad disk leaves behind: ``--set`` strings
through the real command line, and arbitrary bytes in every record file. Nothing may end in an
uncaught exception: bad input is one line and exit 2.

(Config files and resolve() are fuzzed in tests/core/test_config.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from retrofit.config import RUN_FIELDS
from retrofit.errors import UsageError
from retrofit.records import RunRecord
from retrofit.toy import DOMAIN

from .faults import invoke

_KEYS = st.sampled_from([*(f"run.{f}" for f in RUN_FIELDS), *(f"toy.{o.name}" for o in DOMAIN.options),
                         "objective.error_rate", "constraints.accuracy", "toy", "run.", ".budget", "tyo.dim"])
_VALUES = st.sampled_from(["1", "-1", "0", "1.5", "nan", "inf", "true", '"x"', "[1, 2]", "{a = 1}", "", "=",
                           '">= baseline"', "1979-05-27", "'''", '"\\u0000"', "0x10", "1e400"]) | st.text(max_size=12)
_SET = st.builds(lambda key, value: f"{key}={value}", _KEYS, _VALUES) | st.text(max_size=30)
_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


@_FUZZ
@given(assignments=st.lists(_SET, min_size=1, max_size=3))
def test_fuzz_set_through_the_command_line(assignments: list[str]) -> None:
    """``toy evaluate`` (no run directory, milliseconds) with fuzzed --set: it evaluates, or it
    is bad input; an evaluation the settings break is exit 1. Never a traceback."""
    args = ["toy", "evaluate", "--split", "train", "--json"]
    for text in assignments:
        args += ["--set", text]
    code, err = invoke(args)
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err
    if code == 2:
        errors = [line for line in err.splitlines() if line.startswith("retrofit: error: ")]
        assert len(errors) == 1, err


_BYTES = st.binary(max_size=300) | st.builds(
    lambda good, junk, cut: (b"".join(good) + junk)[:cut],
    st.lists(st.sampled_from([b'{"id": 0, "values": {}, "told": 1.0, "loss": 1.0, "error": null}\n',
                              b'{"evaluations": 10, "best_validation_loss": null}\n', b"[]\n", b"\n", b"{\n"]),
             max_size=5),
    st.binary(max_size=40), st.integers(min_value=0, max_value=400))


@_FUZZ
@given(content=_BYTES, repair=st.booleans())
def test_fuzz_record_files_are_read_or_refused_never_crash(tmp_path: Path, content: bytes, repair: bool) -> None:
    run_dir = tmp_path / "fuzzed"
    run_dir.mkdir(exist_ok=True)
    for name in ("history.jsonl", "summary.json", "config.toml"):
        (run_dir / name).write_bytes(content)
    record = RunRecord(run_dir, repair=repair)
    try:
        lines = record.read_lines("history.jsonl", required=("id",))
        assert all(isinstance(entry, dict) and "id" in entry for entry in lines)
        # what is kept is a prefix of what was there: nothing invented, nothing reordered
        assert content.startswith((run_dir / "history.jsonl").read_bytes())
    except UsageError as error:
        assert not repair and "\n" not in str(error) and "history.jsonl:" in str(error)
    try:
        summary = record.read_summary()
        assert summary is None or isinstance(summary, dict)
    except UsageError as error:
        assert not repair and "summary.json" in str(error)
    try:
        RunRecord.open(run_dir)
    except UsageError as error:
        assert "config.toml" in str(error) and "\n" not in str(error)
    for leftover in run_dir.iterdir():
        leftover.unlink()


def test_the_record_fuzz_reaches_every_outcome(tmp_path: Path) -> None:
    """Guard against a vacuous fuzz: good records read, bad ones are refused or repaired."""
    good = b'{"id": 0, "values": {}, "told": 1.0, "loss": 1.0, "error": null}\n'
    (tmp_path / "history.jsonl").write_bytes(good + b"[]\n" + good)
    assert len(RunRecord(tmp_path, repair=True).read_lines("history.jsonl", required=("id",))) == 1
    (tmp_path / "history.jsonl").write_bytes(good + b"[]\n" + good)
    try:
        RunRecord(tmp_path).read_lines("history.jsonl", required=("id",))
        raise AssertionError("a corrupt middle line was accepted")
    except UsageError as error:
        assert "history.jsonl:2" in str(error)
    assert json.loads(good)["id"] == 0
