"""Where evaluations run: in this process (``serial``) or in a local pool of worker processes.

Both executors take :class:`~retrofit.evaluator.Task` s and hand back
:class:`~retrofit.evaluator.Outcome` s as they finish. A pool worker loads the model once and
then receives only candidate values.

The pool is a few lines of ``multiprocessing`` rather than ``concurrent.futures``: when a
worker dies (segfault, out-of-memory kill) a ``ProcessPoolExecutor`` breaks every pending
future and cannot say which evaluation killed it. Here each worker runs one task at a time,
so a death, or a timeout, is charged to exactly that evaluation, recorded as failed, and the
worker is replaced.
"""

from __future__ import annotations

import collections
import multiprocessing
import signal
import time
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from retrofit.config import Config
from retrofit.errors import RetrofitError, RunFailed, UsageError
from retrofit.evaluator import Evaluator, Outcome, Setup, Task, worker_name

_STARTUP_TIMEOUT = 600.0


class Executor(Protocol):
    """What the engine needs from an executor."""

    name: str
    workers: int

    def start(self) -> Setup:
        """Load the model wherever evaluations run; return its search space and batch count."""

    def submit(self, task: Task) -> None:
        """Queue a task; it runs when a worker is free."""

    def wait(self) -> list[Outcome]:
        """Block until at least one task has finished; return every finished outcome."""

    def close(self) -> None:
        """Stop all workers. Safe to call twice."""


class SerialExecutor:
    """Evaluations one after another in this process: simplest, and easiest to debug."""

    name = "serial"
    workers = 1

    def __init__(self, config: Config, evaluator: Evaluator | None = None) -> None:
        self.config = config
        self.evaluator = evaluator
        self.queue: collections.deque[Task] = collections.deque()

    def start(self) -> Setup:
        if self.evaluator is None:
            self.evaluator = Evaluator(self.config)
        return self.evaluator.setup()

    def submit(self, task: Task) -> None:
        self.queue.append(task)

    def wait(self) -> list[Outcome]:
        assert self.evaluator is not None, "start() first"
        return [self.evaluator.evaluate(self.queue.popleft())] if self.queue else []

    def close(self) -> None:
        self.queue.clear()


