"""The optimisation loop: ask candidates, evaluate them on train, tell the losses, re-score
the best on validation, and record everything.

One run, as a straight line::

    executor.start()              -> the knobs' search space (model loaded where evaluations run)
    optimiser.suggest(identity)   -> candidate 0 is the unmodified model
    loop: ask -> evaluate (train) -> record -> tell -> ask ...
          every `validate_every` results, a checkpoint: re-evaluate the top `top_k` on train
          (noisy objectives), re-score them on validation, record the train/validation trace,
          stop early if validation stopped improving
    end:  a last checkpoint, choose the result, write summary.json

With ``tell_order = "ask"`` (default) results are told in the order the candidates were
asked, so a seeded run is reproducible whatever the timing of the workers. Resuming replays
the recorded history into a fresh optimiser built with the same seed (see records.py).

Noise: with ``batches_per_evaluation`` set, each candidate sees a random subset of the train
batches, the same subset for every candidate of a round (common random numbers), and top
candidates are re-evaluated on fresh subsets before anything is chosen.
"""

from __future__ import annotations

import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrofit import optimizers
from retrofit.config import Config
from retrofit.domain import Domain
from retrofit.errors import RunFailed, UsageError
from retrofit.evaluator import Outcome, Task
from retrofit.executors import Executor
from retrofit.knobs import Space
from retrofit.objective import failure_loss
from retrofit.records import CHECKPOINTS, HISTORY, REEVALUATIONS, VALIDATION, RunRecord
from retrofit.reductions import Constraint, constraint_violations, pareto_front, parse_constraint

FINISHED, STOPPED_EARLY = "finished", "stopped_early"


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
    by_id: dict[int, dict[str, Any]] = field(default_factory=dict)
    validation: dict[int, dict[str, Any]] = field(default_factory=dict)
    reevaluations: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    pending: dict[int, tuple[Any, np.ndarray]] = field(default_factory=dict)  # asked, not told
    finished: dict[int, Outcome] = field(default_factory=dict)  # evaluated, waiting for its turn
    waiting: Counter[tuple[str, int]] = field(default_factory=Counter)  # re-scores in flight
    asked: int = 0
    stop_asking: bool = False

    @property
    def told(self) -> int:
        return len(self.history)

    def successes(self) -> list[dict[str, Any]]:
        return [entry for entry in self.history if entry["error"] is None]

    def worst_finite(self) -> float | None:
        losses = [entry["loss"] for entry in self.successes()]
        return max(losses) if losses else None

    def train_loss(self, identifier: int) -> float:
        """Mean of a candidate's successful train evaluations (first one and re-evaluations)."""
        losses = [self.by_id[identifier]["loss"]]
        losses += [e["loss"] for e in self.reevaluations.get(identifier, []) if e["error"] is None]
        return sum(losses) / len(losses)

    def ranked(self) -> list[dict[str, Any]]:
        """Successful candidates, best first: those within the constraints on train before the
        others, so violators never crowd the top candidates out of re-scoring."""
        return sorted(self.successes(), key=lambda e: (any(v > 0 for v in e.get("violations") or ()),
                                                      self.train_loss(e["id"]), e["id"]))

    def best_train(self) -> dict[str, Any] | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None


