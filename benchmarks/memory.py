"""Peak memory of a depth run: main process and workers, against the model's own size and the budget.

Runs the depth demo (builtin TinyMidas, a few demo images) through the full engine with
N = 1 and 2 workers and two budgets, sampling the resident set size (RSS) of this process and
of every worker process every 50 ms (psutil; /proc when it is missing). For each run it
reports the main process's peak, each worker's RSS right after its model was loaded and its
peak, and the sum. Goal: each worker holds one model, so a worker's peak does not depend on N,
and nothing grows with the budget (peak - loaded stays flat from the small to the large budget).

RSS counts shared library pages (torch's, mostly) in every process that maps them, so the sum
over processes overstates what the machine spends; per-worker figures are what to compare.

    python benchmarks/memory.py [--budgets 30,120] [--workers 1,2] [--images 16] [--executor local|dask]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from retrofit import executors
from retrofit.config import resolve
from retrofit.engine import Run
from retrofit.evaluator import Setup
from retrofit.plugins import load
from retrofit.records import RunRecord
from wrapping import ExecutorWrapper  # this script's folder is on sys.path

MB = 1024 * 1024


def rss(pid: int) -> int:
    """Resident set size of one process in bytes (0 once it is gone)."""
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except ImportError:
        try:
            with open(f"/proc/{pid}/statm") as stream:
                return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0
    except Exception:  # noqa: BLE001  (psutil.NoSuchProcess: it exited between listing and reading)
        return 0


def workers_of(pid: int) -> list[int]:
    """Worker processes under ``pid``: multiprocessing spawn children (local pool and dask nanny workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stream:
                parent = int(stream.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as stream:
                command = stream.read()
        except OSError:
            continue
        if parent == pid and b"spawn_main" in command:
            found.append(int(entry))
    return found


class Sampler:
    """Polls RSS of this process and its workers in a thread; keeps peaks per process."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.main_peak = 0
        self.worker_peaks: dict[int, int] = {}
        self.total_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[int, int]:
        workers = {pid: rss(pid) for pid in workers_of(os.getpid())}
        main = rss(os.getpid())
        self.main_peak = max(self.main_peak, main)
        for pid, value in workers.items():
            self.worker_peaks[pid] = max(self.worker_peaks.get(pid, 0), value)
        self.total_peak = max(self.total_peak, main + sum(workers.values()))
        return workers

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Snapshot(ExecutorWrapper):
    """Executor wrapper: records each worker's RSS right after the model is loaded."""

    def __init__(self, inner: executors.Executor, sampler: Sampler) -> None:
        super().__init__(inner)
        self.sampler = sampler
        self.loaded: dict[int, int] = {}

    def start(self) -> Setup:
        setup = self.inner.start()
        self.loaded = self.sampler.sample()
        return setup


def model_bytes(config: Any, plugins: Any) -> int:
    """Parameters and buffers of the network, measured in a throwaway process-local load."""
    from retrofit.evaluator import Evaluator

    net = Evaluator(config, plugins).model.model.net
    return sum(t.numel() * t.element_size() for t in [*net.parameters(), *net.buffers()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="30,120")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--images", type=int, default=16, help="demo images (half of them train)")
    parser.add_argument("--executor", default="local", choices=("local", "dask"))
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    plugins = load()
    domain = plugins.domain("depth")

    def config_for(workers: int, budget: int) -> Any:
        return resolve(domain, None, {"run.executor": args.executor, "run.workers": workers, "run.budget": budget,
                                      "run.validate_every": max(10, budget // 3), "depth.demo_images": args.images})

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for workers in [int(w) for w in args.workers.split(",")]:
            for budget in [int(b) for b in args.budgets.split(",")]:
                config = config_for(workers, budget)
                began = time.perf_counter()
                with Sampler() as sampler:
                    executor = Snapshot(executors.create(config), sampler)
                    record = RunRecord.create(config, Path(scratch) / f"w{workers}b{budget}")
                    summary = Run(config, domain, executor, record).execute()
                assert summary["status"] == "finished", summary["status"]
                loaded = executor.loaded
                peaks = {pid: sampler.worker_peaks[pid] for pid in loaded}  # the workers that ran the evaluations
                rows.append((workers, budget, summary["evaluations"] + summary["rescore_evaluations"],
                             time.perf_counter() - began, sampler.main_peak, loaded, peaks, sampler.total_peak))
        size = model_bytes(config_for(1, 1), plugins)

    print(f"depth demo, builtin model ({size / MB:.2f} MB of parameters and buffers), {args.images} demo images, "
          f"executor {args.executor}; RSS in MB")
    print()
    print("| workers | budget | evaluations | wall s | main peak | worker RSS loaded | worker peak | "
          "worker growth (peak - loaded) | main + workers peak |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for workers, budget, evaluations, wall, main_peak, loaded, peaks, total in rows:
        show = lambda values: " / ".join(f"{v / MB:.0f}" for v in values)
        growth = [peaks[pid] - loaded[pid] for pid in loaded]
        print(f"| {workers} | {budget} | {evaluations} | {wall:.0f} | {main_peak / MB:.0f} | {show(loaded.values())} | "
              f"{show(peaks.values())} | {show(growth)} | {total / MB:.0f} |")
    print()
    # the budget check: per worker peak at the large budget against the small one, same N
    by = {(row[0], row[1]): row for row in rows}
    budgets = [int(b) for b in args.budgets.split(",")]
    print("| workers | worker peak, budget " + " -> ".join(map(str, budgets)) + " | change | goal: flat (< 5 %) |")
    print("|---:|---|---:|---|")
    for workers in [int(w) for w in args.workers.split(",")]:
        small, large = by[(workers, budgets[0])], by[(workers, budgets[-1])]
        a, b = max(small[6].values()), max(large[6].values())
        change = b - a
        verdict = "met" if change < 0.05 * a else f"missed by {100 * change / a - 5:.1f} points"
        print(f"| {workers} | {a / MB:.0f} -> {b / MB:.0f} MB | {change / MB:+.1f} MB ({100 * change / a:+.1f} %) | "
              f"{verdict} |")
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
