"""``kill -9`` of the main process at seeded random points, then ``--resume``: no gap, no
duplicate, nothing finished lost, and the same results as an uninterrupted run.

The run that is killed is a real ``retrofit`` process; the resume runs in this process to save
an interpreter start-up. The full campaign (50+ kill points, both executors) is
benchmarks/reliability.py; CI runs a few points.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .faults import Toy, invoke, kill_main, kill_points, problems

SERIAL = Toy(budget=40, workers=1, seed=5, delay=0.01, validate_every=10, executor="serial")
POOL = Toy(budget=40, workers=2, seed=5, delay=0.01, validate_every=10, executor="local")
# seeded: the same points every run of the suite, spread over the run
POINTS = kill_points(seed=9, count=4, budget=SERIAL.budget)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every killed-and-resumed run must end up equal to."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    code, err = invoke([*SERIAL.args(), "--out", str(run_dir)])
    assert code == 0, err
    assert problems(run_dir, SERIAL.budget) == []
    return run_dir


@pytest.mark.parametrize(("evaluations", "jitter"), POINTS, ids=[f"at{p}+{j}s" for p, j in POINTS])
def test_kill_9_anywhere_then_resume_loses_nothing(tmp_path: Path, reference: Path, evaluations: int,
                                                   jitter: float) -> None:
    run_dir = tmp_path / "run"
    before = kill_main([*SERIAL.args(), "--out", str(run_dir)], run_dir, tmp_path, evaluations, jitter)
    assert evaluations <= len(before) < SERIAL.budget
    code, err = invoke(["toy", "tune", "--resume", str(run_dir)])
    assert code == 0, err
    assert problems(run_dir, SERIAL.budget, before=before, reference=reference) == []


def test_a_pool_run_killed_twice_resumes_twice(tmp_path: Path) -> None:
    """Workers orphaned by the kill exit by themselves (kill_main checks), and a resumed run
    killed again resumes again: replay of a replayed history."""
    run_dir = tmp_path / "run"
    kill_main([*POOL.args(), "--out", str(run_dir)], run_dir, tmp_path, 6)
    before = kill_main(["toy", "tune", "--resume", str(run_dir)], run_dir, tmp_path, 22, jitter=0.02)
    code, err = invoke(["toy", "tune", "--resume", str(run_dir)])
    assert code == 0, err
    assert problems(run_dir, POOL.budget, before=before) == []


def test_an_early_stop_decided_before_the_stop_is_kept_on_resume(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The run decided to stop early (patience) at a checkpoint, then was stopped while its last
    in-flight candidate was being recorded: the resumed run must not ask for more."""
    import json

    from retrofit.records import RunRecord

    args = Toy(budget=200, workers=2, seed=1, delay=0.0, validate_every=5, executor="local",
               extra=("--set", "run.patience=1")).args()
    code, err = invoke([*args, "--out", str(tmp_path / "reference")])
    assert code == 0, err
    expected = json.loads((tmp_path / "reference" / "summary.json").read_text())
    stop = expected["checkpoints"][-2]["evaluations"]  # the checkpoint that decided; the last is the final one
    assert expected["status"] == "stopped_early" and expected["evaluations"] > stop

    original = RunRecord.append

    def append(self: RunRecord, name: str, entry: dict) -> None:
        if name == "history.jsonl" and entry["id"] == stop:
            raise KeyboardInterrupt  # as Ctrl-C, just after the decision
        original(self, name, entry)

    monkeypatch.setattr(RunRecord, "append", append)
    run_dir = tmp_path / "run"
    assert invoke([*args, "--out", str(run_dir)])[0] == 130
    monkeypatch.setattr(RunRecord, "append", original)
    code, err = invoke(["toy", "tune", "--resume", str(run_dir)])
    assert code == 0, err
    finished = json.loads((run_dir / "summary.json").read_text())
    assert (finished["status"], finished["evaluations"]) == ("stopped_early", expected["evaluations"])
    assert finished["best"] == expected["best"] and finished["checkpoints"] == expected["checkpoints"]