class Run:
    """One tuning run over an executor, writing to a run record."""

    def __init__(self, config: Config, domain: Domain, executor: Executor, record: RunRecord,
                 progress: Progress | None = None) -> None:
        self.config = config
        self.domain = domain
        self.executor = executor
        self.record = record
        if config.run.tensorboard:  # optional TensorBoard scalars, logged as the records are written
            from retrofit.tensorboard import logging_record

            self.record = logging_record(record, config.run.tensorboard)
        self.progress = progress or Progress()
        self.settings = config.run
        self.noisy = domain.noisy or self.settings.batches_per_evaluation > 0
        self.constraints: list[Constraint] = [parse_constraint(f"{metric} {condition}", where=f"constraints.{metric}")
                                              for metric, condition in config.constraints.items()]
        if any(c.bound.needs_baseline for c in self.constraints) and self.settings.tell_order != "ask":
            raise UsageError("constraints relative to the baseline need run.tell_order = \"ask\" "
                             "(the baseline must be measured before other candidates are told)")
        self.state = _State()
        self.space: Space | None = None
        self.train_batches = 0
        self.choice: optimizers.OptimizerChoice | None = None
        self._started = time.monotonic()
        self._previous_wall = 0.0
        self._running = False

    # -- public ------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        """Run (or resume) to the end of the budget and return the summary."""
        try:
            setup = self.executor.start()
            self.space, self.train_batches = setup.space, setup.train_batches
            self._build_optimizer()
            self._replay()
            self._running = True  # from here on the summary on disk is this run's to update
            self.progress.on_start(self.settings.budget, self.state.told)
            self._rescore("validation", 0)  # the baseline's held-out score is always measured
            if self._checkpoint_missed():  # the run stopped inside the checkpoint due here: finish it first
                self._checkpoint()
            self._loop()
            self._checkpoint()
            status = STOPPED_EARLY if self.state.stop_asking else FINISHED
            summary = self.summary(status)
        except KeyboardInterrupt:
            if self._running:  # else: stopped before anything ran
                self._last_summary("interrupted")
            raise Interrupted(self.record) from None
        except BaseException:
            if self._running:  # never overwrite a record this run did not get to (e.g. a finished one)
                self._last_summary("failed")
            raise
        finally:
            self.executor.close()
        self.record.write_summary(summary)
        return summary

    def _last_summary(self, status: str) -> None:
        """Best effort: when the disk is full this write fails too, and must not hide why the run stopped."""
        try:
            self.record.write_summary(self.summary(status))
        except (RunFailed, OSError):
            pass

    # -- optimiser -----------------------------------------------------------------------
    def _build_optimizer(self) -> None:
        space = self.space
        assert space is not None
        parametrization = space.parametrization(seed=self.settings.seed)
        if self.noisy:
            parametrization.function.deterministic = False
        self.choice = optimizers.build(self.settings.optimizer, parametrization, budget=self.settings.budget,
                                       workers=self.executor.workers, noisy=self.noisy)
        self.choice.optimizer.suggest(np.zeros(space.size))
        for note in self.choice.notes:
            self.progress.on_message(f"optimizer: {note}")

    def _ask(self) -> None:
        assert self.space is not None and self.choice is not None
        candidate = self.choice.optimizer.ask()
        natural = self.space.to_natural(candidate.value)
        self.state.pending[self.state.asked] = (candidate, natural)
        self.state.asked += 1

    def _fill(self, submit: bool) -> None:
        """Keep one asked candidate per worker until the budget is asked."""
        while (len(self.state.pending) < self.executor.workers and self.state.asked < self.settings.budget
               and not self.state.stop_asking):
            self._ask()
            if submit:
                self._submit_train(self.state.asked - 1)

    def _submit_train(self, identifier: int) -> None:
        self.executor.submit(Task(identifier, "train", self.state.pending[identifier][1], self._train_batches(identifier)))

    def _train_batches(self, identifier: int) -> tuple[int, ...] | None:
        return self._round_batches(("round", identifier // self.settings.round_size))

    def _round_batches(self, key: tuple[Any, ...]) -> tuple[int, ...] | None:
        """The train batches drawn for ``key`` (a round, or one re-evaluation): seeded, so a
        resumed or repeated run draws the same ones."""
        wanted = self.settings.batches_per_evaluation
        if not wanted or wanted >= self.train_batches:
            return None
        words = [self.settings.seed, *(hash_word(part) for part in key)]
        rng = np.random.default_rng(words)
        return tuple(sorted(int(i) for i in rng.choice(self.train_batches, size=wanted, replace=False)))

    def _told(self, outcome: Outcome) -> float | list[float]:
        """What the optimiser hears: the loss, or one weighted term per objective metric in a
        multi-objective run; a failure gets a penalty worse than anything seen so far."""
        if not self.settings.multiobjective:
            return outcome.loss if outcome.error is None else failure_loss(self.state.worst_finite())
        if outcome.error is None:
            return [weight * outcome.metrics[name] for name, weight in self.config.objective.items()]
        seen = [e["told"] for e in self.state.successes()]
        return [failure_loss(max((told[k] for told in seen), default=None)) for k in range(len(self.config.objective))]

    def _tell(self, identifier: int, told: float | list[float], violations: list[float]) -> None:
        assert self.choice is not None
        candidate, _ = self.state.pending.pop(identifier)
        if violations:
            self.choice.optimizer.tell(candidate, told, constraint_violation=violations)
        else:
            self.choice.optimizer.tell(candidate, told)

    # -- resume --------------------------------------------------------------------------
    def _replay(self) -> None:
        """Rebuild the optimiser's state from the record: same asks, same tells, same order."""
        assert self.space is not None
        summary = self.record.read_summary()
        if summary and summary.get("status") in (FINISHED, STOPPED_EARLY):
            raise UsageError(f"{self.record.path} is already {summary['status'].replace('_', ' ')}: nothing to resume")
        self._previous_wall = float(summary.get("wall_seconds", 0.0)) if summary else 0.0
        # re-scores and checkpoints first: replaying the history needs to know where checkpoints were
        for entry in self.record.read_lines(VALIDATION, required=("id", "loss", "error")):
            self.state.validation[entry["id"]] = entry
        for entry in self.record.read_lines(REEVALUATIONS, required=("id", "loss", "error")):
            self.state.reevaluations.setdefault(entry["id"], []).append(entry)
        checkpoints = self.record.read_lines(CHECKPOINTS, required=("evaluations", "best_validation_loss"))
        history = self.record.read_lines(HISTORY, required=("id", "values", "told", "loss", "error"))
        # after --repair cut the history, re-scores and checkpoints past its end are made again when
        # the run gets there (a candidate is re-scored only once told, the baseline excepted)
        told = {entry["id"] for entry in history} | {0}
        self.state.validation = {i: v for i, v in self.state.validation.items() if i in told}
        self.state.reevaluations = {i: r for i, r in self.state.reevaluations.items() if i in told}
        self.state.checkpoints = [c for c in checkpoints if c["evaluations"] <= len(history)]
        if len(history) > self.settings.budget:
            raise RunFailed(f"{self.record.path} holds {len(history)} evaluations, more than the budget "
                            f"{self.settings.budget}")
        self._fill(submit=False)
        for entry in history:
            identifier = entry["id"]
            if identifier not in self.state.pending:
                raise RunFailed(f"cannot resume {self.record.path}: history line for candidate {identifier} does not "
                                f"match the optimizer's asks (was the run started with other settings or versions?)")
            expected = self.state.pending[identifier][1]
            if not np.allclose(expected, self.space.join(entry["values"]), rtol=1e-9, atol=1e-12):
                raise RunFailed(f"cannot resume {self.record.path}: candidate {identifier} differs from the recorded "
                                f"one (seed, settings, nevergrad or numpy changed?)")
            self._tell(identifier, entry["told"], entry.get("violations") or [])
            self._remember(entry)
            done = [c for c in self.state.checkpoints if c["evaluations"] <= self.state.told]
            if done and done[-1]["evaluations"] == self.state.told and _patience_exhausted(done, self.settings.patience):
                self.state.stop_asking = True  # the run had decided to stop early here
            if entry is not history[-1] or not self._checkpoint_missed():
                self._fill(submit=False)  # else the missed checkpoint runs first: asks come after it, as they did
        for identifier in sorted(self.state.pending):  # in flight when the run stopped: run again
            self._submit_train(identifier)
        if history:
            self.progress.on_message(f"resumed: {len(history)} evaluations replayed, "
                                     f"{len(self.state.pending)} re-submitted")

    def _checkpoint_missed(self) -> bool:
        """Whether a checkpoint was due at the current count and never logged (the run stopped in it)."""
        told = self.state.told
        return (0 < told < self.settings.budget and told % self.settings.validate_every == 0
                and not any(c["evaluations"] == told for c in self.state.checkpoints))

    def _remember(self, entry: dict[str, Any]) -> None:
        self.state.history.append(entry)
        self.state.by_id[entry["id"]] = entry

    # -- the loop ------------------------------------------------------------------------
    def _loop(self) -> None:
        self._fill(submit=True)
        while self.state.pending or self.state.finished:
            outcomes = self.executor.wait()
            if not outcomes and not self.state.finished:
                raise RunFailed("executor has nothing left to run before the budget was spent")
            self._collect(outcomes)
            self._record_ready()

    def _collect(self, outcomes: list[Outcome]) -> None:
        """Route outcomes: re-scores are recorded at once, train results wait for their turn."""
        for outcome in outcomes:
            if outcome.split == "train" and outcome.candidate in self.state.pending:
                self.state.finished[outcome.candidate] = outcome
            else:
                self._record_rescore(outcome)

    def _record_ready(self) -> None:
        if self.settings.tell_order == "ask":
            while self.state.pending and min(self.state.pending) in self.state.finished:
                self._record_train(self.state.finished.pop(min(self.state.pending)))
        else:
            for identifier in sorted(self.state.finished):
                self._record_train(self.state.finished.pop(identifier))

    def _record_train(self, outcome: Outcome) -> None:
        assert self.space is not None
        identifier = outcome.candidate
        natural = self.state.pending[identifier][1]
        violations = list(outcome.violations)
        if outcome.error is None and self.constraints:
            baseline = self.state.by_id[0]["metrics"] if identifier != 0 else outcome.metrics
            violations += constraint_violations(outcome.metrics, self.constraints, baseline)
        if identifier == 0 and outcome.error is not None:
            # without a baseline nothing can be compared: stop now instead of failing every candidate
            _bad_input(outcome)
            raise RunFailed(f"the unmodified model (candidate 0) fails to evaluate: {outcome.error}")
        told = self._told(outcome)
        entry = {
            "id": identifier, "split": "train", "values": _listed(self.space.split(natural)),
            "loss": outcome.loss, "loss_se": outcome.loss_se, "told": told, "metrics": outcome.metrics,
            "violations": violations, "batches": self._train_batches(identifier),
            "seconds": round(outcome.seconds, 6), "worker": outcome.worker, "error": outcome.error,
            "attempts": _attempts(outcome),
        }
        self.record.append(HISTORY, entry)  # durable before the optimiser hears of it
        self._tell(identifier, told, violations)
        self._remember(entry)
        best = self.state.best_train()
        self.progress.on_result(self.state.told, best["loss"] if best else None)
        if outcome.error is not None:
            self.progress.on_message(f"candidate {identifier} failed: {outcome.error}")
        if self.state.told % self.settings.validate_every == 0 and self.state.told < self.settings.budget:
            self._checkpoint()
        self._fill(submit=True)

    # -- checkpoints: re-evaluation, validation, early stop ------------------------------
    def _checkpoint(self) -> None:
        """Re-score the top candidates (waiting for them), log the trace, maybe stop early."""
        if self.settings.reevaluations and self.noisy:
            for entry in self.state.ranked()[: self.settings.top_k]:
                done = len(self.state.reevaluations.get(entry["id"], []))
                for repeat in range(done, self.settings.reevaluations):
                    self._rescore("train", entry["id"], repeat)
            self._drain_rescores()
        for entry in self.state.ranked()[: self.settings.top_k]:
            self._rescore("validation", entry["id"])
        self._drain_rescores()
        self._log_checkpoint()
        self.record.write_summary(self.summary("running"))

    def _rescore(self, split: str, identifier: int, repeat: int = 0) -> None:
        assert self.space is not None
        key = (split, identifier)
        if split == "validation" and (key in self.state.waiting or identifier in self.state.validation):
            return
        # candidate 0 is re-scored before its train result exists: its values are the identity
        values = self.space.identity if identifier == 0 else self.space.join(self.state.by_id[identifier]["values"])
        batches = self._round_batches(("reevaluation", identifier, repeat)) if split == "train" else None
        self.state.waiting[key] += 1
        self.executor.submit(Task(identifier, split, values, batches))

    def _drain_rescores(self) -> None:
        """Wait for re-scores; train results arriving meanwhile wait for their turn."""
        while self.state.waiting:
            self._collect(self.executor.wait())

    def _record_rescore(self, outcome: Outcome) -> None:
        if outcome.candidate == 0:
            _bad_input(outcome)  # e.g. a validation image that cannot be read: the user's to fix, now
        entry = {"id": outcome.candidate, "split": outcome.split, "loss": outcome.loss, "loss_se": outcome.loss_se,
                 "metrics": outcome.metrics, "standard_errors": outcome.standard_errors,
                 "seconds": round(outcome.seconds, 6), "worker": outcome.worker, "error": outcome.error,
                 "attempts": _attempts(outcome)}
        self.state.waiting -= Counter([(outcome.split, outcome.candidate)])  # drops keys that reach 0
        if outcome.split == "validation":
            self.record.append(VALIDATION, entry)
            self.state.validation[outcome.candidate] = entry
        else:
            self.record.append(REEVALUATIONS, entry)
            self.state.reevaluations.setdefault(outcome.candidate, []).append(entry)

    def _log_checkpoint(self) -> None:
        chosen = self.chosen()
        best_train = self.state.best_train()
        validated = [v["loss"] for v in self.state.validation.values() if v["error"] is None]
        point = {
            "evaluations": self.state.told,
            "best_train_loss": self.state.train_loss(best_train["id"]) if best_train else None,
            "best_validation_loss": min(validated) if validated else None,
            "chosen": chosen["id"] if chosen else None,
            "chosen_train_loss": self.state.train_loss(chosen["id"]) if chosen else None,
            "chosen_validation_loss": self._validation_loss(chosen["id"]) if chosen else None,
        }
        if self.state.checkpoints and self.state.checkpoints[-1]["evaluations"] == point["evaluations"]:
            return  # the final checkpoint of a run that ended on a checkpoint
        self.record.append(CHECKPOINTS, point)
        self.state.checkpoints.append(point)
        patience = self.settings.patience
        if _patience_exhausted(self.state.checkpoints, patience):
            self.state.stop_asking = True
            self.progress.on_message(f"stopping early: validation loss has not improved for {patience} "
                                     f"checkpoints")

    def _validation_loss(self, identifier: int) -> float | None:
        entry = self.state.validation.get(identifier)
        return entry["loss"] if entry and entry["error"] is None else None

    # -- results -------------------------------------------------------------------------
    def chosen(self) -> dict[str, Any] | None:
        """The result: lowest validation loss among the re-scored candidates (candidate 0
        included, so no change wins when nothing generalises), or the best train loss."""
        if self.settings.selection == "train":
            feasible = [e for e in self.state.ranked() if not any(v > 0 for v in e["violations"])]
            return feasible[0] if feasible else self.state.by_id.get(0)
        scored = [v for v in self.state.validation.values() if v["error"] is None and v["id"] in self.state.by_id
                  and self._feasible_on_validation(v)]
        if not scored:
            return self.state.best_train()
        best = min(scored, key=lambda v: (v["loss"], v["id"]))
        return self.state.by_id[best["id"]]

    def _feasible_on_validation(self, entry: dict[str, Any]) -> bool:
        """Does a validation re-score satisfy the constraints (against the baseline's validation)?"""
        baseline = self.state.validation.get(0)
        if not self.constraints or baseline is None or baseline["error"] is not None:
            return True
        return not any(v > 0 for v in constraint_violations(entry["metrics"], self.constraints, baseline["metrics"]))

    def pareto(self) -> list[dict[str, Any]]:
        """The non-dominated train candidates of a multi-objective run."""
        successes = self.state.successes()
        if not self.settings.multiobjective or not successes:
            return []
        front = pareto_front([entry["told"] for entry in successes])
        return [{"id": successes[i]["id"], "objectives": successes[i]["told"]} for i in front]

    def summary(self, status: str) -> dict[str, Any]:
        assert self.space is not None and self.choice is not None
        history = self.state.history
        baseline = self.state.by_id.get(0)
        best = self.chosen()
        baseline_val = self.state.validation.get(0)
        best_val = self.state.validation.get(best["id"]) if best else None
        improvement = None
        if baseline_val and best_val and baseline_val["error"] is None and best_val["error"] is None:
            improvement = (baseline_val["loss"] - best_val["loss"]) / max(abs(baseline_val["loss"]), 1e-12)
        rescored = [*self.state.validation.values(), *(e for r in self.state.reevaluations.values() for e in r)]
        return {
            "domain": self.config.domain,
            "status": status,
            "optimizer": self.choice.record(),
            "budget": self.settings.budget,
            "evaluations": len(history),
            "failed_evaluations": sum(1 for e in history if e["error"] is not None),
            "rescore_evaluations": len(rescored),
            "wall_seconds": round(self._previous_wall + time.monotonic() - self._started, 3),
            "evaluation_seconds": round(sum(e["seconds"] for e in [*history, *rescored]), 3),
            "executor": self.executor.name,
            "workers": self.executor.workers,
            "seed": self.settings.seed,
            "noisy": self.noisy,
            "selection": self.settings.selection,
            "parameters": {"count": self.space.size, "knobs": list(self.space.specs)},
            "baseline": {"id": 0, "train": self._figures(baseline), "validation": _figures(baseline_val)},
            "best": {"id": best["id"] if best else None, "train": self._figures(best),
                     "validation": _figures(best_val), "values": best["values"] if best else None},
            "improvement": {"validation_loss_relative": improvement},
            "checkpoints": self.state.checkpoints,
            "constraints": [str(c) for c in self.constraints],
            "pareto": self.pareto(),
        }

    def _figures(self, entry: dict[str, Any] | None) -> dict[str, Any] | None:
        """Train figures of a candidate; with re-evaluations the loss is their mean."""
        figures = _figures(entry)
        if figures is not None and entry is not None and entry["error"] is None:
            repeats = [e for e in self.state.reevaluations.get(entry["id"], []) if e["error"] is None]
            if repeats:
                losses = [entry["loss"], *(e["loss"] for e in repeats)]
                figures["loss"] = sum(losses) / len(losses)
                figures["loss_se"] = float(np.std(losses, ddof=1) / np.sqrt(len(losses)))
                figures["evaluations"] = len(losses)
        return figures


def _bad_input(outcome: Outcome) -> None:
    """Stop with a usage error (exit 2) when the unmodified model failed on the user's input."""
    if outcome.error is not None and getattr(outcome, "bad_input", False):
        raise UsageError(f"the unmodified model cannot be evaluated on {outcome.split}: "
                         f"{outcome.error.removeprefix('UsageError: ')}")


def _patience_exhausted(checkpoints: list[dict[str, Any]], patience: int) -> bool:
    """Early stop: the validation loss has not improved over the last ``patience`` checkpoints."""
    if not patience or len(checkpoints) <= patience:
        return False
    recent = [c["best_validation_loss"] for c in checkpoints[-patience - 1:]]
    return all(value is not None and value >= recent[0] for value in recent[1:])


def _figures(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {"loss": entry["loss"], "loss_se": entry.get("loss_se"), "metrics": entry["metrics"],
            "standard_errors": entry.get("standard_errors", {}), "error": entry["error"]}


def _attempts(outcome: Outcome) -> int:
    """How many workers ran the evaluation: more than 1 when an executor that retries (dask)
    lost a worker mid-evaluation. Histories written before this field existed read as 1."""
    return int(getattr(outcome, "attempts", 1))


def _listed(values: dict[str, np.ndarray]) -> dict[str, list[float]]:
    return {name: [float(v) for v in array] for name, array in values.items()}


def hash_word(part: Any) -> int:
    """A stable non-negative integer for a seed word (``hash`` of a str changes per process)."""
    return part if isinstance(part, int) else zlib.crc32(str(part).encode())
