"""Does retrofit's default recover a planted rescaling, and do its parametrisation choices help?

Problem: :class:`retrofit.nn.synthetic.RescaleProblem` (8 output-channel gains of a small MLP's
last layer, planted log-normal gains, thresholded "bad element rate" loss, known optimum).
Every method gets the same budget of train evaluations, the same seeds, and calls the same
evaluation function (the domain's :class:`~retrofit.evaluator.Evaluator`); all results are
scored on the validation split and by their RMS distance (log units) to the planted optimum.

Methods:

* ``retrofit``: the engine with ``optimizer = "auto"`` (identity start, knob-sized steps in a
  normalised space, bounds by clipping without full-range sampling, validation selection).
* ``retrofit RandomSearch``: nevergrad's RandomSearch in that same normalised space.
* ``retrofit CMA``: the engine with ``--optimizer CMA`` (a candidate default, for comparison).
* ``plain NGOpt [-3,3]``: what a nevergrad user writes without the toolkit:
  ``ng.p.Array(shape=(8,)).set_bounds(-3, 3)`` in natural log-gain units (init 0 is the
  identity, default sigma 1, default bouncing bounds with full-range sampling), NGOpt, and
  ``optimizer.recommend()`` as the result.
* ``plain NGOpt unbounded``: the same without bounds.
* ``plain RandomSearch [-3,3]``: random search over that box.

Two problems: planted spread 0.25 (gains about 0.6-1.6) and 0.5 (about 0.4-2.7).

Run: ``python benchmarks/toolkit_recovery.py`` (about 3 minutes on 2 cores) or ``--quick``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from retrofit.engine import Run
from retrofit.evaluator import Evaluator, Task
from retrofit.executors import SerialExecutor
from retrofit.nn.synthetic import KNOB, RescaleProblem
from retrofit.optimizers import nevergrad
from retrofit.plugins import load
from retrofit.records import RunRecord

BOUND = 3.0  # the log-gain bounds of retrofit's gain knobs, used for the plain box too


def picked(optimizer: Any) -> str:
    """The optimiser and the sub-optimisers it delegates to, down to SciPy/cma methods.

    Follows ``optim`` (NGOpt, chains) and ``_optim`` (MetaModel), which
    ``retrofit.optimizers._chain`` does not."""
    from nevergrad.optimization.base import Optimizer
    from nevergrad.optimization.recaster import RecastOptimizer

    links: list[str] = []
    current = optimizer
    while isinstance(current, Optimizer) and len(links) < 8:
        label = type(current).__name__.lstrip("_")
        if isinstance(current, RecastOptimizer):
            label = f"{getattr(current, 'method', label)}(thread)"
        links.append(label)
        current = getattr(current, "optim", None) or getattr(current, "_optim", None)
    return "/".join(links)


def run_retrofit(problem: RescaleProblem, optimizer: str, budget: int, seed: int, run_class: type[Run] = Run,
                 **settings: Any) -> dict[str, Any]:
    """One engine run (serial executor); the result is the engine's chosen candidate."""
    config = problem.config(budget=budget, seed=seed, optimizer=optimizer, **settings)
    executor = SerialExecutor(config, Evaluator(config, load(extra=[problem])))
    with tempfile.TemporaryDirectory() as tmp:
        run = run_class(config, problem.domain, executor, RunRecord.create(config, Path(tmp) / "run"))
        summary = run.execute()
    assert run.choice is not None
    return {"summary": summary, "values": np.asarray(summary["best"]["values"][KNOB]),
            "validation": summary["best"]["validation"]["loss"], "used": picked(run.choice.optimizer)}


def run_plain(problem: RescaleProblem, optimizer: str, budget: int, seed: int, bounded: bool,
              **overrides: Any) -> dict[str, Any]:
    """A plain nevergrad loop on natural log-gains, calling the same evaluator directly."""
    ng = nevergrad()
    evaluator = problem.evaluator(**overrides)
    channels = evaluator.space.size
    parametrization = ng.p.Array(shape=(channels,))
    if bounded:
        parametrization.set_bounds(-BOUND, BOUND)  # nevergrad's defaults: bouncing, full-range sampling
    parametrization.random_state = np.random.RandomState(seed)
    opt = ng.optimizers.registry[optimizer](parametrization=parametrization, budget=budget, num_workers=1)
    for _ in range(budget):
        candidate = opt.ask()
        outcome = evaluator.evaluate(Task(0, "train", np.clip(candidate.value, -BOUND, BOUND)))
        opt.tell(candidate, outcome.loss if outcome.error is None else 1.0)
    values = np.clip(opt.recommend().value, -BOUND, BOUND)
    validation = evaluator.evaluate(Task(0, "validation", values)).loss
    return {"validation": validation, "values": values, "used": picked(opt)}


