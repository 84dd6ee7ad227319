"""The optimisation loop: ask candidates, evaluate them on train, tell the losses, re-score
the best on validation, and record everything.

One run, as a straight line::

    executor.start()              -> the knobs' search space (model loaded where evaluations run)
    optimiser.suggest(identity)   -> candidate 0 is the unmodified model
    loop: ask -> evaluate (train) -> record -> tell -> ask ...
          every `validate_every` results: re-score the top `top_k` on validation
    end:  re-score, choose the result, write summary.json

With ``tell_order = "ask"`` (default) results are told in the order the candidates were
asked, so a seeded run is reproducible whatever the timing of the workers. Resuming replays
the recorded history into a fresh optimiser built with the same seed (see records.py).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrofit import optimizers
from retrofit.config import Config
from retrofit.domain import Domain
from retrofit.errors import RunFailed
from retrofit.evaluator import Outcome, Task
from retrofit.executors import Executor
from retrofit.knobs import Space
from retrofit.objective import failure_loss
from retrofit.records import HISTORY, VALIDATION, RunRecord

# Normalised coordinates are in units of a knob's sigma; a knob without bounds gets this
# box so that optimisers that need finite bounds still work.
_UNBOUNDED = 1e3


class Interrupted(Exception):
    """The run was stopped by Ctrl-C; everything finished is recorded and resumable."""

    def __init__(self, record: RunRecord) -> None:
        super().__init__(str(record.path))
        self.record = record


@dataclass
class Progress:
    """Callbacks through which the engine reports progress (the CLI draws a bar with them)."""

    on_start: Callable[[int, int], None] = lambda total, done: None
    on_result: Callable[[int, float | None], None] = lambda done, best_loss: None
    on_message: Callable[[str], None] = lambda text: None


@dataclass
class _State:
    """What the loop knows; rebuilt from the record on resume."""

    history: list[dict[str, Any]] = field(default_factory=list)
    validation: dict[int, dict[str, Any]] = field(default_factory=dict)
    pending: dict[int, tuple[Any, np.ndarray]] = field(default_factory=dict)  # asked, not told
    finished: dict[int, Outcome] = field(default_factory=dict)  # evaluated, waiting for its turn
    validating: set[int] = field(default_factory=set)
    asked: int = 0

    @property
    def told(self) -> int:
        return len(self.history)

    def successes(self) -> list[dict[str, Any]]:
        return [entry for entry in self.history if entry["error"] is None]

    def worst_finite(self) -> float | None:
        losses = [entry["loss"] for entry in self.successes()]
        return max(losses) if losses else None

    def best_train(self) -> dict[str, Any] | None:
        successes = self.successes()
        return min(successes, key=lambda e: e["loss"]) if successes else None


class Run:
    """One tuning run over an executor, writing to a run record."""

    def __init__(self, config: Config, domain: Domain, executor: Executor, record: RunRecord,
                 progress: Progress | None = None) -> None:
        self.config = config
        self.domain = domain
        self.executor = executor
        self.record = record
        self.progress = progress or Progress()
        self.settings = config.run
        self.state = _State()
        self.space: Space | None = None
        self.choice: optimizers.OptimizerChoice | None = None
        self._started = time.monotonic()
        self._previous_wall = 0.0

    # -- public ------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        """Run (or resume) to the end of the budget and return the summary."""
        try:
            self.space = self.executor.start()
            self._build_optimizer()
            self._replay()
            self.progress.on_start(self.settings.budget, self.state.told)
            self._ensure_validated(0)  # the baseline's held-out score is always measured
            self._loop()
            self._checkpoint(final=True)
            while self.state.validating:
                self._handle(self.executor.wait())
            summary = self.summary("finished")
        except KeyboardInterrupt:
            self.record.write_summary(self.summary("interrupted"))
            raise Interrupted(self.record) from None
        except BaseException:
            if self.space is not None and self.choice is not None:
                self.record.write_summary(self.summary("failed"))
            raise
        finally:
            self.executor.close()
        self.record.write_summary(summary)
        return summary

    # -- optimiser -----------------------------------------------------------------------
    def _build_optimizer(self) -> None:
        with warnings.catch_warnings():  # cma complains that matplotlib is missing; we never plot through it
            warnings.filterwarnings("ignore", message="Could not import matplotlib")
            import nevergrad as ng

        space = self.space
        assert space is not None
        parametrization = ng.p.Array(init=np.zeros(space.size)).set_mutation(sigma=1.0)
        lower, upper = space.normalised_bounds()
        if np.isfinite(lower).any() or np.isfinite(upper).any():
            # clipping keeps the start at identity: full-range sampling would throw the first
            # candidates anywhere in the box (DESIGN.md, nevergrad facts)
            parametrization.set_bounds(lower=np.maximum(lower, -_UNBOUNDED), upper=np.minimum(upper, _UNBOUNDED),
                                       method="clipping", full_range_sampling=False)
        parametrization.random_state = np.random.RandomState(self.settings.seed)
        self.choice = optimizers.build(self.settings.optimizer, parametrization, budget=self.settings.budget,
                                       workers=self.executor.workers, noisy=self.domain.noisy)
        self.choice.optimizer.suggest(np.zeros(space.size))
        for note in self.choice.notes:
            self.progress.on_message(f"optimizer: {note}")

    def _ask(self) -> None:
        assert self.space is not None and self.choice is not None
        candidate = self.choice.optimizer.ask()
        natural = self.space.to_natural(candidate.value)
        self.state.pending[self.state.asked] = (candidate, natural)
        self.state.asked += 1

    def _refill(self) -> None:
        while len(self.state.pending) < self.executor.workers and self.state.asked < self.settings.budget:
            self._ask()
            identifier = self.state.asked - 1
            self.executor.submit(Task(identifier, "train", self.state.pending[identifier][1]))

    def _tell(self, identifier: int, told: float, violations: list[float]) -> None:
        assert self.choice is not None
        candidate, _ = self.state.pending.pop(identifier)
        if violations:
            self.choice.optimizer.tell(candidate, told, constraint_violation=violations)
        else:
            self.choice.optimizer.tell(candidate, told)

    # -- resume --------------------------------------------------------------------------
    def _replay(self) -> None:
        """Rebuild the optimiser's state from the record: same asks, same tells, same order."""
        history = self.record.read_lines(HISTORY)
        if len(history) > self.settings.budget:
            raise RunFailed(f"{self.record.path} holds {len(history)} evaluations, more than the budget "
                            f"{self.settings.budget}")
        summary = self.record.read_summary()
        self._previous_wall = float(summary.get("wall_seconds", 0.0)) if summary else 0.0
        workers = self.executor.workers
        while len(self.state.pending) < workers and self.state.asked < self.settings.budget:
            self._ask()
        for entry in history:
            identifier = entry["id"]
            if identifier not in self.state.pending:
                raise RunFailed(f"cannot resume {self.record.path}: history line for candidate {identifier} does not "
                                f"match the optimizer's asks (was the run started with other settings or versions?)")
            expected = self.state.pending[identifier][1]
            if not np.allclose(expected, self.space.join(entry["values"]), rtol=1e-9, atol=1e-12):
                raise RunFailed(f"cannot resume {self.record.path}: candidate {identifier} differs from the recorded "
                                f"one (nevergrad or numpy version changed?)")
            self._tell(identifier, entry["told"], entry.get("violations") or [])
            self.state.history.append(entry)
            while len(self.state.pending) < workers and self.state.asked < self.settings.budget:
                self._ask()
        for entry in self.record.read_lines(VALIDATION):
            self.state.validation[entry["id"]] = entry
        for identifier in sorted(self.state.pending):  # in flight when the run stopped: run again
            self.executor.submit(Task(identifier, "train", self.state.pending[identifier][1]))
        if history:
            self.progress.on_message(f"resumed: {len(history)} evaluations replayed, "
                                     f"{len(self.state.pending)} re-submitted")

    # -- the loop ------------------------------------------------------------------------
    def _loop(self) -> None:
        self._refill()
        while self.state.told < self.settings.budget:
            outcomes = self.executor.wait()
            if not outcomes and not self.state.pending:
                raise RunFailed("executor has nothing left to run before the budget was spent")
            self._handle(outcomes)

    def _handle(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.split == "validation":
                self._record_validation(outcome)
            else:
                self.state.finished[outcome.candidate] = outcome
        if self.settings.tell_order == "ask":
            while self.state.pending and min(self.state.pending) in self.state.finished:
                self._record_train(self.state.finished.pop(min(self.state.pending)))
        else:
            for identifier in sorted(self.state.finished):
                self._record_train(self.state.finished.pop(identifier))

    def _record_train(self, outcome: Outcome) -> None:
        identifier = outcome.candidate
        natural = self.state.pending[identifier][1]
        told = outcome.loss if outcome.error is None else failure_loss(self.state.worst_finite())
        entry = {
            "id": identifier, "split": "train", "values": _listed(self.space.split(natural)),
            "loss": outcome.loss, "told": told, "metrics": outcome.metrics, "violations": outcome.violations,
            "seconds": round(outcome.seconds, 6), "worker": outcome.worker, "error": outcome.error,
        }
        self.record.append(HISTORY, entry)  # durable before the optimiser hears of it
        self._tell(identifier, told, outcome.violations)
        self.state.history.append(entry)
        best = self.state.best_train()
        self.progress.on_result(self.state.told, best["loss"] if best else None)
        if outcome.error is not None:
            self.progress.on_message(f"candidate {identifier} failed: {outcome.error}")
        if self.state.told % self.settings.validate_every == 0 and self.state.told < self.settings.budget:
            self._checkpoint(final=False)
        self._refill()

    # -- validation ----------------------------------------------------------------------
    def _top_k(self) -> list[dict[str, Any]]:
        return sorted(self.state.successes(), key=lambda e: (e["loss"], e["id"]))[: self.settings.top_k]

    def _checkpoint(self, final: bool) -> None:
        for entry in self._top_k():
            self._ensure_validated(entry["id"])
        self.record.write_summary(self.summary("finished" if final and not self.state.validating else "running"))

    def _ensure_validated(self, identifier: int) -> None:
        if identifier in self.state.validation or identifier in self.state.validating:
            return
        values = (self.space.identity if identifier == 0
                  else self.space.join(next(e for e in self.state.history if e["id"] == identifier)["values"]))
        self.state.validating.add(identifier)
        self.executor.submit(Task(identifier, "validation", values))

    def _record_validation(self, outcome: Outcome) -> None:
        entry = {"id": outcome.candidate, "split": "validation", "loss": outcome.loss, "metrics": outcome.metrics,
                 "seconds": round(outcome.seconds, 6), "worker": outcome.worker, "error": outcome.error}
        self.record.append(VALIDATION, entry)
        self.state.validating.discard(outcome.candidate)
        self.state.validation[outcome.candidate] = entry

    # -- results -------------------------------------------------------------------------
    def chosen(self) -> dict[str, Any] | None:
        """The result: lowest validation loss among the re-scored candidates (candidate 0
        included, so no change wins when nothing generalises), or the best train loss."""
        if self.settings.selection == "train":
            return self.state.best_train()
        scored = [v for v in self.state.validation.values() if v["error"] is None]
        if not scored:
            return self.state.best_train()
        best = min(scored, key=lambda v: (v["loss"], v["id"]))
        return next((e for e in self.state.history if e["id"] == best["id"]), None)

    def summary(self, status: str) -> dict[str, Any]:
        assert self.space is not None and self.choice is not None
        history = self.state.history
        baseline = next((e for e in history if e["id"] == 0), None)
        best = self.chosen()
        baseline_val = self.state.validation.get(0)
        best_val = self.state.validation.get(best["id"]) if best else None
        improvement = None
        if baseline_val and best_val and baseline_val["error"] is None and best_val["error"] is None:
            improvement = (baseline_val["loss"] - best_val["loss"]) / max(abs(baseline_val["loss"]), 1e-12)
        evaluation_seconds = sum(e["seconds"] for e in history) + sum(v["seconds"] for v in self.state.validation.values())
        return {
            "domain": self.config.domain,
            "status": status,
            "optimizer": self.choice.record(),
            "budget": self.settings.budget,
            "evaluations": len(history),
            "failed_evaluations": sum(1 for e in history if e["error"] is not None),
            "validation_evaluations": len(self.state.validation),
            "wall_seconds": round(self._previous_wall + time.monotonic() - self._started, 3),
            "evaluation_seconds": round(evaluation_seconds, 3),
            "executor": self.executor.name,
            "workers": self.executor.workers,
            "seed": self.settings.seed,
            "selection": self.settings.selection,
            "parameters": {"count": self.space.size, "knobs": list(self.space.specs)},
            "baseline": {"id": 0, "train": _split_figures(baseline), "validation": _split_figures(baseline_val)},
            "best": {"id": best["id"] if best else None, "train": _split_figures(best),
                     "validation": _split_figures(best_val), "values": best["values"] if best else None},
            "improvement": {"validation_loss_relative": improvement},
        }


def _split_figures(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {"loss": entry["loss"], "metrics": entry["metrics"], "error": entry["error"]}


def _listed(values: dict[str, np.ndarray]) -> dict[str, list[float]]:
    return {name: [float(v) for v in array] for name, array in values.items()}
