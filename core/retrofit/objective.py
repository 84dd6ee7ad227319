"""From per-batch metrics to one loss: the core's default reduction and failure handling."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from retrofit import hookimpl
from retrofit.config import Config
from retrofit.errors import ConfigError


@dataclass(frozen=True)
class Aggregate:
    """What :func:`retrofit_aggregate` returns: the loss (lower is better), the metrics that
    describe the candidate (one number each), and constraint violations (> 0 means violated)."""

    loss: float
    metrics: Mapping[str, float] = field(default_factory=dict)
    violations: Sequence[float] = ()


def mean_metrics(metrics: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Average each metric over the batches that report it."""
    names = sorted({name for batch in metrics for name in batch})
    return {name: sum(b[name] for b in metrics if name in b) / sum(1 for b in metrics if name in b) for name in names}


def weighted_loss(means: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Sum of ``weight * metric``; every weighted metric must be present."""
    missing = [name for name in weights if name not in means]
    if missing:
        raise ConfigError(f"objective weights name metrics the domain does not report: {', '.join(missing)} "
                          f"(reported: {', '.join(means) or 'none'})")
    return sum(weight * means[name] for name, weight in weights.items())


@hookimpl(trylast=True)
def retrofit_aggregate(metrics: Sequence[Mapping[str, float]], config: Config) -> Aggregate:
    """Core default: mean of each metric over batches, then the weighted sum of ``[objective]``."""
    means = mean_metrics(metrics)
    return Aggregate(loss=weighted_loss(means, config.objective), metrics=means)


def is_finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def failure_loss(worst_finite: float | None) -> float:
    """The loss told to the optimiser for a failed candidate: clearly worse than any seen.

    nevergrad optimisers do not all survive ``inf``, so failures get a finite penalty above
    the worst finite loss so far (recorded in history, so a resumed run replays it exactly).
    """
    if worst_finite is None:
        return 1e6
    return worst_finite + max(1.0, abs(worst_finite))
