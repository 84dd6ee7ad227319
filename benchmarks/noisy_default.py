"""Does retrofit's noise-aware default beat NGOpt's default on a noisy retrofit?

Problem: :class:`retrofit.nn.synthetic.RescaleProblem` with noisy targets (additive Gaussian
noise, fixed per batch), many small train batches, and ``run.batches_per_evaluation`` drawing
a few of them per evaluation: two evaluations of one candidate disagree, as episodes or
mini-batches do. Every method runs through the engine (same budget, seeds, common random
numbers per round of ``round_size`` candidates, validation selection among the top 3) and
differs only in the optimiser (and re-evaluations where named). Each run's chosen candidate
is scored without noise on fresh held-out data (:meth:`RescaleProblem.clean_loss`) and by its
RMS distance (log units) to the planted optimum.

Methods:

* ``retrofit auto``: ``optimizer = "auto"``, which picks the noise-aware default (TBPSA).
* ``NGOpt (noise declared)``: ``--optimizer NGOpt``; the engine declares the noise to it
  (``parametrization.function.deterministic = False``), as it does for every noisy run.
* ``NGOpt (noise not declared)``: the same with the declaration left out, as a user calling
  nevergrad directly on a noisy function usually does.
* ``--sweep`` adds alternatives, with and without ``reevaluations``.

Run: ``python benchmarks/noisy_default.py`` (about 1-2 minutes on 2 cores; ``--sweep``
adds a few minutes) or ``--quick``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from typing import Any

import numpy as np
import torch
from retrofit.engine import Run
from retrofit.nn.synthetic import RescaleProblem

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from toolkit_recovery import run_retrofit

#: the noisy problem: label noise 0.1 (the clean loss at the optimum is 0, the noisy one ~0.13),
#: 64 train batches of 32 samples, one drawn per evaluation.
PROBLEM = {"spread": 0.25, "noise": 0.1, "samples": 32, "train_batches": 64, "validation_batches": 16}
SETTINGS = {"batches_per_evaluation": 1}


class UndeclaredNoiseRun(Run):
    """The engine, except that the optimiser is not told the objective is noisy."""

    def _build_optimizer(self) -> None:
        noisy, self.noisy = self.noisy, False
        try:
            super()._build_optimizer()
        finally:
            self.noisy = noisy


def run(problem: RescaleProblem, optimizer: str, budget: int, seed: int, run_class: type[Run] = Run,
        **settings: Any) -> dict[str, Any]:
    result = run_retrofit(problem, optimizer, budget, seed, run_class=run_class, **{**SETTINGS, **settings})
    values = result["values"]
    return {"clean": problem.clean_loss(values), "distance": problem.distance(values), "used": result["used"]}


MAIN = {
    "retrofit auto": {"optimizer": "auto"},
    "NGOpt (noise declared)": {"optimizer": "NGOpt"},
    "NGOpt (noise not declared)": {"optimizer": "NGOpt", "run_class": UndeclaredNoiseRun},
}
SWEEP = {
    "auto + 2 re-evaluations": {"optimizer": "auto", "reevaluations": 2},
    "NGOpt (declared) + 2 re-evaluations": {"optimizer": "NGOpt", "reevaluations": 2},
    "CMA": {"optimizer": "CMA"},
    "CMA + 2 re-evaluations": {"optimizer": "CMA", "reevaluations": 2},
    "DiagonalCMA": {"optimizer": "DiagonalCMA"},
    "NaiveTBPSA": {"optimizer": "NaiveTBPSA"},
    "OptimisticNoisyOnePlusOne": {"optimizer": "OptimisticNoisyOnePlusOne"},
    "NoisyDE": {"optimizer": "NoisyDE"},
    "TwoPointsDE": {"optimizer": "TwoPointsDE"},
}


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def table(rows: list[dict[str, Any]], reference: str) -> str:
    lines = ["| method | budget | clean held-out loss | distance to optimum | loss ratio vs auto | wins vs auto | picked |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for budget in sorted({r["budget"] for r in rows}):
        ref = {r["seed"]: r["clean"] for r in rows if r["budget"] == budget and r["method"] == reference}
        ref_mean = float(np.mean(list(ref.values())))
        for name in dict.fromkeys(r["method"] for r in rows):
            mine = [r for r in rows if r["budget"] == budget and r["method"] == name]
            loss = [r["clean"] for r in mine]
            wins = sum(1 for r in mine if r["clean"] < ref[r["seed"]])
            used = ", ".join(sorted({r["used"] for r in mine}))
            lines.append(f"| {name} | {budget} | {mean_std(loss)} | {mean_std([r['distance'] for r in mine])} | "
                         f"{np.mean(loss) / ref_mean:.2f} | {wins}/{len(mine)} | {used} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="budget 150, 2 seeds, main methods only")
    parser.add_argument("--sweep", action="store_true", help="also run the alternatives")
    parser.add_argument("--budgets", type=int, nargs="+", default=[300, 1000])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--spread", type=float, default=PROBLEM["spread"], help="log-scale std of the planted gains")
    args = parser.parse_args(argv)
    budgets, seeds = ([150], 2) if args.quick else (args.budgets, args.seeds)
    torch.set_num_threads(1)  # tiny model: extra intra-op threads only cost here
    warnings.filterwarnings("ignore")

    spec = {**PROBLEM, "spread": args.spread}
    problem = RescaleProblem(**spec)
    print(f"problem: {spec}, run settings {SETTINGS}; baseline clean loss "
          f"{problem.clean_loss(np.zeros(8)):.3f}, distance {problem.distance(np.zeros(8)):.3f}; "
          f"budgets {budgets}, seeds 0..{seeds - 1}", flush=True)
    methods = {**MAIN, **(SWEEP if args.sweep and not args.quick else {})}
    rows = []
    started = time.perf_counter()
    for budget in budgets:
        for name, spec in methods.items():
            begun = time.perf_counter()
            for seed in range(seeds):
                options = dict(spec)
                result = run(problem, options.pop("optimizer"), budget, seed, **options)
                rows.append({"method": name, "budget": budget, "seed": seed, **result})
            print(f"  {name:36s} budget {budget}: {time.perf_counter() - begun:.0f} s", flush=True)
    print(f"\n{table(rows, 'retrofit auto')}\n\nwall {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # SciPy-backed optimisers NGOpt may pick keep a thread that can block exit
