"""Worker faults with the local process pool: a worker killed from outside, segfaulting,
running out of memory, or hanging. Policy (docs/reliability.md): the evaluation it was running
is recorded as failed with the reason, never retried, the worker is replaced, the run finishes.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import history
from retrofit.config import resolve
from retrofit.evaluator import Task
from retrofit.executors import LocalPoolExecutor
from retrofit.toy import DOMAIN

from .faults import lines, problems


def _rescored(run_dir: Path) -> list[dict]:
    path = run_dir / "validation.jsonl"
    return [json.loads(line) for line in lines(path)]


@pytest.mark.parametrize(("fault", "reason"), [("segfault", "killed by SIGSEGV"), ("oom", "MemoryError")])
def test_a_worker_fault_costs_exactly_the_evaluation_it_hit(toy_run, fault: str, reason: str) -> None:
    summary, run_dir = toy_run(budget=16, executor="local", workers=2, validate_every=8,
                               **{"toy.fault": fault, "toy.fault_rate": 0.3})
    assert problems(run_dir, 16) == []
    failed = [e for e in history(run_dir) if e["error"]]
    assert failed and all(reason in e["error"] and e["loss"] is None for e in failed)
    assert summary["failed_evaluations"] == len(failed) < 16  # the others ran on replacement workers
    assert history(run_dir)[0]["error"] is None  # the baseline is never hit by a fault


def test_a_worker_killed_from_outside_mid_evaluation(toy_run, tmp_path: Path) -> None:
    """SIGKILL, as the kernel's out-of-memory killer sends it, to a busy worker."""
    import multiprocessing

    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            runs = sorted(tmp_path.glob("run*/history.jsonl"))
            workers = multiprocessing.active_children()
            if runs and len(lines(runs[-1])) >= 3 and workers:
                time.sleep(0.05)  # well inside the next evaluation (0.1 s per batch)
                workers[0].kill()
                killed.append(workers[0].pid)
            time.sleep(0.005)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    _, run_dir = toy_run(budget=10, executor="local", workers=2, validate_every=10, **{"toy.delay": 0.1})
    thread.join()
    assert killed
    assert problems(run_dir, 10) == []
    errors = [e["error"] for e in [*history(run_dir), *_rescored(run_dir)] if e["error"]]
    assert errors == ["worker died (killed by SIGKILL)"]  # exactly one evaluation charged


def test_a_worker_killed_while_idle_costs_nothing() -> None:
    """A worker that dies between tasks is replaced when the next task is handed out."""
    config = resolve(DOMAIN, None, {"run.executor": "local", "run.workers": 1})
    executor = LocalPoolExecutor(config, 1)
    try:
        setup = executor.start()
        executor._pool[0].process.kill()
        executor._pool[0].process.join()
        executor.submit(Task(0, "train", setup.space.identity))
        outcomes = executor.wait()
        assert [o.error for o in outcomes] == [None] and np.isfinite(outcomes[0].loss)
        assert executor.restarts == 1
    finally:
        executor.close()


def test_a_hanging_evaluation_times_out_and_the_run_goes_on(toy_run) -> None:
    _, run_dir = toy_run(budget=10, executor="local", workers=2, eval_timeout=1.0, validate_every=10,
                               **{"toy.fault": "hang", "toy.fault_rate": 0.25})
    assert problems(run_dir, 10) == []
    hung = [e for e in history(run_dir) if e["error"]]
    assert hung and all(e["error"] == "timed out after 1 s" for e in hung)
    assert all(e["seconds"] < 30 for e in hung)  # killed, not waited for (an hour)


def test_a_sigterm_to_a_worker_is_a_death_like_any_other(toy_run, tmp_path: Path) -> None:
    """Another signal, another reason: the message names it."""
    import multiprocessing
    import os

    sent: list[int] = []

    def terminator() -> None:
        deadline = time.monotonic() + 120
        while not sent and time.monotonic() < deadline:
            runs = sorted(tmp_path.glob("run*/history.jsonl"))
            workers = multiprocessing.active_children()
            if runs and len(lines(runs[-1])) >= 2 and workers:
                time.sleep(0.05)
                os.kill(workers[-1].pid, signal.SIGTERM)
                sent.append(workers[-1].pid)
            time.sleep(0.005)

    thread = threading.Thread(target=terminator, daemon=True)
    thread.start()
    _, run_dir = toy_run(budget=8, executor="local", workers=2, validate_every=8, **{"toy.delay": 0.1})
    thread.join()
    assert sent and problems(run_dir, 8) == []
    errors = [e["error"] for e in [*history(run_dir), *_rescored(run_dir)] if e["error"]]
    assert errors == ["worker died (killed by SIGTERM)"]