def _worker_main(connection: Connection, config: Config) -> None:
    """Body of a pool worker: build the evaluator, then evaluate tasks until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's business
    try:
        evaluator = Evaluator(config)
        connection.send(("ready", evaluator.setup()))
    except BaseException as error:
        kind = "usage" if isinstance(error, UsageError) else "failed"
        connection.send((kind, f"{type(error).__name__}: {error}" if kind == "failed" else str(error)))
        return
    while True:
        try:
            task = connection.recv()
        except (EOFError, OSError):  # the main process is gone: so are we
            return
        if task is None:
            return
        outcome = evaluator.evaluate(task)
        try:
            connection.send(outcome)
        except (BrokenPipeError, OSError):  # the main process died mid-evaluation
            return


class _Worker:
    def __init__(self, context: Any, config: Config, index: int) -> None:
        self.index = index
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, config), daemon=True,
                                       name=f"retrofit-worker-{index}")
        self.process.start()
        child.close()
        self.task: Task | None = None
        self.started = 0.0

    def stop(self, grace: float = 2.0) -> None:
        if self.process.is_alive():
            try:
                self.connection.send(None)
            except (OSError, ValueError):
                pass
            self.process.join(grace)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(grace)
        self.connection.close()


class LocalPoolExecutor:
    """A pool of worker processes on this machine, one model each."""

    name = "local"

    def __init__(self, config: Config, workers: int) -> None:
        self.config = config
        self.workers = workers
        self.timeout = config.run.eval_timeout or None
        self._context = multiprocessing.get_context("spawn")  # fork + torch/vizdoom threads is unsafe
        self._pool: list[_Worker] = []
        self.queue: collections.deque[Task] = collections.deque()
        self.restarts = 0

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> Setup:
        self._pool = [_Worker(self._context, self.config, index) for index in range(self.workers)]
        setups = [self._await_ready(worker) for worker in self._pool]
        return setups[0]

    def _await_ready(self, worker: _Worker) -> Setup:
        if not worker.connection.poll(_STARTUP_TIMEOUT):
            self.close()
            raise RunFailed(f"worker {worker.index} did not start within {_STARTUP_TIMEOUT:.0f} s")
        try:
            kind, payload = worker.connection.recv()
        except (EOFError, OSError):
            self.close()
            raise RunFailed(f"worker {worker.index} died while loading the model "
                            f"(exit code {worker.process.exitcode})") from None
        if kind != "ready":
            self.close()
            raise (UsageError if kind == "usage" else RunFailed)(payload)
        return payload

    def close(self) -> None:
        for worker in self._pool:
            worker.stop()
        self._pool = []
        self.queue.clear()

    # -- work ----------------------------------------------------------------------------
    def submit(self, task: Task) -> None:
        self.queue.append(task)

    def wait(self) -> list[Outcome]:
        self._dispatch()
        busy = [w for w in self._pool if w.task is not None]
        if not busy:
            return []
        timeout = None
        if self.timeout:
            timeout = max(0.0, min(w.started + self.timeout for w in busy) - time.monotonic())
        waitables: dict[Any, _Worker] = {}
        for worker in busy:
            waitables[worker.connection] = worker
            waitables[worker.process.sentinel] = worker
        ready = wait(list(waitables), timeout)
        outcomes: list[Outcome] = []
        for worker in {id(waitables[r]): waitables[r] for r in ready}.values():
            outcome = self._collect(worker, exiting=worker.process.sentinel in ready)
            if outcome is not None:
                outcomes.append(outcome)
        if self.timeout:
            now = time.monotonic()
            for worker in busy:
                if worker.task is not None and now - worker.started >= self.timeout:
                    outcomes.append(self._fail_and_replace(worker, f"timed out after {self.timeout:g} s"))
        return outcomes

    def _dispatch(self) -> None:
        for worker in list(self._pool):
            if worker.task is None and self.queue:
                task = self.queue.popleft()
                try:
                    worker.connection.send(task)
                except (OSError, ValueError):  # it died while idle (killed from outside): nothing was lost
                    worker = self._replace(worker)
                    worker.connection.send(task)
                worker.task, worker.started = task, time.monotonic()

    def _collect(self, worker: _Worker, exiting: bool = False) -> Outcome | None:
        """The worker's outcome, or a failed one if it died. ``exiting``: its sentinel fired.
        A dying process closes its pipes (sentinel, connection) before it can be reaped, so
        ``is_alive()`` may still say yes: trust the closed pipe, or this wait() returns nothing
        and the engine would see an executor with no work left."""
        broken = exiting
        if worker.connection.poll():
            try:
                outcome = worker.connection.recv()
            except (EOFError, OSError):
                outcome, broken = None, True
            if isinstance(outcome, Outcome):
                worker.task = None
                return outcome
        if broken or not worker.process.is_alive():
            worker.process.join(5.0)
            return self._fail_and_replace(worker, f"worker died ({_exit_reason(worker.process.exitcode)})")
        return None

    def _fail_and_replace(self, worker: _Worker, reason: str) -> Outcome:
        task = worker.task
        assert task is not None
        elapsed = time.monotonic() - worker.started
        name = f"{worker_name().split(':')[0]}:{worker.process.pid}"
        self._replace(worker)
        return Outcome(candidate=task.candidate, split=task.split, loss=None, seconds=elapsed,
                       worker=name, error=reason)

    def _replace(self, worker: _Worker) -> _Worker:
        """Kill ``worker`` (if it still lives) and put a fresh one, model loaded, in its place."""
        worker.process.kill()
        worker.stop(grace=1.0)
        replacement = _Worker(self._context, self.config, worker.index)
        self._await_ready(replacement)
        self._pool[self._pool.index(worker)] = replacement
        self.restarts += 1
        return replacement


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def create(config: Config, evaluator: Evaluator | None = None) -> Executor:
    """The executor named by ``config.run.executor``."""
    if config.run.executor == "serial":
        return SerialExecutor(config, evaluator)
    if config.run.executor == "local":
        return LocalPoolExecutor(config, config.run.resolved_workers())
    if config.run.executor == "dask":
        from retrofit.dask_executor import DaskExecutor  # optional dependency: imported only when asked for

        # on an existing cluster, workers = 0 means every worker it has (counted once connected)
        return DaskExecutor(config, config.run.workers if config.run.scheduler else config.run.resolved_workers())
    raise RetrofitError(f"unknown executor {config.run.executor!r}")
