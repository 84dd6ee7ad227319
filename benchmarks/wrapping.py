"""An executor that hands everything to another one: benchmarks subclass it to observe a step
(start-up time, memory after the model loads) without touching the executor itself."""

from __future__ import annotations

from retrofit import executors
from retrofit.evaluator import Outcome, Setup, Task


class ExecutorWrapper:
    """Delegates the executor interface to ``inner``; override what you want to observe."""

    def __init__(self, inner: executors.Executor) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def workers(self) -> int:
        return self.inner.workers

    def start(self) -> Setup:
        return self.inner.start()

    def submit(self, task: Task) -> None:
        self.inner.submit(task)

    def wait(self) -> list[Outcome]:
        return self.inner.wait()

    def close(self) -> None:
        self.inner.close()
