"""Fault injection on real ``retrofit`` runs, shared by the CI suite and benchmarks/reliability.py.

Every helper drives the real command line in a separate process (``python -m retrofit``) on
the built-in toy domain, injects one fault from outside (SIGKILL of the main process or of a
worker) and reads the run directory back. :func:`problems` is the single definition of "nothing
was lost" used everywhere: every candidate 0..budget-1 recorded exactly once, every evaluation
finished before the fault still there unchanged, and a complete, finished summary.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Keys of summary.json that DESIGN.md's run record contract promises.
SUMMARY_KEYS = ("domain", "status", "optimizer", "budget", "evaluations", "failed_evaluations", "wall_seconds",
                "executor", "workers", "parameters", "baseline", "best", "improvement")
# What identifies an evaluation's result: the same candidate, the same loss, the same tell.
SAME = ("id", "values", "loss", "told", "error")


@dataclass(frozen=True)
class Toy:
    """A toy ``tune`` command line: small, a little slow per evaluation, checkpoints often."""

    budget: int = 40
    workers: int = 2
    seed: int = 5
    delay: float = 0.01
    validate_every: int = 10
    executor: str = "local"
    extra: tuple[str, ...] = ()

    def args(self) -> list[str]:
        return ["toy", "tune", "--budget", str(self.budget), "--workers", str(self.workers), "--seed",
                str(self.seed), "--executor", self.executor, "--set", f"toy.delay={self.delay}",
                "--set", f"run.validate_every={self.validate_every}", *self.extra]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "retrofit", *args]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONHASHSEED": "0"}


def run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``retrofit ARGS`` to the end."""
    return subprocess.run(command(*args), cwd=cwd, env=environment(), capture_output=True, text=True,
                          timeout=timeout)


def lines(path: Path) -> list[str]:
    """Complete lines of a JSONL file (a line being written has no newline yet)."""
    if not path.exists():
        return []
    return [line for line in path.read_text(errors="replace").splitlines(keepends=True) if line.endswith("\n")]


