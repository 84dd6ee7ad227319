"""Per-sample overhead of `retrofit codegen check`'s sandbox, side by side with two baselines.

The same samples (HumanEval's canonical solutions, trusted code) are checked three ways:
in-process ``exec`` (no isolation at all: the floor), a bare ``subprocess.run([python, -c,
code])`` per sample (a fresh interpreter, no limits), and the judge (warm zygote, a forked,
contained process per sample). Prints a Markdown table for docs/codegen.md.

    python benchmarks/codegen_check.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from retrofit_codegen.humaneval import load
from retrofit_codegen.judge import Judge


def source(problem, completion: str) -> str:
    return f"{problem.prompt}{completion}\n{problem.test}\ncheck({problem.entry_point})\n"


def in_process(items) -> float:
    started = time.perf_counter()
    for problem, completion in items:
        exec(source(problem, completion), {"__name__": "__bench__"})  # noqa: S102 (trusted canonical code)
    return time.perf_counter() - started


def bare_subprocess(items) -> float:
    started = time.perf_counter()
    for problem, completion in items:
        done = subprocess.run([sys.executable, "-c", source(problem, completion)], capture_output=True, check=False)
        assert done.returncode == 0, done.stderr
    return time.perf_counter() - started


def sandboxed(items) -> tuple[float, float]:
    """(seconds including the zygote's start, seconds of a second pass with fresh verdicts)."""
    started = time.perf_counter()
    with Judge(repeats=0) as judge:
        assert all(r.status == "passed" for r in judge.judge(items))
        cold = time.perf_counter() - started
        judge._checks.clear()  # re-run every sample, on the warm zygote
        started = time.perf_counter()
        judge.judge(items)
        warm = time.perf_counter() - started
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 samples, 1 round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, median reported")
    args = parser.parse_args()
    problems = load()
    items = [(p, p.reference) for p in (problems[:40] if args.quick else problems)]
    rounds = 1 if args.quick else args.rounds
    measured: dict[str, list[float]] = {"in-process exec": [], "subprocess.run per sample": [],
                                        "sandbox, cold (zygote start included)": [], "sandbox, warm": []}
    for _ in range(rounds):  # interleaved, median: the machine is shared and noisy
        measured["in-process exec"].append(in_process(items))
        measured["subprocess.run per sample"].append(bare_subprocess(items))
        cold, warm = sandboxed(items)
        measured["sandbox, cold (zygote start included)"].append(cold)
        measured["sandbox, warm"].append(warm)
    n = len(items)
    median = {name: statistics.median(values) for name, values in measured.items()}
    floor, bare = median["in-process exec"], median["subprocess.run per sample"]
    print(f"{n} HumanEval canonical solutions, median of {rounds} round(s)\n")
    print("| how | total s | ms / sample | overhead ms / sample (vs exec) | ratio to exec | ratio to subprocess |")
    print("|---|---|---|---|---|---|")
    for name, seconds in median.items():
        print(f"| {name} | {seconds:.2f} | {1000 * seconds / n:.2f} | {1000 * (seconds - floor) / n:.2f} | "
              f"{seconds / floor:.1f}x | {seconds / bare:.2f}x |")


if __name__ == "__main__":
    main()
