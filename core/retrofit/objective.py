"""From per-batch metrics to one loss: the core's default reduction and failure handling."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from retrofit import hookimpl
from retrofit.config import Config
from retrofit.reductions import DEFAULT_RESAMPLES, DEFAULT_SEED, Reducer, reduce_metrics, standard_errors, weighted_sum


@dataclass(frozen=True)
class Aggregate:
    """What :func:`retrofit_aggregate` returns.

    ``loss`` is lower-is-better; ``metrics`` describe the candidate (one number each);
    ``violations`` are constraint violations (> 0 means violated, told to the optimiser);
    ``loss_se`` and ``standard_errors`` give the standard error of the loss and of each metric
    across batches or episodes, where the evaluation is noisy enough for that to matter.
    """

    loss: float
    metrics: Mapping[str, float] = field(default_factory=dict)
    violations: Sequence[float] = ()
    loss_se: float | None = None
    standard_errors: Mapping[str, float] = field(default_factory=dict)


@hookimpl(trylast=True)
def retrofit_aggregate(metrics: Sequence[Mapping[str, float]], config: Config) -> Aggregate:
    """Core default: mean of each metric over the batches that report it, then the weighted sum
    of ``[objective]``. The loss is also the mean of per-batch weighted sums, so its standard
    error comes from their spread (when every batch reports every weighted metric)."""
    names = sorted({name for batch in metrics for name in batch})
    reducers = [Reducer(name, "mean", name) for name in names]
    means = reduce_metrics(metrics, reducers)
    errors = standard_errors(metrics, reducers)
    loss_se = None
    if all(name in batch for batch in metrics for name in config.objective):
        losses = [{"loss": weighted_sum(batch, config.objective)} for batch in metrics]
        loss_se = Reducer("loss", "mean", "loss").standard_error(losses)
    return Aggregate(loss=weighted_sum(means, config.objective), metrics=means, loss_se=loss_se,
                     standard_errors={name: se for name, se in errors.items() if se is not None})


def reduced_aggregate(metrics: Sequence[Mapping[str, float]], reducers: Sequence[Reducer],
                      objective: Mapping[str, float], *, resamples: int = DEFAULT_RESAMPLES,
                      seed: int = DEFAULT_SEED) -> Aggregate:
    """An :class:`Aggregate` from a domain's own reducers (ratios of sums, quantiles, ...).

    For domains whose candidate metrics are not means of per-batch values, e.g. kills per life
    = total kills / total lives over episodes. Each metric gets its reducer's standard error;
    the loss, a weighted sum of reduced metrics, gets a seeded bootstrap standard error over
    the batches (deterministic for the same input). Metrics the objective weights must be
    among the reducers' names.
    """
    reduced = reduce_metrics(metrics, reducers)
    errors = standard_errors(metrics, reducers, resamples=resamples, seed=seed)
    loss = weighted_sum(reduced, objective)
    loss_se = None
    if len(metrics) >= 2:
        needed = [r for r in reducers if r.name in objective]
        rng = np.random.default_rng(seed)
        losses = []
        for _ in range(resamples):
            sample = [metrics[i] for i in rng.integers(0, len(metrics), size=len(metrics))]
            try:
                losses.append(weighted_sum(reduce_metrics(sample, needed), objective))
            except ValueError:  # e.g. a resample whose ratio has a zero denominator: skip it
                continue
        loss_se = float(np.std(losses, ddof=1)) if len(losses) >= 2 else None
    return Aggregate(loss=loss, metrics=reduced, loss_se=loss_se,
                     standard_errors={name: se for name, se in errors.items() if se is not None})


def failure_loss(worst_finite: float | None) -> float:
    """The loss told to the optimiser for a failed candidate: clearly worse than any seen.

    nevergrad optimisers do not all survive ``inf``, so failures get a finite penalty above
    the worst finite loss so far (recorded in history, so a resumed run replays it exactly).
    """
    if worst_finite is None:
        return 1e6
    return worst_finite + max(1.0, abs(worst_finite))
