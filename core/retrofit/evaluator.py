"""The worker side of a run: one model, its knobs and its batches, evaluating candidates.

An :class:`Evaluator` is built once per process (the main one for the serial executor,
each pool worker otherwise) and then receives only candidate *values*, never a model.
"""

from __future__ import annotations

import math
import os
import socket
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrofit.config import Config
from retrofit.errors import PluginError, UsageError
from retrofit.knobs import KnobSet, Space
from retrofit.objective import Aggregate
from retrofit.plugins import Plugins, load

SPLITS = ("train", "validation")


@dataclass(frozen=True)
class Task:
    """One evaluation to run: candidate ``candidate`` with natural ``values`` on ``split``.

    ``batches`` selects a subset of the split's batches by index (``None``: all of them); the
    engine gives every candidate of a round the same subset (common random numbers).
    """

    candidate: int
    split: str
    values: np.ndarray
    batches: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Setup:
    """What the engine learns from a freshly built evaluator."""

    space: Space
    train_batches: int


@dataclass
class Outcome:
    """The result of a :class:`Task`. ``error`` is set (and ``loss`` is ``None``) on failure."""

    candidate: int
    split: str
    loss: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    violations: list[float] = field(default_factory=list)
    loss_se: float | None = None
    standard_errors: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    worker: str = ""
    error: str | None = None
    bad_input: bool = False  # the error is the user's (a UsageError: unreadable data...), not the candidate's


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Evaluator:
    """Evaluates candidates of one domain in this process."""

    def __init__(self, config: Config, plugins: Plugins | None = None) -> None:
        self.config = config
        self.plugins = plugins or load()
        self.domain = config.domain
        self.model = self.plugins.call("retrofit_load_model", domain=self.domain, config=config)
        knobs = self.plugins.call("retrofit_expose_parameters", returns=(list, tuple), expected="a list of knobs",
                                  domain=self.domain, model=self.model, config=config)
        self.knobs = KnobSet(knobs)
        self._batches: dict[str, Sequence[Any]] = {}

    @property
    def space(self) -> Space:
        return self.knobs.space

    def setup(self) -> Setup:
        return Setup(space=self.space, train_batches=len(self.batches("train")))

    def batches(self, split: str) -> Sequence[Any]:
        """The batches of ``split``, asked of the domain once and kept."""
        if split not in self._batches:
            batches = list(self.plugins.call("retrofit_batches", returns=Iterable, expected="a sequence of batches",
                                             domain=self.domain, config=self.config, split=split))
            if not batches:
                raise PluginError(f"domain {self.domain!r} returned no {split} batches")
            self._batches[split] = batches
        return self._batches[split]

    def evaluate(self, task: Task, knobs: KnobSet | None = None) -> Outcome:
        """Run one candidate on (a subset of) the batches of its split. Never raises for a bad
        candidate. ``knobs`` replaces the exposed knobs (the probe tries other parameter groups
        of the same model)."""
        start = time.perf_counter()
        outcome = Outcome(candidate=task.candidate, split=task.split, loss=None, worker=worker_name())
        try:
            batches = self.batches(task.split)
            if task.batches is not None:
                batches = [batches[index] for index in task.batches]
            with (knobs or self.knobs).applied(task.values):
                per_batch = [self._evaluate_batch(batch, index) for index, batch in enumerate(batches)]
            aggregate = self.plugins.call("retrofit_aggregate", returns=Aggregate, expected="retrofit.Aggregate",
                                          domain=self.domain, metrics=per_batch, config=self.config)
            outcome.metrics = {name: float(value) for name, value in aggregate.metrics.items()}
            outcome.violations = [float(v) for v in aggregate.violations]
            outcome.loss_se = None if aggregate.loss_se is None else float(aggregate.loss_se)
            outcome.standard_errors = {name: float(v) for name, v in aggregate.standard_errors.items()}
            if not math.isfinite(float(aggregate.loss)):
                raise ValueError(f"loss is {aggregate.loss}")
            outcome.loss = float(aggregate.loss)
        except Exception as error:  # a bad candidate is a recorded failure, not a crash
            outcome.error = _describe(error)
            outcome.bad_input = isinstance(error, UsageError)
        outcome.seconds = time.perf_counter() - start
        return outcome

    def _evaluate_batch(self, batch: Any, index: int) -> Mapping[str, float]:
        metrics = self.plugins.call("retrofit_evaluate", returns=Mapping, expected="a mapping of metrics",
                                    domain=self.domain, model=self.model, batch=batch, config=self.config)
        for name, value in metrics.items():
            if not math.isfinite(float(value)):
                raise ValueError(f"metric {name} is {value} on batch {index}")
        return metrics


def _describe(error: BaseException) -> str:
    """``Type: message`` plus the innermost frame, enough to find the bug from the history."""
    # a plugin's error wrapped by Plugins.call: point at the plugin's line, not at the wrapper
    frames = traceback.extract_tb((error.__cause__ or error).__traceback__)
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"
