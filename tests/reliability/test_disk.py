"""Disk full and unwritable run directories.

Policy (docs/reliability.md): a run directory that cannot be written is refused before any work
with exit 2; a write that fails mid-run (``ENOSPC``) stops the run with exit 1 and one line
saying how to continue; no state file is left corrupt (whole files are replaced atomically, a
part-written line is a torn last line), and ``--resume`` finishes the run once space returns.

Tests run as root here and in CI, and root ignores permission bits: unwritable paths are made
with a regular file where a directory should be and with /proc; a full disk is simulated by
making the record writer's writes fail in this process.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import cli
from retrofit import records

from .faults import FullDisk, Toy, invoke, problems, reference_run

TOY = Toy(budget=30, workers=1, seed=3, delay=0.0, validate_every=10, executor="serial")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return reference_run(TOY, tmp_path_factory)


def _one_error_line(err: str, only: bool = True) -> str:
    """The error line; ``only``: nothing else on stderr (a refusal before any work). A run
    that fails midway has printed progress lines before it."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("retrofit: error: ")]
    assert len(errors) == 1 and (len(lines) == 1 or not only), err
    assert "Traceback" not in err
    return errors[0]


@pytest.mark.parametrize("out", ["afile/run", "afile", "/proc/retrofit-run", "/proc/self/status/run"])
def test_an_unwritable_run_directory_is_refused_before_any_work(tmp_path: Path, monkeypatch, out: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("a regular file, not a directory\n")
    code, err = invoke([*TOY.args(), "--out", out])
    assert code == 2
    line = _one_error_line(err)
    assert out in line
    assert (tmp_path / "afile").read_text() == "a regular file, not a directory\n"


def test_an_unwritable_run_directory_through_the_real_command(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    done = cli(*TOY.args(), "--out", "afile/run", cwd=tmp_path)
    assert done.returncode == 2 and _one_error_line(done.stderr).endswith("afile/run: Not a directory")


@pytest.mark.parametrize("fail_at", [3, 17, 40])
def test_disk_full_mid_run_stops_cleanly_and_resumes_when_space_returns(tmp_path: Path,
                                                                         reference: Path, fail_at: int) -> None:
    disk = FullDisk(fail_at)
    run_dir = tmp_path / "run"
    with disk.installed():
        code, err = invoke([*TOY.args(), "--out", str(run_dir)])
    assert code == 1
    line = _one_error_line(err, only=False)
    assert "No space left on device" in line and f"--resume {run_dir}" in line

    # nothing corrupt: whole files parse, a JSONL file is complete lines plus at most a torn last one
    if (run_dir / "summary.json").exists():  # absent when the disk filled before the first checkpoint
        assert json.loads((run_dir / "summary.json").read_text())["status"] in ("running", "failed")
    assert "[run]" in (run_dir / "config.toml").read_text()
    assert not list(run_dir.glob(".*.tmp")), "a temporary file was left behind"
    finished = []
    for name in ("history.jsonl", "validation.jsonl", "checkpoints.jsonl"):
        path = run_dir / name
        raw = path.read_text().splitlines(keepends=True) if path.exists() else []
        complete = [json.loads(text) for text in raw if text.endswith("\n")]
        assert len(raw) - len(complete) <= 1 and all(text.endswith("\n") for text in raw[:-1])
        if name == "history.jsonl":
            finished = complete

    code, err = invoke(["toy", "tune", "--resume", str(run_dir)])  # space returns
    assert code == 0, err
    assert problems(run_dir, TOY.budget, before=finished, reference=reference) == []


def test_a_failed_summary_write_keeps_the_previous_summary_whole(tmp_path: Path, monkeypatch) -> None:
    record_dir = tmp_path / "run"
    record_dir.mkdir()
    record = records.RunRecord(record_dir)
    record.write_summary({"status": "running", "evaluations": 10})
    import os
    import types

    def no_space(handle: int, *args: Any, **kwargs: Any) -> Any:
        os.close(handle)
        raise OSError(errno.ENOSPC, "No space left on device")

    fake_os = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
    fake_os.fdopen = no_space
    monkeypatch.setattr(records, "os", fake_os)
    with pytest.raises(records.RunFailed, match="No space left on device.*--resume"):
        record.write_summary({"status": "running", "evaluations": 20})
    assert json.loads((record_dir / "summary.json").read_text()) == {"status": "running", "evaluations": 10}
    assert [p.name for p in record_dir.iterdir()] == ["summary.json"]


def test_lines_reach_the_disk_in_the_background_and_an_fsync_error_stops_the_run(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    """Appends hand each line to the OS at once and fsync it in a background thread; a summary
    waits for those fsyncs, and an fsync that fails (EIO, ENOSPC on some filesystems) is raised
    by the next append or sync, naming the file, like a failed write."""
    record = records.RunRecord(tmp_path)
    synced: list[int] = []
    real_fsync = records.os.fsync

    def counting_fsync(descriptor: int) -> None:
        synced.append(descriptor)
        real_fsync(descriptor)

    monkeypatch.setattr(records.os, "fsync", counting_fsync)
    for index in range(5):
        record.append(records.HISTORY, {"id": index})
        assert (tmp_path / records.HISTORY).read_text().count("\n") == index + 1  # with the OS already
    record.write_summary({"status": "running"})  # waits for the background fsyncs first
    assert synced and json.loads((tmp_path / records.SUMMARY).read_text()) == {"status": "running"}

    def failing_fsync(descriptor: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(records.os, "fsync", failing_fsync)
    record.append(records.VALIDATION, {"id": 0})
    with pytest.raises(records.RunFailed, match=r"validation\.jsonl: Input/output error.*--resume"):
        record.sync()
    with pytest.raises(records.RunFailed, match="Input/output error"):
        record.append(records.HISTORY, {"id": 5})