def methods() -> dict[str, Callable[..., dict[str, Any]]]:
    return {
        "retrofit (auto)": lambda p, b, s: run_retrofit(p, "auto", b, s),
        "retrofit RandomSearch": lambda p, b, s: run_retrofit(p, "RandomSearch", b, s),
        "retrofit CMA": lambda p, b, s: run_retrofit(p, "CMA", b, s),
        "plain NGOpt [-3,3]": lambda p, b, s: run_plain(p, "NGOpt", b, s, bounded=True),
        "plain NGOpt unbounded": lambda p, b, s: run_plain(p, "NGOpt", b, s, bounded=False),
        "plain RandomSearch [-3,3]": lambda p, b, s: run_plain(p, "RandomSearch", b, s, bounded=True),
    }


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def ratio(value: float, reference: float) -> str:
    if reference == 0:
        return "inf" if value > 0 else "1.00"
    return f"{value / reference:.2f}"


def table(rows: list[dict[str, Any]], reference: str) -> str:
    """Markdown table: per method and budget, mean ± std over seeds and ratios vs ``reference``."""
    lines = ["| method | budget | validation loss | distance to optimum | loss ratio | distance ratio | picked |",
             "|---|---:|---:|---:|---:|---:|---|"]
    budgets = sorted({row["budget"] for row in rows})
    names = list(dict.fromkeys(row["method"] for row in rows))
    for budget in budgets:
        ref = [r for r in rows if r["budget"] == budget and r["method"] == reference]
        ref_loss, ref_dist = np.mean([r["validation"] for r in ref]), np.mean([r["distance"] for r in ref])
        for name in names:
            mine = [r for r in rows if r["budget"] == budget and r["method"] == name]
            loss, dist = [r["validation"] for r in mine], [r["distance"] for r in mine]
            used = ", ".join(sorted({r["used"] for r in mine}))
            lines.append(f"| {name} | {budget} | {mean_std(loss)} | {mean_std(dist)} | "
                         f"{ratio(float(np.mean(loss)), ref_loss)} | {ratio(float(np.mean(dist)), ref_dist)} | {used} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="spread 0.5, budget 100, 2 seeds")
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 300, 600])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--spreads", type=float, nargs="+", default=[0.25, 0.5],
                        help="log-scale std of the planted gains, one problem each")
    args = parser.parse_args(argv)
    budgets, seeds, spreads = ([100], 2, [0.5]) if args.quick else (args.budgets, args.seeds, args.spreads)
    torch.set_num_threads(1)  # tiny model: extra intra-op threads only cost here
    warnings.filterwarnings("ignore")  # scipy/cma chatter from the optimisers NGOpt picks

    started = time.perf_counter()
    for spread in spreads:
        problem = RescaleProblem(spread=spread)
        identity = np.zeros(problem.domain.defaults()["channels"])
        baseline = problem.evaluator().evaluate(Task(0, "validation", identity))
        print(f"\n## planted spread {spread}: {identity.size} log-gains, baseline validation loss "
              f"{baseline.loss:.3f}, distance {problem.distance(identity):.3f}; budgets {budgets}, "
              f"seeds 0..{seeds - 1}", flush=True)
        rows = []
        for budget in budgets:
            for name, method in methods().items():
                begun = time.perf_counter()
                for seed in range(seeds):
                    result = method(problem, budget, seed)
                    rows.append({"method": name, "budget": budget, "seed": seed, "validation": result["validation"],
                                 "distance": problem.distance(result["values"]), "used": result["used"]})
                print(f"  {name:26s} budget {budget}: {time.perf_counter() - begun:.0f} s", flush=True)
        print(f"\n{table(rows, 'retrofit (auto)')}", flush=True)
    print(f"\nwall {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # SciPy-backed optimisers that NGOpt picks keep a thread that can block interpreter exit.
    os._exit(code)
