"""Knobs: the few parameters of a model that a retrofit optimises.

A knob owns a slice of the flat vector the optimiser searches. The optimiser works in a
*normalised* space: every coordinate starts at 0 with step size 1, and the knob maps it to
its natural value ``identity + sigma * x`` (clipped to its bounds). So candidate 0 (all
zeros) is the unmodified model, first samples stay close to it whatever the knob's scale,
and one ``ng.p.Array`` serves every model (a ``Dict`` of arrays costs nevergrad several
times more per ask/tell).

This module is numpy-only. Knobs that act on torch modules live in :mod:`retrofit.nn`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrofit.errors import PluginError, UsageError

_UNBOUNDED = 1e3  # normalised units, i.e. sigmas


class Knob(abc.ABC):
    """A reparametrisation of part of a model, starting at the identity.

    Subclasses set ``name`` and ``size`` and implement :meth:`identity`, :meth:`apply` and
    :meth:`restore`. ``sigma`` is the natural-unit step of one normalised unit; ``lower`` and
    ``upper`` bound the natural values (``None`` for unbounded).
    """

    name: str
    size: int
    sigma: float = 0.1
    lower: float | None = None
    upper: float | None = None

    @abc.abstractmethod
    def identity(self) -> np.ndarray:
        """Natural values that leave the model unchanged (shape ``(size,)``)."""

    @abc.abstractmethod
    def apply(self, values: np.ndarray) -> None:
        """Set the model to these natural values, in place."""

    @abc.abstractmethod
    def restore(self) -> None:
        """Undo :meth:`apply`: the model's tensors become bit-identical to before."""

    def describe(self) -> dict[str, Any]:
        """A JSON-able description, written to records and delta files."""
        return {"name": self.name, "kind": type(self).__name__, "size": self.size,
                "sigma": self.sigma, "lower": self.lower, "upper": self.upper}


@dataclass(frozen=True)
class ProbeGroup:
    """A candidate set of parameters for the sensitivity probe: a name and its knobs."""

    name: str
    knobs: tuple[Knob, ...]

    @property
    def size(self) -> int:
        return sum(knob.size for knob in self.knobs)


class ArrayKnob(Knob):
    """A knob over a plain numpy array that the model reads (used by simple models and tests).

    ``apply`` writes the values into ``target`` in place; ``restore`` writes back the
    original contents.
    """

    def __init__(self, name: str, target: np.ndarray, *, sigma: float = 0.1,
                 lower: float | None = None, upper: float | None = None) -> None:
        self.name = name
        self.target = target
        self.size = int(target.size)
        self.sigma, self.lower, self.upper = sigma, lower, upper
        self._original = target.copy()

    def identity(self) -> np.ndarray:
        return self._original.reshape(-1).astype(float)

    def apply(self, values: np.ndarray) -> None:
        self.target[...] = np.asarray(values).reshape(self.target.shape)

    def restore(self) -> None:
        self.target[...] = self._original


@dataclass(frozen=True)
class Space:
    """The flat search space of a set of knobs: plain data, cheap to send between processes.

    The engine only needs this; the knobs themselves stay in the processes that hold the model.
    """

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    identity: np.ndarray
    sigma: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    specs: tuple[dict[str, Any], ...]

    @property
    def size(self) -> int:
        return int(self.identity.size)

    def normalised_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of the normalised coordinates (``-inf``/``inf`` where unbounded)."""
        return (self.lower - self.identity) / self.sigma, (self.upper - self.identity) / self.sigma

    def to_natural(self, x: np.ndarray) -> np.ndarray:
        """Map a normalised vector to natural knob values."""
        return np.clip(self.identity + self.sigma * np.asarray(x, dtype=float), self.lower, self.upper)

    def parametrization(self, seed: int | None = None) -> Any:
        """The nevergrad parametrisation of this space: one flat ``ng.p.Array`` of normalised
        coordinates, starting at 0 (the identity) with step 1 (each knob's sigma).

        Bounds clip instead of widening the first samples: with nevergrad's default
        ``full_range_sampling`` DE, PSO or random search would start anywhere in the box,
        far from the pretrained model.
        """
        from retrofit.optimizers import nevergrad

        ng = nevergrad()
        array = ng.p.Array(init=np.zeros(self.size)).set_mutation(sigma=1.0)
        lower, upper = self.normalised_bounds()
        if np.isfinite(lower).any() or np.isfinite(upper).any():
            # optimisers that need a finite box get +-1000 sigmas where a knob is unbounded
            array.set_bounds(lower=np.maximum(lower, -_UNBOUNDED), upper=np.minimum(upper, _UNBOUNDED),
                             method="clipping", full_range_sampling=False)
        array.random_state = np.random.RandomState(seed)
        return array

    def to_normalised(self, natural: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_natural` inside the bounds."""
        return (np.asarray(natural, dtype=float) - self.identity) / self.sigma

    def split(self, natural: np.ndarray) -> dict[str, np.ndarray]:
        """Cut a flat natural vector into one array per knob."""
        natural = np.asarray(natural, dtype=float).reshape(-1)
        if natural.size != self.size:
            raise UsageError(f"expected {self.size} knob values, got {natural.size}")
        bounds = np.cumsum((0, *self.sizes))
        return {name: natural[bounds[i]:bounds[i + 1]] for i, name in enumerate(self.names)}

    def join(self, values: Mapping[str, Sequence[float]]) -> np.ndarray:
        """Inverse of :meth:`split`; every knob must be present with the right size."""
        missing = [name for name in self.names if name not in values]
        unknown = sorted(set(values) - set(self.names))
        if missing or unknown:
            raise UsageError(f"parameter values do not match the model's knobs: missing {missing}, unknown {unknown}")
        parts = []
        for name, size in zip(self.names, self.sizes):
            part = np.asarray(values[name], dtype=float).reshape(-1)
            if part.size != size:
                raise UsageError(f"knob {name}: expected {size} values, got {part.size}")
            parts.append(part)
        return np.concatenate(parts)


class KnobSet:
    """Knobs bound to one model, concatenated into the flat vector the optimiser searches."""

    def __init__(self, knobs: Sequence[Knob]) -> None:
        knobs = list(knobs)
        if not knobs:
            raise UsageError("no parameters exposed: the knob selection matched nothing")
        for knob in knobs:
            if not isinstance(knob, Knob):
                raise PluginError(f"expose_parameters returned {type(knob).__name__}, not a retrofit Knob")
        names = [knob.name for knob in knobs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise PluginError(f"knob names must be unique, repeated: {', '.join(duplicates)}")
        self.knobs = knobs

        def per_element(attribute: str, default: float) -> np.ndarray:
            return np.concatenate([np.full(k.size, default if getattr(k, attribute) is None else float(getattr(k, attribute)))
                                   for k in knobs])

        self.space = Space(
            names=tuple(names),
            sizes=tuple(int(k.size) for k in knobs),
            identity=np.concatenate([np.asarray(k.identity(), dtype=float).reshape(-1) for k in knobs]),
            sigma=per_element("sigma", 0.1),
            lower=per_element("lower", -np.inf),
            upper=per_element("upper", np.inf),
            specs=tuple(k.describe() for k in knobs),
        )

    @contextmanager
    def applied(self, natural: np.ndarray) -> Iterator[None]:
        """Apply natural values for the duration of a ``with`` block, then restore."""
        parts = self.space.split(natural)
        applied: list[Knob] = []
        try:
            for knob in self.knobs:
                applied.append(knob)
                knob.apply(parts[knob.name])
            yield
        finally:
            for knob in reversed(applied):
                knob.restore()
