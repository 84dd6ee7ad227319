"""Reductions for ``retrofit_aggregate``: per-batch metrics -> candidate metrics, loss, constraints.

A domain's evaluate hook returns one mapping of metrics per batch (or per episode, or per
sampled program). Its aggregate hook turns that list into one number per candidate metric,
then into a loss and constraint violations. This module provides the pieces, numpy only::

    reducers = parse_reducers(config.options["reducers"], where="doom.reducers")
    metrics = reduce_metrics(per_batch, reducers)     # {"kills_per_life": 1.7, ...}
    loss = weighted_sum(metrics, config.objective)    # lower is better

A reducer is declared as a table (TOML inline table or dict)::

    {name = "kills_per_life", reduce = "ratio", of = "kills", per = "deaths", floor = 1}
    {name = "p90_error", reduce = "quantile", of = "abs_rel", q = 0.9}
    {name = "bad_rate", reduce = "rate_above", of = "ratio", threshold = 1.25}
    {name = "worst_10pc", reduce = "cvar", of = "abs_rel", alpha = 0.1, higher_is_worse = true}

Rules that hold everywhere:

* A reducer reads the batches that report *every* metric it names (``of``, and ``per`` for a
  ratio) and skips the others, like the core's mean. A metric that no batch reports is a
  :class:`~retrofit.errors.ConfigError` listing the metrics that are reported.
* Nothing non-finite passes silently: a NaN/inf input value or reduced value raises
  :class:`ValueError` naming the metric. No batches at all raises :class:`ValueError`.
* Standard errors are ``None`` when fewer than two batches are read: the spread cannot be
  estimated from one value, and ``0.0`` would claim certainty. Otherwise they are analytic
  where a simple formula exists (see :meth:`Reducer.standard_error`) and a seeded bootstrap
  elsewhere, so the same input always gives the same number.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from retrofit.errors import ConfigError

__all__ = [
    "KINDS", "SPEC_KEYS", "UNMEASURED_VIOLATION", "Bound", "Constraint", "Reducer", "bootstrap_se",
    "constraint_violations", "pareto_front", "parse_constraint", "parse_constraints", "parse_reducer",
    "parse_reducers", "pick_by_weights", "reduce_metrics", "standard_errors", "weighted_sum",
]

# reduce kind -> (parameters it requires, parameters it may take), besides name / reduce / of
_PARAMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mean": ((), ()),
    "median": ((), ()),
    "quantile": (("q",), ()),
    "cvar": (("alpha", "higher_is_worse"), ()),
    "rate_above": (("threshold",), ()),
    "rate_below": (("threshold",), ()),
    "ratio": (("per",), ("floor",)),
    "geomean": ((), ()),
    "sum": ((), ()),
    "max": ((), ()),
    "min": ((), ()),
}
KINDS: tuple[str, ...] = tuple(_PARAMS)
_PARAM_KEYS = ("per", "q", "alpha", "higher_is_worse", "threshold", "floor")
SPEC_KEYS: tuple[str, ...] = ("name", "reduce", "of", *_PARAM_KEYS)

# kinds whose standard error has a closed form; the rest are bootstrapped
_ANALYTIC_SE = frozenset({"mean", "sum", "rate_above", "rate_below", "ratio", "geomean"})

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
# bootstrap index blocks stay under this many entries (memory), whatever the number of batches
_BLOCK_ENTRIES = 1 << 21

Op = Literal[">=", "<="]
# The violation reported for a NaN (unmeasured) metric: finite because nevergrad's penalties
# do arithmetic on violations, and far above any real violation so such a candidate ranks last.
UNMEASURED_VIOLATION = 1e9


# ----------------------------------------------------------------------------------------------
# reducers


@dataclass(frozen=True)
class Reducer:
    """One candidate-level metric ``name`` computed from the per-batch values of ``of``.

    ``kind`` (the ``reduce`` key of a spec) is one of :data:`KINDS`:

    ==============  ==========================================================================
    mean            arithmetic mean
    median          median (numpy's linear interpolation between the two middle values)
    quantile        ``q``-quantile, ``0 < q < 1``, numpy's default (linear) interpolation
    cvar            conditional value at risk: the mean of the worst ``alpha`` fraction of the
                    batches, ``0 < alpha <= 1`` (1 is the mean). ``higher_is_worse`` must be
                    given: ``true`` averages the *largest* values (errors, latencies), ``false``
                    the *smallest* (kills, pass rates). A fractional tail weights the boundary
                    batch partially (the exact CVaR of the empirical distribution), so the
                    value moves continuously with ``alpha``.
    rate_above      fraction of batches with value ``> threshold`` (strict)
    rate_below      fraction of batches with value ``< threshold`` (strict)
    ratio           ``sum(of) / sum(per)``, a ratio of sums (not a mean of ratios). With
                    ``floor`` the denominator is ``max(floor, sum(per))`` (``floor = 1`` gives
                    kills / max(1, deaths)); without it a zero denominator raises ValueError.
    geomean         geometric mean; every value must be > 0 (speed-ups), else ValueError
    sum, max, min   as named
    ==============  ==========================================================================

    Construct directly (``Reducer("p90", "quantile", "abs_rel", q=0.9)``) or with
    :func:`parse_reducer`. Invalid fields raise :class:`ConfigError` naming the key.
    """

    name: str
    kind: str
    of: str
    per: str | None = None
    q: float | None = None
    alpha: float | None = None
    higher_is_worse: bool | None = None
    threshold: float | None = None
    floor: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"reducer: key 'name' must be a non-empty string, got {self.name!r}")
        label = f"reducer {self.name!r}"
        if not isinstance(self.kind, str) or self.kind not in _PARAMS:
            raise ConfigError(f"{label}: key 'reduce' is {self.kind!r}, not a known reduction"
                              f"{_did_you_mean(str(self.kind), KINDS)} (known: {', '.join(KINDS)})")
        _check_text(label, "of", self.of)
        required, optional = _PARAMS[self.kind]
        for key in _PARAM_KEYS:
            value = getattr(self, key)
            if value is None and key in required:
                raise ConfigError(f"{label}: reduce = {self.kind!r} needs key {key!r}")
            if value is not None and key not in required + optional:
                takes = ", ".join(("of", *required, *optional))
                raise ConfigError(f"{label}: key {key!r} does not apply to reduce = {self.kind!r} (it takes: {takes})")
        if self.per is not None:
            _check_text(label, "per", self.per)
        for key in ("q", "alpha", "threshold", "floor"):
            if getattr(self, key) is not None:  # TOML integers become floats; bools are not numbers
                object.__setattr__(self, key, _check_number(label, key, getattr(self, key)))
        if self.higher_is_worse is not None and not isinstance(self.higher_is_worse, bool):
            raise ConfigError(f"{label}: key 'higher_is_worse' must be true or false, got {self.higher_is_worse!r}")
        if self.q is not None and not 0.0 < self.q < 1.0:
            raise ConfigError(f"{label}: key 'q' must be strictly between 0 and 1, got {self.q}")
        if self.alpha is not None and not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"{label}: key 'alpha' must be in (0, 1] (the worst fraction), got {self.alpha}")
        if self.floor is not None and not self.floor > 0.0:
            raise ConfigError(f"{label}: key 'floor' must be positive (omit it for no floor), got {self.floor}")

    @property
    def reads(self) -> tuple[str, ...]:
        """The per-batch metrics this reducer reads."""
        return (self.of,) if self.per is None else (self.of, self.per)

    def reduce(self, per_batch: Sequence[Mapping[str, Any]]) -> float:
        """The reduced value over the batches that report :attr:`reads`."""
        x, y = self._columns(per_batch)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            value = float(self._apply(x, y))
        return self._finite(value, "value")

    def standard_error(self, per_batch: Sequence[Mapping[str, Any]], *, resamples: int = DEFAULT_RESAMPLES,
                       seed: int = DEFAULT_SEED) -> float | None:
        """Standard error of :meth:`reduce`; ``None`` with fewer than two batches.

        Analytic (sample standard deviations use ``ddof=1``, ``n`` = batches read):

        * mean: ``std(x) / sqrt(n)``; sum: ``std(x) * sqrt(n)``;
        * rate_above / rate_below: the mean's formula on the 0/1 indicators;
        * geomean ``G``: delta method, ``G * std(log x) / sqrt(n)``;
        * ratio ``R = sum(x) / sum(y)``: delta method, ``sqrt(n) * std(x - R y) / |sum(y)|``
          (no resampling, so no zero-denominator resamples). When the floor is active
          (``sum(y) < floor``) the denominator is a constant: ``sqrt(n) * std(x) / floor``.

        median, quantile, cvar, max and min use :meth:`bootstrap_se` (``resamples``, ``seed``).
        The bootstrap is known to understate the error of max and min; treat those as rough.
        """
        if self.kind not in _ANALYTIC_SE:
            return self.bootstrap_se(per_batch, resamples=resamples, seed=seed)
        x, y = self._columns(per_batch)
        n = x.size
        if n < 2:
            return None
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if self.kind == "mean":
                se = x.std(ddof=1) / math.sqrt(n)
            elif self.kind == "sum":
                se = x.std(ddof=1) * math.sqrt(n)
            elif self.kind in ("rate_above", "rate_below"):
                se = _indicator(self, x).std(ddof=1) / math.sqrt(n)
            elif self.kind == "geomean":
                logs = np.log(x)
                se = math.exp(logs.mean()) * logs.std(ddof=1) / math.sqrt(n)
            else:  # ratio
                assert y is not None
                denominator = float(y.sum())
                if self.floor is not None and denominator < self.floor:
                    se = math.sqrt(n) * x.std(ddof=1) / self.floor
                else:
                    ratio = float(self._apply(x, y))  # raises for a zero denominator
                    se = math.sqrt(n) * (x - ratio * y).std(ddof=1) / abs(denominator)
        return self._finite(float(se), "standard error")

    def bootstrap_se(self, per_batch: Sequence[Mapping[str, Any]], *, resamples: int = DEFAULT_RESAMPLES,
                     seed: int = DEFAULT_SEED) -> float | None:
        """Bootstrap standard error: the ``ddof=1`` standard deviation of the reduced value over
        ``resamples`` resamples of the batches (with replacement, same size), drawn from
        ``numpy.random.default_rng(seed)``: deterministic for given input, ``resamples`` and
        ``seed``. ``None`` with fewer than two batches. Works for every kind."""
        if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 2:
            raise ValueError(f"resamples must be an integer >= 2, got {resamples!r}")
        x, y = self._columns(per_batch)
        n = x.size
        if n < 2:
            return None
        rng = np.random.default_rng(seed)
        block = max(1, _BLOCK_ENTRIES // n)
        stats = []
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for start in range(0, resamples, block):
                index = rng.integers(0, n, size=(min(block, resamples - start), n))
                stats.append(self._apply(x[index], None if y is None else y[index]))
        values = np.concatenate(stats)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{self._describe()}: a bootstrap resample gave a non-finite value"
                             + (" (give the ratio a floor)" if self.kind == "ratio" else ""))
        return self._finite(float(values.std(ddof=1)), "bootstrap standard error")

    def as_spec(self) -> dict[str, Any]:
        """The spec table that :func:`parse_reducer` turns back into this reducer."""
        spec: dict[str, Any] = {"name": self.name, "reduce": self.kind, "of": self.of}
        spec.update({key: getattr(self, key) for key in _PARAM_KEYS if getattr(self, key) is not None})
        return spec

    # -- internals -----------------------------------------------------------------------------

    def _describe(self) -> str:
        return f"metric {self.name!r} ({self.kind} of {self.of!r})"

    def _finite(self, value: float, what: str) -> float:
        if not math.isfinite(value):
            raise ValueError(f"{self._describe()}: {what} is {value}")
        return value

    def _columns(self, per_batch: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray | None]:
        """The values of ``of`` (and ``per``) over the batches that report all of :attr:`reads`."""
        batches = _batch_list(per_batch)
        rows = [(index, batch) for index, batch in enumerate(batches) if all(key in batch for key in self.reads)]
        if not rows:
            reported = sorted({key for batch in batches for key in batch})
            absent = [key for key in self.reads if key not in reported]
            what = f"reports {', '.join(map(repr, absent))}" if absent else f"reports both {self.of!r} and {self.per!r}"
            raise ConfigError(f"{self._describe()}: no batch {what} (reported: {', '.join(reported) or 'none'})")
        columns = [np.array([_value(batch[key], key, index) for index, batch in rows]) for key in self.reads]
        if self.kind == "geomean":
            bad = np.flatnonzero(columns[0] <= 0)
            if bad.size:
                index = rows[int(bad[0])][0]
                raise ValueError(f"{self._describe()}: a geometric mean needs positive values, "
                                 f"batch {index} has {columns[0][bad[0]]}")
        return columns[0], (columns[1] if len(columns) > 1 else None)

    def _apply(self, x: np.ndarray, y: np.ndarray | None) -> Any:  # an array, or a numpy scalar for 1-D input
        """The reduction along the last axis (1-D input: one value; 2-D: one per bootstrap row)."""
        kind = self.kind
        if kind == "mean":
            return x.mean(axis=-1)
        if kind == "median":
            return np.median(x, axis=-1)
        if kind == "quantile":
            assert self.q is not None
            return np.quantile(x, self.q, axis=-1)
        if kind == "cvar":
            ordered = np.sort(x, axis=-1)
            if self.higher_is_worse:
                ordered = ordered[..., ::-1]
            assert self.alpha is not None
            return ordered @ _tail_weights(x.shape[-1], self.alpha)
        if kind in ("rate_above", "rate_below"):
            return _indicator(self, x).mean(axis=-1)
        if kind == "ratio":
            assert y is not None
            denominator = y.sum(axis=-1)
            if self.floor is not None:
                denominator = np.maximum(self.floor, denominator)
            elif x.ndim == 1 and denominator == 0:
                raise ValueError(f"{self._describe()}: the sum of {self.per!r} is 0; give the ratio a floor "
                                 f"(e.g. floor = 1 for kills per life)")
            return x.sum(axis=-1) / denominator
        if kind == "geomean":
            return np.exp(np.log(x).mean(axis=-1))
        if kind == "sum":
            return x.sum(axis=-1)
        if kind == "max":
            return x.max(axis=-1)
        return x.min(axis=-1)


def _indicator(reducer: Reducer, x: np.ndarray) -> np.ndarray:
    hit = x > reducer.threshold if reducer.kind == "rate_above" else x < reducer.threshold
    return hit.astype(float)


def _tail_weights(n: int, alpha: float) -> np.ndarray:
    """Weights on values sorted worst first: the worst ``alpha * n`` get weight 1 (the boundary
    one the fractional remainder), normalised to sum to 1."""
    tail = alpha * n
    return np.clip(tail - np.arange(n), 0.0, 1.0) / tail


def _batch_list(per_batch: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    if isinstance(per_batch, Mapping):  # a single batch passed by mistake would iterate its keys
        raise TypeError("expected a sequence of per-batch metric mappings, got one mapping")
    batches = per_batch if isinstance(per_batch, Sequence) else list(per_batch)
    if len(batches) == 0:
        raise ValueError("no batches to reduce")
    return batches


def _value(value: Any, key: str, index: int) -> float:
    if isinstance(value, (str, bytes)):
        raise TypeError(f"metric {key!r} on batch {index} is {value!r}, not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"metric {key!r} on batch {index} is {type(value).__name__} {value!r}, not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"metric {key!r} is {number} on batch {index}")
    return number


def parse_reducer(spec: Mapping[str, Any], *, where: str = "") -> Reducer:
    """Build a :class:`Reducer` from a spec table (keys: :data:`SPEC_KEYS`).

    Every problem is a :class:`ConfigError` that names the key: an unknown key (with a
    suggestion), a missing ``name`` / ``reduce`` / ``of``, an unknown reduce kind (listing the
    known ones), a parameter the kind does not take or lacks, a value of the wrong type or out
    of range. ``where`` (e.g. ``"doom.reducers[2]"``) prefixes the message.
    """
    label = where or (f"reducer {spec['name']!r}" if isinstance(spec, Mapping) and isinstance(spec.get("name"), str)
                      else "reducer")
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{label} must be a table like {{name = ..., reduce = ..., of = ...}}, "
                          f"got {type(spec).__name__} {spec!r}")
    for key in spec:
        if key not in SPEC_KEYS:
            raise ConfigError(f"{label}: unknown key {key!r}{_did_you_mean(str(key), SPEC_KEYS)} "
                              f"(known keys: {', '.join(SPEC_KEYS)})")
    for key in ("name", "reduce", "of"):
        if key not in spec:
            raise ConfigError(f"{label}: missing key {key!r}")
    fields_ = {("kind" if key == "reduce" else key): value for key, value in spec.items()}
    try:
        return Reducer(**fields_)
    except ConfigError as error:
        if where:
            raise ConfigError(f"{where}: {error}") from None
        raise


def parse_reducers(specs: Iterable[Mapping[str, Any]], *, where: str = "reducers") -> tuple[Reducer, ...]:
    """Parse a list of spec tables (``where[i]`` names each in errors); names must be unique."""
    if isinstance(specs, (Mapping, str, bytes)):
        raise ConfigError(f"{where} must be a list of tables, got {type(specs).__name__}")
    reducers = tuple(parse_reducer(spec, where=f"{where}[{index}]") for index, spec in enumerate(specs))
    _check_unique(reducers, where)
    return reducers


def _as_reducers(reducers: Iterable[Reducer | Mapping[str, Any]]) -> tuple[Reducer, ...]:
    parsed = tuple(r if isinstance(r, Reducer) else parse_reducer(r, where=f"reducers[{i}]")
                   for i, r in enumerate(reducers))
    _check_unique(parsed, "reducers")
    return parsed


def _check_unique(reducers: Sequence[Reducer], where: str) -> None:
    seen: set[str] = set()
    for reducer in reducers:
        if reducer.name in seen:
            raise ConfigError(f"{where}: two reducers are named {reducer.name!r} (key 'name' must be unique)")
        seen.add(reducer.name)


def reduce_metrics(per_batch: Sequence[Mapping[str, Any]],
                   reducers: Iterable[Reducer | Mapping[str, Any]]) -> dict[str, float]:
    """``{reducer.name: reduced value}`` in the reducers' order (specs are parsed on the way).

    Raises ValueError for no batches or a non-finite value (naming the metric), ConfigError for
    a metric no batch reports or duplicate names.
    """
    batches = _batch_list(per_batch)
    return {reducer.name: reducer.reduce(batches) for reducer in _as_reducers(reducers)}


def standard_errors(per_batch: Sequence[Mapping[str, Any]], reducers: Iterable[Reducer | Mapping[str, Any]], *,
                    resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> dict[str, float | None]:
    """``{reducer.name: standard error}`` (see :meth:`Reducer.standard_error`); a value is
    ``None`` where the reducer reads fewer than two batches."""
    batches = _batch_list(per_batch)
    return {r.name: r.standard_error(batches, resamples=resamples, seed=seed) for r in _as_reducers(reducers)}


def bootstrap_se(per_batch: Sequence[Mapping[str, Any]], reducer: Reducer | Mapping[str, Any], *,
                 resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> float | None:
    """The seeded bootstrap standard error of any reducer (see :meth:`Reducer.bootstrap_se`)."""
    (parsed,) = _as_reducers([reducer])
    return parsed.bootstrap_se(per_batch, resamples=resamples, seed=seed)


# ----------------------------------------------------------------------------------------------
# loss


def weighted_sum(metrics: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """``sum(weight * metrics[name])`` over ``weights``: the loss from ``[objective]`` weights.

    A weighted metric that is not in ``metrics`` is a ConfigError naming it and listing the
    available ones, as is a non-numeric weight or no weights at all; a non-finite metric or
    result is a ValueError naming the metric.
    """
    available = ", ".join(metrics) or "none"
    if not weights:
        raise ConfigError(f"objective: no metric has a weight (available: {available})")
    missing = [name for name in weights if name not in metrics]
    if missing:
        raise ConfigError(f"objective weights name metric(s) not reported: {', '.join(missing)} "
                          f"(available: {available})")
    terms = []
    for name, weight in weights.items():
        weight = _check_number("objective", name, weight)
        value = float(metrics[name])
        if not math.isfinite(value):
            raise ValueError(f"metric {name!r} is {value}")
        terms.append(weight * value)
    total = math.fsum(terms)
    if not math.isfinite(total):
        raise ValueError(f"weighted sum of {', '.join(weights)} is {total}")
    return total


# ----------------------------------------------------------------------------------------------
# constraints


@dataclass(frozen=True)
class Bound:
    """A constraint's bound: ``value`` itself (``relative="absolute"``), or relative to the
    baseline's value of the metric: ``baseline + value`` (``"offset"``) or ``baseline * value``
    (``"factor"``)."""

    value: float = 0.0
    relative: Literal["absolute", "offset", "factor"] = "absolute"

    def __post_init__(self) -> None:
        if self.relative not in ("absolute", "offset", "factor"):
            raise ConfigError(f"bound: relative must be absolute, offset or factor, got {self.relative!r}")
        object.__setattr__(self, "value", _check_number("bound", "value", self.value))

    @property
    def needs_baseline(self) -> bool:
        return self.relative != "absolute"

    def resolve(self, baseline_value: float | None = None) -> float:
        """The bound as a number (``baseline_value`` is needed when relative)."""
        if not self.needs_baseline:
            return self.value
        if baseline_value is None:
            raise ValueError(f"bound {self} is relative to the baseline: pass the baseline's value")
        baseline = float(baseline_value)
        if not math.isfinite(baseline):
            raise ValueError(f"bound {self}: the baseline's value is {baseline}")
        return baseline + self.value if self.relative == "offset" else baseline * self.value

    def __str__(self) -> str:
        if self.relative == "absolute":
            return repr(self.value)
        if self.relative == "factor":
            return f"baseline * {self.value!r}"
        if self.value == 0.0:
            return "baseline"
        return f"baseline {'-' if self.value < 0 else '+'} {abs(self.value)!r}"


@dataclass(frozen=True)
class Constraint:
    """``metric op bound`` with ``op`` ``">="`` or ``"<="``; ``bound`` is a number, a
    :class:`Bound`, or a string such as ``"baseline - 0.01"`` (parsed like
    :func:`parse_constraint`'s right-hand side)."""

    metric: str
    op: Op
    bound: Bound = field(default_factory=Bound)

    def __post_init__(self) -> None:
        _check_text("constraint", "metric", self.metric)
        if self.op not in (">=", "<="):
            raise ConfigError(f"constraint on {self.metric!r}: op must be '>=' or '<=', got {self.op!r}")
        bound: Any = self.bound
        if isinstance(bound, str):
            bound = _parse_bound(bound, f"constraint on {self.metric!r}")
        elif not isinstance(bound, Bound):
            bound = Bound(_check_number(f"constraint on {self.metric!r}", "bound", bound))
        object.__setattr__(self, "bound", bound)

    def violation(self, value: float, baseline_value: float | None = None) -> float:
        """How far ``value`` is on the wrong side of the bound: 0 when satisfied, > 0 when
        violated. A NaN value, or an infinite one on the wrong side, gives
        :data:`UNMEASURED_VIOLATION`. ``baseline_value`` resolves a baseline-relative bound."""
        bound = self.bound.resolve(baseline_value)
        value = float(value)
        excess = bound - value if self.op == ">=" else value - bound
        if math.isnan(excess) or excess == math.inf:
            return UNMEASURED_VIOLATION
        return max(0.0, excess)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound}"


_NUMBER = r"[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?"
_CONSTRAINT = re.compile(r"\s*([A-Za-z_][\w.]*)\s*(>=|<=|==|=|>|<)\s*(.*?)\s*")
_RELATIVE = re.compile(rf"baseline\s*(?:([-+*])\s*({_NUMBER}))?")
_BOUND_FORMS = "a number, 'baseline', 'baseline + N', 'baseline - N' or 'baseline * N'"


def parse_constraint(text: str, *, where: str = "") -> Constraint:
    """Parse ``"metric >= bound"`` or ``"metric <= bound"``, the bound being a number,
    ``baseline``, ``baseline + N``, ``baseline - N`` or ``baseline * N`` (the baseline's value
    of the same metric). Errors are ConfigErrors naming the part at fault."""
    label = where or "constraint"
    if not isinstance(text, str):
        raise ConfigError(f"{label} must be a string like 'pass_rate >= baseline - 0.01', got {text!r}")
    match = _CONSTRAINT.fullmatch(text)
    if match is None:
        raise ConfigError(f"{label} {text!r}: expected 'metric >= bound' or 'metric <= bound'")
    metric, op, bound = match.groups()
    if op not in (">=", "<="):
        raise ConfigError(f"{label} {text!r}: operator {op!r} is not supported, use '>=' or '<='")
    return Constraint(metric, op, _parse_bound(bound, f"{label} {text!r}"))  # type: ignore[arg-type]


def _parse_bound(text: str, label: str) -> Bound:
    text = text.strip()
    match = _RELATIVE.fullmatch(text)
    if match is not None:
        sign, number = match.groups()
        if sign is None:
            return Bound(0.0, "offset")
        value = float(number)
        if sign == "*":
            return Bound(value, "factor")
        return Bound(value if sign == "+" else -value, "offset")
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{label}: bound {text!r} must be {_BOUND_FORMS}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{label}: bound must be finite, got {text!r}")
    return Bound(value)


def parse_constraints(items: Iterable[str], *, where: str = "constraints") -> tuple[Constraint, ...]:
    """Parse a list of constraint strings; ``where[i]`` names each in errors."""
    if isinstance(items, (str, bytes, Mapping)):
        raise ConfigError(f"{where} must be a list of strings like 'pass_rate >= baseline - 0.01'")
    return tuple(parse_constraint(item, where=f"{where}[{index}]") for index, item in enumerate(items))


def constraint_violations(metrics: Mapping[str, float], constraints: Iterable[Constraint],
                          baseline: Mapping[str, float] | None = None) -> list[float]:
    """The violation of each constraint (for :class:`retrofit.objective.Aggregate.violations`).

    A constrained metric missing from ``metrics`` (or, for a baseline-relative bound, from
    ``baseline``) is a ConfigError naming it and listing the available ones.
    """
    violations = []
    for constraint in constraints:
        if constraint.metric not in metrics:
            raise ConfigError(f"constraint {str(constraint)!r}: metric {constraint.metric!r} is not reported "
                              f"(available: {', '.join(metrics) or 'none'})")
        reference = None
        if constraint.bound.needs_baseline:
            if baseline is None or constraint.metric not in baseline:
                raise ConfigError(f"constraint {str(constraint)!r} is relative to the baseline, which does not "
                                  f"report {constraint.metric!r}")
            reference = baseline[constraint.metric]
        violations.append(constraint.violation(metrics[constraint.metric], reference))
    return violations


# ----------------------------------------------------------------------------------------------
# several objectives


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices (ascending) of the non-dominated points, every coordinate minimised.

    ``a`` dominates ``b`` when ``a <= b`` everywhere and ``a < b`` somewhere; so duplicates
    do not dominate each other and are all kept. NaN/inf coordinates or points of different
    lengths raise ValueError; no points give ``[]``.
    """
    array = _points(points)
    if array.shape[0] == 0:
        return []
    # O(n^2 d) memory and time: fine for the hundreds of candidates of a run
    no_worse = (array[:, None, :] <= array[None, :, :]).all(axis=-1)  # [j, i]: j <= i everywhere
    better = (array[:, None, :] < array[None, :, :]).any(axis=-1)
    dominated = (no_worse & better).any(axis=0)
    return [int(i) for i in np.flatnonzero(~dominated)]


def pick_by_weights(points: Sequence[Sequence[float]], weights: Sequence[float]) -> int:
    """Index of the point with the lowest ``sum(weights * point)`` (minimisation; the first on
    ties). Weights must be finite, non-negative and not all zero, so the pick lies on the
    Pareto front (with positive weights, strictly non-dominated)."""
    array = _points(points)
    if array.shape[0] == 0:
        raise ValueError("no points to pick from")
    w = np.asarray(weights, dtype=float)
    if w.shape != (array.shape[1],):
        raise ValueError(f"{w.size} weights for points of {array.shape[1]} objectives")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {list(w)}")
    return int(np.argmin(array @ w))


def _points(points: Sequence[Sequence[float]]) -> np.ndarray:
    rows = [list(point) for point in points]
    if not rows:
        return np.zeros((0, 0))
    if len({len(row) for row in rows}) != 1 or not rows[0]:
        raise ValueError("every point needs the same, non-zero number of objectives")
    array = np.asarray(rows, dtype=float)
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad.size:
        raise ValueError(f"point {int(bad[0])} has a non-finite objective: {rows[int(bad[0])]}")
    return array


# ----------------------------------------------------------------------------------------------
# checks shared by the specs


def _check_text(label: str, key: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{label}: key {key!r} must be a non-empty string (a metric name), got {value!r}")


def _check_number(label: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{label}: key {key!r} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{label}: key {key!r} must be finite, got {number}")
    return number


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
