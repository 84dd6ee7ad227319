"""Per-sample overhead of `retrofit codegen check`'s sandbox, side by side with two baselines.

The same samples (HumanEval's canonical solutions, trusted code) are checked three ways:
in-process ``exec`` (no isolation at all: the floor), a bare ``subprocess.run([python, -c,
code])`` per sample (a fresh interpreter, no limits), and the judge (warm zygote, a forked,
contained process per sample). Prints a Markdown table for docs/codegen.md.

``--speed`` instead compares the judge's two speed measures on a few task-family problems
(samples: each problem's slow and fast reference): per sample, the speed-up against the slow
reference by wall-clock time (``Judge(measure="time")``, 5 interleaved repeats) and by
callgrind instruction count (``Judge(measure="instructions")``), each re-measured in ``--rounds``
fresh judges, with its run-to-run spread (max / min over the rounds) and the judge's cost.

    python benchmarks/codegen_check.py [--quick] [--rounds N]
    python benchmarks/codegen_check.py --speed [--rounds N] [--families common,dedupe,...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from retrofit_codegen.families import family_problems
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


def speed_modes(families: list[str], rounds: int) -> None:
    """Print time-mode and instructions-mode speed-ups side by side, with spreads and costs."""
    problems = {p.family: p for p in reversed(family_problems("train", per_family=1))}
    # a trailing comment makes each sample a program of its own (the judge would otherwise reuse the
    # reference's measurement), with the reference's code: the slow sample's ideal speed-up is 1
    items = [(problems[name], f"{body.rstrip()}\n    # the sample\n") for name in families
             for body in (problems[name].reference, problems[name].fast_reference)]
    labels = [f"{name} {kind}" for name in families for kind in ("slow", "fast")]
    speedups: dict[str, list[list[float]]] = {"time": [], "instructions": []}
    counts: list[list[int]] = []
    cost: dict[str, list[float]] = {"time": [], "instructions": []}
    for _ in range(rounds):  # the two modes alternate, so both see the same machine load
        for measure in ("time", "instructions"):
            started = time.perf_counter()
            with Judge(repeats=5 if measure == "time" else 1, measure=measure) as judge:
                results = judge.judge(items)
            cost[measure].append((time.perf_counter() - started) / len(items))
            assert all(r.speedup for r in results), [(r.status, r.detail) for r in results]
            speedups[measure].append([r.speedup for r in results])
            if measure == "instructions":
                counts.append([r.instructions for r in results])
    print(f"{len(items)} samples ({', '.join(families)}: slow and fast reference), {rounds} rounds, "
          "samples are the references (plus a comment), speed-up against the slow reference; "
          "spread = max / min over the rounds\n")
    print("| sample | time: speed-up (median) | time: spread | instructions: speed-up | instructions: spread "
          "| instructions of the call (max - min) |")
    print("|---|---|---|---|---|---|")
    for index, label in enumerate(labels):
        timed = [row[index] for row in speedups["time"]]
        counted = [row[index] for row in speedups["instructions"]]
        count = [row[index] for row in counts]
        print(f"| {label} | {statistics.median(timed):.3g}x | {max(timed) / min(timed):.3f} | "
              f"{statistics.median(counted):.3g}x | {max(counted) / min(counted):.6f} | "
              f"{statistics.median(count):,} ({max(count) - min(count)}) |")
    print(f"\njudge cost per sample (median over rounds, correctness checks included): time "
          f"{statistics.median(cost['time']):.2f} s, instructions {statistics.median(cost['instructions']):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 samples, 1 round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, median reported")
    parser.add_argument("--speed", action="store_true", help="time vs instruction-count speed-ups (needs valgrind)")
    parser.add_argument("--families", default="common,dedupe,prefix_sums,power_mod",
                        help="task families for --speed, comma-separated")
    args = parser.parse_args()
    if args.speed:
        speed_modes(args.families.split(","), args.rounds)
        return
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
