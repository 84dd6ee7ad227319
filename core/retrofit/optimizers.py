"""Build a nevergrad optimiser for a retrofit, steering around its measured traps.

Every trap below was hit on these machines with nevergrad 1.0.12 (see DESIGN.md):

* NGOpt routes small problems to MetaModel, which crashes with numpy >= 2.4
  (``only 0-dimensional arrays can be converted``; upstream issue 1707).
* Diagonal CMA crashes at >= 300 dimensions with more than one worker (upstream issue 1690).
* SciPy-backed optimisers (Cobyla, SQP, Powell, ...; NGOpt picks them for small sequential
  budgets) run in a helper thread: they cannot run in parallel, hang the process at exit
  when stopped early, and cannot be dumped. Retrofit replays history instead of dumping,
  and the CLI ends the process itself, but we still avoid them unless asked by name.
* NGOpt's noisy branch returned the unchanged start on a noisy sphere; TBPSA worked.
* NGOpt's MetaModel, at larger budgets, wraps cma's ``fmin2`` in a helper thread: it samples
  from the box's centre (not the identity) and ignores the seed.

``"auto"`` picks CMA for deterministic objectives and diagonal CMA for noisy ones: seeded,
reproducible, resumable, no helper thread. On retrofit's synthetic problems
(docs/benchmarks.md) CMA recovered a planted rescaling where DE stalled, and diagonal CMA
beat TBPSA and NGOpt under noise. A choice that would hit a trap is replaced by a safe one;
what was requested and what actually runs (down to sub-optimisers) goes to the run record.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrofit.errors import UsageError

AUTO = "auto"
DETERMINISTIC_DEFAULT = "CMA"
NOISY_DEFAULT = "DiagonalCMA"
# Used when the requested optimiser would hit a trap: population-based, parallel, resumable.
SAFE_FALLBACK = "TwoPointsDE"
_METAMODEL_NUMPY = (2, 4)
_DIAGONAL_CMA_DIMS = 300
_THREADED = "(thread)"


@dataclass
class OptimizerChoice:
    """The optimiser built for a run and the story of how it was chosen."""

    optimizer: Any
    requested: str
    used: str
    chain: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {"requested": self.requested, "used": self.used, "chain": self.chain, "notes": self.notes}


def nevergrad() -> Any:
    """Import nevergrad, silencing cma's warning that matplotlib is missing (we never plot
    through cma). nevergrad imports cma lazily, at the first ask, hence a lasting filter."""
    warnings.filterwarnings("ignore", message="Could not import matplotlib.pyplot", category=UserWarning)
    # cma's bound transformation notes far-out samples; the knob bounds already clip them
    warnings.filterwarnings("ignore", message="elements of z2", category=UserWarning)
    import nevergrad as ng

    return ng


def available() -> list[str]:
    """Names accepted by ``--optimizer`` (nevergrad's registry plus ``auto``)."""
    ng = nevergrad()

    return [AUTO, *sorted(ng.optimizers.registry)]


def build(name: str, parametrization: Any, *, budget: int, workers: int, noisy: bool) -> OptimizerChoice:
    """Create the optimiser ``name`` (or the ``auto`` choice) on ``parametrization``."""
    ng = nevergrad()

    notes: list[str] = []
    chosen = name
    if name == AUTO:
        chosen = NOISY_DEFAULT if noisy else DETERMINISTIC_DEFAULT
    elif name not in ng.optimizers.registry:
        close = [n for n in ng.optimizers.registry if n.lower() == name.lower()]
        hint = f" (did you mean {close[0]}?)" if close else " (see `retrofit optimizers`)"
        raise UsageError(f"unknown optimizer {name!r}{hint}")
    dim = parametrization.dimension
    if _numpy_breaks_metamodel() and ("NGOpt" in chosen or "MetaModel" in chosen or "NgIoh" in chosen):
        notes.append(f"{chosen} can route to MetaModel, which crashes with numpy {np.__version__} (nevergrad issue 1707)")
        chosen = SAFE_FALLBACK
    if workers > 1 and dim >= _DIAGONAL_CMA_DIMS and ("Diagonal" in chosen or chosen in ("CMA", "CMAbounded", "NGOpt")):
        notes.append(f"{chosen} may pick diagonal CMA, which crashes at {dim} dims with {workers} workers (nevergrad issue 1690)")
        chosen = SAFE_FALLBACK

    optimizer = _instantiate(ng, chosen, parametrization, budget, workers)
    chain = _chain(optimizer)
    threaded = [link for link in chain if link.endswith(_THREADED)]
    if threaded and name == AUTO:
        notes.append(f"{chosen} picked {threaded[0]}; replaced by {SAFE_FALLBACK} (optimisers in a helper thread "
                     f"ignore the seed and hang when stopped early)")
        chosen = SAFE_FALLBACK
        optimizer = _instantiate(ng, chosen, parametrization, budget, workers)
        chain = _chain(optimizer)
    elif threaded:
        notes.append(f"{chosen} picked {threaded[0]}, which runs in a helper thread: the run may not be reproducible "
                     f"or resumable, and is ended by force at exit")
    return OptimizerChoice(optimizer, requested=name, used=chosen, chain=chain, notes=notes)


def _instantiate(ng: Any, name: str, parametrization: Any, budget: int, workers: int) -> Any:
    try:
        return ng.optimizers.registry[name](parametrization=parametrization, budget=budget, num_workers=workers)
    except ValueError as error:  # e.g. "does not support parallelization"
        raise UsageError(f"optimizer {name}: {error} (try --workers 1 or another --optimizer)") from None


def _chain(optimizer: Any) -> list[str]:
    """Names of the optimiser and the sub-optimisers it delegates to (NGOpt -> CMA -> ...)."""
    from nevergrad.optimization.base import Optimizer
    from nevergrad.optimization.recaster import RecastOptimizer

    links: list[str] = []
    current = optimizer
    while isinstance(current, Optimizer) and len(links) < 8:
        label = type(current).__name__.lstrip("_")
        if isinstance(current, RecastOptimizer):  # SciPy methods, cma's fmin2: run in a helper thread
            label = f"{getattr(current, 'method', label)}{_THREADED}"
        links.append(label)
        # NGOpt-style choosers expose their pick as `optim`, MetaModel keeps it in `_optim`
        current = getattr(current, "optim", None) or getattr(current, "_optim", None)
    return links


def _numpy_breaks_metamodel() -> bool:
    major, minor = (int(part) for part in np.__version__.split(".")[:2])
    return (major, minor) >= _METAMODEL_NUMPY
