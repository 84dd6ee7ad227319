"""Scaling: 1 against 2 workers on a CPU-bound evaluation, with the local pool and with Dask.

The evaluation is the toy domain with many samples per batch and no sleep: drawing the batch
and classifying it is numpy work on one core (BLAS/OpenMP threads pinned to 1), a fixed amount
per evaluation, so a run's work depends only on the budget. Each configuration runs the full
engine (records written) in this process; its loop time excludes starting and closing the
executor, which are reported separately as start-up overhead. Configurations are interleaved
across repeats so that machine noise hits them alike; medians are reported.

Goals: speed-up from 1 to 2 workers >= 1.8x on a 2-core machine; Dask within 10 % of the
local pool. The machine's load average is printed at start and end, and each repeat also
measures the same evaluations in two bare processes against one (no retrofit at all): on a
shared machine other jobs take cores away from the second worker, and that ceiling says how
much speed-up was there to get.

    python benchmarks/scaling.py [--workload cpu|numpy] [--budget 80] [--repeats 3]
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # one core per worker (dask's nanny does the same for its workers)

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from retrofit import executors
from retrofit.config import resolve
from retrofit.engine import Run
from retrofit.evaluator import Evaluator, Setup, Task
from retrofit.records import RunRecord
from retrofit.toy import DOMAIN
from wrapping import ExecutorWrapper  # this script's folder is on sys.path

SPEEDUP_GOAL, DASK_GOAL = 1.8, 1.10


class Timed(ExecutorWrapper):
    """An executor wrapper that times its start and close, to keep them out of the loop time."""

    def __init__(self, inner: executors.Executor) -> None:
        super().__init__(inner)
        self.startup = self.closing = 0.0

    def start(self) -> Setup:
        began = time.perf_counter()
        setup = self.inner.start()
        self.startup = time.perf_counter() - began
        return setup

    def close(self) -> None:
        began = time.perf_counter()
        self.inner.close()
        self.closing = time.perf_counter() - began


def overrides(args: argparse.Namespace, executor: str, workers: int) -> dict[str, Any]:
    return {"run.executor": executor, "run.workers": workers, "run.budget": args.budget, "run.seed": 0,
            "run.optimizer": "CMA", "run.validate_every": args.budget, "run.top_k": 1,
            "toy.samples": args.samples, "toy.spin": args.spin, "toy.delay": 0.0}


def measure(args: argparse.Namespace, executor: str, workers: int, out: Path) -> dict[str, float]:
    config = resolve(DOMAIN, None, overrides(args, executor, workers))
    timed = Timed(executors.create(config))
    began = time.perf_counter()
    summary = Run(config, DOMAIN, timed, RunRecord.create(config, out)).execute()
    wall = time.perf_counter() - began
    assert summary["status"] == "finished" and summary["failed_evaluations"] == 0
    evaluations = summary["evaluations"] + summary["rescore_evaluations"]
    loop = wall - timed.startup - timed.closing
    return {"loop": loop, "rate": evaluations / loop, "startup": timed.startup, "close": timed.closing,
            "evaluations": evaluations}


def _evaluate_many(job: tuple[dict[str, Any], int]) -> float:
    """Seconds for ``count`` bare evaluations in a fresh process (no engine, no executor)."""
    settings, count = job
    evaluator = Evaluator(resolve(DOMAIN, None, settings))
    evaluator.evaluate(Task(0, "train", evaluator.space.identity))  # warm
    began = time.perf_counter()
    for _ in range(count):
        evaluator.evaluate(Task(0, "train", evaluator.space.identity))
    return time.perf_counter() - began


def machine_ceiling(args: argparse.Namespace) -> float:
    """The speed-up two bare processes get over one on the same evaluations, right now: what
    this machine (and whatever else runs on it) allows any executor."""
    import multiprocessing

    settings, count = overrides(args, "serial", 1), args.budget
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        (one,) = pool.map(_evaluate_many, [(settings, 2 * count)], chunksize=1)
        both = pool.map(_evaluate_many, [(settings, count)] * 2, chunksize=1)
    return one / max(both)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=80)
    parser.add_argument("--workload", choices=("cpu", "numpy"), default="cpu",
                        help="cpu: a pure-Python loop in the cache (toy.spin); numpy: large arrays, which on "
                             "this VM are bound by memory bandwidth as much as by the cores")
    parser.add_argument("--samples", type=int, default=None, help="points per toy batch (default 400; 150000 "
                                                                   "with --workload numpy)")
    parser.add_argument("--spin", type=int, default=None, help="loop iterations per batch (default 300000 with "
                                                               "--workload cpu)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.samples is None:
        args.samples = 150_000 if args.workload == "numpy" else 400
    if args.spin is None:
        args.spin = 300_000 if args.workload == "cpu" else 0
    began = time.perf_counter()
    load_start = os.getloadavg()

    # warm up imports (nevergrad, cma) and time one evaluation serially
    config = resolve(DOMAIN, None, overrides(args, "serial", 1))
    evaluator = Evaluator(config)
    evaluator.evaluate(Task(0, "train", evaluator.space.identity))
    one = min(evaluator.evaluate(Task(0, "train", evaluator.space.identity)).seconds for _ in range(3))
    with tempfile.TemporaryDirectory() as scratch:
        Run(config, DOMAIN, executors.create(config), RunRecord.create(config, Path(scratch) / "warm")).execute()

        configurations = [("local", 1), ("local", 2), ("dask", 1), ("dask", 2)]
        results: dict[tuple[str, int], list[dict[str, float]]] = {c: [] for c in configurations}
        ceilings = []
        for repeat in range(args.repeats):
            ceilings.append(machine_ceiling(args))
            order = configurations if repeat % 2 == 0 else configurations[::-1]
            for executor, workers in order:
                out = Path(scratch) / f"{executor}{workers}-{repeat}"
                results[(executor, workers)].append(measure(args, executor, workers, out))

    med = {c: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for c, rs in results.items()}
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in load_start)}; at end: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    print(f"toy domain, {args.workload} workload: {args.samples} samples and {args.spin} spin iterations x 3 batches "
          f"per evaluation ({one * 1000:.0f} ms serial), "
          f"budget {args.budget} (+2 validation re-scores), CMA, {args.repeats} interleaved repeats, medians")
    print()
    # a worker's time per evaluation beyond the evaluation itself: dispatch, result, engine, records
    print("| executor | workers | evaluations/s | ms per evaluation per worker (serial: "
          f"{one * 1000:.0f}) | loop s | start-up s | close s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (executor, workers), m in med.items():
        print(f"| {executor} | {workers} | {m['rate']:.2f} | {workers * 1000 / m['rate']:.0f} | {m['loop']:.2f} | "
              f"{m['startup']:.2f} | {m['close']:.2f} |")
    print()
    print("| ratio | measured | goal | verdict |")
    print("|---|---:|---|---|")

    def row(label: str, value: float, goal: str, met: bool, miss: str) -> None:
        print(f"| {label} | {value:.2f}x | {goal} | {'met' if met else 'missed by ' + miss} |")

    ceiling = statistics.median(ceilings)
    print(f"| bare processes, no retrofit: 2 / 1 (the machine's ceiling now) | {ceiling:.2f}x | - | - |")
    for executor in ("local", "dask"):
        speedup = med[(executor, 2)]["rate"] / med[(executor, 1)]["rate"]
        row(f"{executor}: 2 workers / 1 worker", speedup, f">= {SPEEDUP_GOAL}x", speedup >= SPEEDUP_GOAL,
            f"{SPEEDUP_GOAL - speedup:.2f}x ({100 * (1 - speedup / SPEEDUP_GOAL):.0f} %)")
    for workers in (1, 2):
        ratio = med[("local", workers)]["rate"] / med[("dask", workers)]["rate"]  # > 1: dask slower
        row(f"{workers} worker(s): local rate / dask rate", ratio, f"<= {DASK_GOAL:.2f}x", ratio <= DASK_GOAL,
            f"{100 * (ratio - DASK_GOAL):.0f} points")
    print(f"\nwall {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
