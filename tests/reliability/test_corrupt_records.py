"""Corrupted or truncated run records on ``--resume``.

Policy (docs/reliability.md): a torn LAST line of a JSONL file is a crash mid-write: dropped
with a warning, that evaluation runs again. Anything else corrupt is refused with exit 2 and one
line naming the file (and line), telling the recovery: ``--resume DIR --repair`` cuts the file
at its first bad line, keeps the original as FILE.corrupt, and the cut evaluations run again;
a corrupt summary.json is rebuilt from the history. A corrupt config.toml must be restored by
hand (it holds the settings the history was made with).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from retrofit.records import RunRecord

from .faults import Toy, entries, invoke, problems, reference_run

TOY = Toy(budget=30, workers=1, seed=4, delay=0.0, validate_every=10, executor="serial")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return reference_run(TOY, tmp_path_factory)


@pytest.fixture
def interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real run stopped (as by Ctrl-C) after 22 train evaluations: resumable, two checkpoints in."""
    original = RunRecord.append

    def append(self: RunRecord, name: str, entry: dict) -> None:
        if name == "history.jsonl" and entry["id"] == 22:
            raise KeyboardInterrupt
        original(self, name, entry)

    monkeypatch.setattr(RunRecord, "append", append)
    run_dir = tmp_path / "run"
    code, err = invoke([*TOY.args(), "--out", str(run_dir)])
    assert code == 130, err
    monkeypatch.setattr(RunRecord, "append", original)
    assert len(entries(run_dir)) == 22
    return run_dir


def _replace_line(path: Path, number: int, raw: bytes) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    lines[number - 1] = raw
    path.write_bytes(b"".join(lines))


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("retrofit: error: ") and "Traceback" not in err, err
    return lines[0]


CORRUPT_LINES = {
    "garbage": b"\x00\x00\x00\x00 disk garbage\n",
    "half a line": b'{"id": 7, "split": "tr\n',
    "not an object": b"[1, 2, 3]\n",
    "missing keys": b'{"id": 7}\n',
    "invalid utf-8": b'{"id": 7, "values": "\xff\xfe"}\n',
    "empty line": b"\n",
}


@pytest.mark.parametrize("damage", list(CORRUPT_LINES))
def test_a_corrupt_history_line_in_the_middle_is_refused_then_repaired(interrupted: Path, reference: Path,
                                                                        damage: str) -> None:
    history = interrupted / "history.jsonl"
    good = entries(interrupted)[:7]  # lines 1-7 (candidates 0-6) survive the repair
    _replace_line(history, 8, CORRUPT_LINES[damage])
    before = history.read_bytes()

    code, err = invoke(["toy", "tune", "--resume", str(interrupted)])
    assert code == 2
    line = _error_line(err)
    assert f"{history}:8 is corrupt" in line and "--repair" in line
    assert history.read_bytes() == before, "a refused resume changes nothing"

    code, err = invoke(["toy", "tune", "--resume", str(interrupted), "--repair"])
    assert code == 0, err
    assert f"{history}:8 is corrupt: cut 15 line(s)" in err
    assert (interrupted / "history.jsonl.corrupt").read_bytes() == before  # the original is kept
    assert problems(interrupted, TOY.budget, before=good, reference=reference) == []


@pytest.mark.parametrize("name", ["validation.jsonl", "checkpoints.jsonl"])
def test_a_corrupt_line_in_the_other_records_is_refused_then_repaired(interrupted: Path, reference: Path,
                                                                       name: str) -> None:
    path = interrupted / name
    assert len(path.read_bytes().splitlines()) >= 2
    _replace_line(path, 1, b"}}}\n")
    code, err = invoke(["toy", "tune", "--resume", str(interrupted)])
    assert code == 2 and f"{path}:1 is corrupt" in _error_line(err)
    code, err = invoke(["toy", "tune", "--resume", str(interrupted), "--repair"])
    assert code == 0, err
    # re-scores and checkpoints cut are made again where the run needs them; train results are untouched
    assert problems(interrupted, TOY.budget, before=entries(reference)[:22]) == []


@pytest.mark.parametrize("content", [b"{\"status\": \"runn", b"[]", b"\x00" * 64, b""])
def test_a_corrupt_summary_is_refused_then_rebuilt(interrupted: Path, reference: Path, content: bytes) -> None:
    summary = interrupted / "summary.json"
    summary.write_bytes(content)
    code, err = invoke(["toy", "tune", "--resume", str(interrupted)])
    assert code == 2
    line = _error_line(err)
    assert f"{summary} is corrupt" in line and "--repair" in line
    code, err = invoke(["toy", "tune", "--resume", str(interrupted), "--repair"])
    assert code == 0, err
    assert (interrupted / "summary.json.corrupt").read_bytes() == content
    assert problems(interrupted, TOY.budget, before=entries(reference)[:22], reference=reference) == []


@pytest.mark.parametrize(("content", "words"), [
    (b"[run\nbudget = ", "is not valid TOML"),
    (b"", "is incomplete"),
    (b"[run]\nbudget = 30\n", "is incomplete"),
    (b"\xff\xfe\x00", "cannot read"),
])
def test_a_corrupt_or_truncated_config_is_refused(interrupted: Path, content: bytes, words: str) -> None:
    config = interrupted / "config.toml"
    config.write_bytes(content)
    history = (interrupted / "history.jsonl").read_bytes()
    code, err = invoke(["toy", "tune", "--resume", str(interrupted)])
    assert code == 2
    line = _error_line(err)
    assert str(config) in line and words in line
    assert (interrupted / "history.jsonl").read_bytes() == history


def test_repair_is_only_for_resume(tmp_path: Path) -> None:
    code, err = invoke([*TOY.args(), "--out", str(tmp_path / "new"), "--repair"])
    assert code == 2 and "--repair" in _error_line(err)
    assert not (tmp_path / "new").exists()


def test_a_torn_last_line_needs_no_repair(interrupted: Path, reference: Path) -> None:
    history = interrupted / "history.jsonl"
    good = entries(interrupted)
    with open(history, "ab") as stream:
        stream.write(b'{"id": 22, "split": "train", "val')
    code, err = invoke(["toy", "tune", "--resume", str(interrupted)])
    assert code == 0, err
    assert "dropping an incomplete last line" in err
    assert problems(interrupted, TOY.budget, before=good, reference=reference) == []
    assert json.loads((interrupted / "summary.json").read_text())["status"] == "finished"
