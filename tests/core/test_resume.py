"""A run killed with SIGKILL and resumed loses nothing, repeats nothing, and ends where an
uninterrupted run with the same seed ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli, history, summary

ARGS = ["toy", "tune", "--budget", "60", "--workers", "2", "--seed", "5", "--set", "toy.delay=0.02",
        "--set", "run.validate_every=10"]


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _kill_after(run_dir: Path, cwd: Path, evaluations: int) -> None:
    process = subprocess.Popen([sys.executable, "-m", "retrofit", *ARGS, "--out", str(run_dir)], cwd=cwd,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _lines(run_dir / "history.jsonl") < evaluations:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.01)
    children = _children(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    # orphaned workers notice their parent is gone and exit by themselves
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{child}").exists() and "zombie" not in _state(child) for child in children):
        assert time.monotonic() < deadline, f"workers {children} outlived the killed run"
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].splitlines()[0].lower()
    except (OSError, IndexError):
        return "zombie"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run with the same settings, shared by the kill points."""
    base = tmp_path_factory.mktemp("reference")
    cli(*ARGS, "--out", str(base / "run"), cwd=base, check=0)
    return base / "run"


@pytest.mark.parametrize("kill_at", [1, 23, 47])
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path: Path, reference: Path, kill_at: int) -> None:
    resumed = tmp_path / "resumed"
    _kill_after(resumed, tmp_path, kill_at)
    assert kill_at <= _lines(resumed / "history.jsonl") < 60
    done = cli("toy", "tune", "--resume", str(resumed), cwd=tmp_path, check=0)
    assert "resumed" in done.stderr

    entries = history(resumed)
    assert len(entries) == 60
    assert sorted(e["id"] for e in entries) == list(range(60))  # no gap, no repeat
    keep = ("id", "values", "loss", "told")
    assert [{k: e[k] for k in keep} for e in entries] == [{k: e[k] for k in keep} for e in history(reference)]
    finished, expected = summary(resumed), summary(reference)
    assert finished["status"] == "finished"
    for key in ("best", "baseline", "improvement", "evaluations", "failed_evaluations", "optimizer"):
        assert finished[key] == expected[key], key


def test_a_torn_last_history_line_is_dropped_and_rerun(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _kill_after(run_dir, tmp_path, 10)
    with open(run_dir / "history.jsonl", "a") as stream:
        stream.write('{"id": 999, "split": "tr')  # as if killed in the middle of a write
    done = cli("toy", "tune", "--resume", str(run_dir), cwd=tmp_path, check=0)
    assert "incomplete last line" in done.stderr
    entries = history(run_dir)
    assert sorted(e["id"] for e in entries) == list(range(60))


def test_resume_refuses_a_history_from_other_settings(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _kill_after(run_dir, tmp_path, 10)
    config = (run_dir / "config.toml").read_text()
    (run_dir / "config.toml").write_text(config.replace("seed = 5", "seed = 6"))
    done = cli("toy", "tune", "--resume", str(run_dir), cwd=tmp_path, check=1)
    assert "cannot resume" in done.stderr and "Traceback" not in done.stderr


def test_resuming_a_finished_run_changes_nothing(tmp_path: Path, reference: Path) -> None:
    before = (reference / "summary.json").read_text()
    done = cli("toy", "tune", "--resume", str(reference), cwd=tmp_path, check=2)
    assert "already finished" in done.stderr
    assert (reference / "summary.json").read_text() == before