def entries(run_dir: Path, name: str = "history.jsonl") -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(run_dir / name)]


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(child) for child in path.read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def kill_main(args: list[str], run_dir: Path, cwd: Path, evaluations: int, jitter: float = 0.0,
              timeout: float = 120) -> list[dict[str, Any]]:
    """Run ``retrofit ARGS`` (writing ``run_dir``), SIGKILL its main process once ``evaluations``
    are recorded (plus ``jitter`` seconds, so the kill lands anywhere in the loop:
    mid-evaluation, mid-checkpoint, mid-write), wait for its orphaned workers to go, and
    return the history as it was at the kill."""
    process = subprocess.Popen(command(*args), cwd=cwd, env=environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while len(lines(run_dir / "history.jsonl")) < evaluations:
        if process.poll() is not None:
            raise AssertionError(f"the run ended (exit {process.returncode}) before it could be killed: "
                                 f"{process.stderr.read() if process.stderr else ''}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the run made no progress")
        time.sleep(0.005)
    if jitter:
        time.sleep(jitter)
    workers = children(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    if process.stderr:
        process.stderr.close()
    # orphaned workers notice their parent is gone (closed pipe) and exit by themselves
    deadline = time.monotonic() + 30
    while any(alive(worker) for worker in workers):
        if time.monotonic() > deadline:
            raise AssertionError(f"workers {workers} outlived the killed run")
        time.sleep(0.05)
    return entries(run_dir)


def kill_worker(toy: Toy, run_dir: Path, cwd: Path, after: int, timeout: float = 120,
                ) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run to the end, SIGKILLing one busy worker from outside once ``after`` evaluations are
    recorded (as the kernel's out-of-memory killer would). Returns the finished process and
    the pid killed."""
    process = subprocess.Popen(command(*toy.args(), "--out", str(run_dir)), cwd=cwd, env=environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    victim = 0
    while not victim:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            out, err = process.communicate()
            raise AssertionError(f"the run ended before a worker could be killed:\n{err}")
        workers = children(process.pid)
        if len(lines(run_dir / "history.jsonl")) >= after and workers:
            victim = workers[0]
        time.sleep(0.005)
    os.kill(victim, signal.SIGKILL)
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), victim


def problems(run_dir: Path, budget: int, before: list[dict[str, Any]] | None = None,
             reference: Path | None = None) -> list[str]:
    """Everything wrong with a run directory that should hold a finished run: an empty list
    means no gap, no duplicate, nothing finished lost, a complete summary (and, given a
    ``reference`` run with the same settings, the same results)."""
    found: list[str] = []
    history = entries(run_dir)
    ids = [entry["id"] for entry in history]
    if sorted(ids) != list(range(budget)):
        missing = sorted(set(range(budget)) - set(ids))
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        found.append(f"history ids: {len(ids)} lines, missing {missing[:10]}, repeated {repeated[:10]}")
    by_id = {entry["id"]: entry for entry in history}
    lost = [entry["id"] for entry in before or [] if {k: by_id.get(entry["id"], {}).get(k) for k in SAME}
            != {k: entry.get(k) for k in SAME}]
    if lost:
        found.append(f"finished evaluations lost or changed: {lost[:10]}")
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError) as error:
        return [*found, f"summary.json unreadable: {error}"]
    absent = [key for key in SUMMARY_KEYS if key not in summary]
    if absent:
        found.append(f"summary lacks {absent}")
    if summary.get("status") != "finished" or summary.get("evaluations") != budget:
        found.append(f"summary: status {summary.get('status')}, {summary.get('evaluations')} evaluations")
    if summary.get("failed_evaluations") != sum(1 for e in history if e["error"]):
        found.append("summary's failed_evaluations does not match the history")
    if reference is not None:
        expected = {entry["id"]: entry for entry in entries(reference)}
        differ = [i for i in by_id if {k: by_id[i][k] for k in SAME} != {k: expected.get(i, {}).get(k) for k in SAME}]
        if differ:
            found.append(f"results differ from the uninterrupted run for candidates {differ[:10]}")
        other = json.loads((reference / "summary.json").read_text())
        for key in ("best", "baseline", "improvement", "checkpoints", "failed_evaluations"):
            if summary.get(key) != other.get(key):
                found.append(f"summary {key} differs from the uninterrupted run")
    return found


def kill_points(seed: int, count: int, budget: int) -> list[tuple[int, float]]:
    """``count`` seeded (evaluations, jitter seconds) kill points spread over a run."""
    rng = random.Random(seed)
    points = sorted(rng.sample(range(1, budget), count))
    return [(point, round(rng.uniform(0.0, 0.05), 4)) for point in points]


def invoke(args: list[str]) -> tuple[int, str]:
    """``retrofit ARGS`` in this process (no interpreter start-up: fast); returns the exit code
    and what went to stderr through click (progress bars draw elsewhere)."""
    import contextlib
    import io

    from retrofit.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(args)
    return code, err.getvalue()


class FullDisk:
    """The record writer's ``open`` and ``os.fdopen``, failing like a full disk from the
    ``fail_at``-th write on: a JSONL append writes half its line first (as a real short write
    does), a whole-file replacement fails before its rename."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at, self.writes, self.full = fail_at, 0, True

    @contextlib.contextmanager
    def installed(self) -> Iterator[FullDisk]:
        """Patch retrofit.records' ``open`` and ``os.fdopen`` while the block runs; the disk
        has room again afterwards."""
        from retrofit import records

        fake_os = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
        fake_os.fdopen = self.fdopen
        records.open = self.open  # type: ignore[attr-defined]  # found before the builtin
        real_os, records.os = records.os, fake_os  # type: ignore[assignment]
        try:
            yield self
        finally:
            del records.open  # type: ignore[attr-defined]
            records.os = real_os

    def _count(self) -> bool:
        self.writes += 1
        return self.full and self.writes >= self.fail_at

    def open(self, path: Any, mode: str = "r", **kwargs: Any) -> Any:
        stream = open(path, mode, **kwargs)
        if "a" not in mode:
            return stream
        disk = self
        real_write = stream.write

        def write(text: str) -> int:
            if disk._count():
                real_write(text[: len(text) // 2])
                stream.flush()
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(text)

        stream.write = write  # type: ignore[method-assign]
        return stream

    def fdopen(self, handle: int, mode: str = "r", **kwargs: Any) -> Any:
        stream = os.fdopen(handle, mode, **kwargs)
        real_write = stream.write
        disk = self

        def write(text: str) -> int:
            if disk._count():
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(text)

        stream.write = write  # type: ignore[method-assign]
        return stream


def reference_run(toy: Toy, tmp_path_factory: Any) -> Path:
    """An uninterrupted run of ``toy``: what a faulted run must end up equal to."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    code, err = invoke([*toy.args(), "--out", str(run_dir)])
    assert code == 0, err
    return run_dir
