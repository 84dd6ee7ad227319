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


def standard_error(values: Sequence[float]) -> float | None:
    """Standard error of the mean (sample std / sqrt(n)); ``None`` for a single value."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return math.sqrt(variance / len(values))


@hookimpl(trylast=True)
def retrofit_aggregate(metrics: Sequence[Mapping[str, float]], config: Config) -> Aggregate:
    """Core default: mean of each metric over batches, then the weighted sum of ``[objective]``.

    The loss is the mean of per-batch weighted sums, so its standard error comes from the
    spread of those per-batch losses.
    """
    means = mean_metrics(metrics)
    loss = weighted_loss(means, config.objective)
    complete = [batch for batch in metrics if all(name in batch for name in config.objective)]
    per_batch = [weighted_loss(batch, config.objective) for batch in complete]
    errors = {name: standard_error([b[name] for b in metrics if name in b]) for name in means}
    return Aggregate(loss=loss, metrics=means, loss_se=standard_error(per_batch) if len(complete) == len(metrics)
                     else None, standard_errors={k: v for k, v in errors.items() if v is not None})


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
