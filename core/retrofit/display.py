"""What a person sees in the terminal: a progress bar while tuning, tables at the end."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from retrofit.engine import Progress as EngineProgress

console = Console(stderr=True)  # progress and messages on stderr, results on stdout
out = Console()


class ProgressBar:
    """A rich progress bar: evaluations done, best train loss so far, elapsed and ETA."""

    def __init__(self, title: str, enabled: bool | None = None) -> None:
        self.enabled = console.is_terminal if enabled is None else enabled
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("best train loss {task.fields[best]}"), TimeElapsedColumn(),
                            TextColumn("ETA"), TimeRemainingColumn(), console=console, disable=not self.enabled)
        self.task = self.bar.add_task(title, total=None, best="-")
        self.total = 0
        self._reported = 0

    def callbacks(self) -> EngineProgress:
        return EngineProgress(on_start=self.start, on_result=self.result, on_message=self.message)

    def start(self, total: int, done: int) -> None:
        self.total = total
        self.bar.start()
        self.bar.update(self.task, total=total, completed=done)

    def result(self, done: int, best: float | None) -> None:
        best_text = "-" if best is None else f"{best:.6g}"
        self.bar.update(self.task, completed=done, best=best_text)
        if not self.enabled and done - self._reported >= max(1, self.total // 10):
            self._reported = done  # no terminal (CI, log files): one line every 10 %
            print(f"retrofit: {done}/{self.total} evaluations, best train loss {best_text}", file=sys.stderr)

    def message(self, text: str) -> None:
        console.print(f"[dim]{text}[/dim]" if self.enabled else text, highlight=False)

    def stop(self) -> None:
        self.bar.stop()


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def summary_table(summary: Mapping[str, Any]) -> Table:
    """Baseline vs chosen result, on train and on validation, loss and every metric."""
    table = Table(title=f"{summary['domain']}: baseline vs retrofitted (candidate {summary['best']['id']})")
    table.add_column("figure")
    for column in ("baseline train", "best train", "baseline validation", "best validation"):
        table.add_column(column, justify="right")
    cells = {(who, split): summary[who][split] for who in ("baseline", "best") for split in ("train", "validation")}
    metric_names = sorted({name for figures in cells.values() if figures for name in figures.get("metrics", {})})
    order = [("baseline", "train"), ("best", "train"), ("baseline", "validation"), ("best", "validation")]
    table.add_row("loss", *(_fmt(cells[key]["loss"] if cells[key] else None) for key in order))
    for name in metric_names:
        table.add_row(name, *(_fmt(cells[key]["metrics"].get(name) if cells[key] else None) for key in order))
    return table


def print_summary(summary: Mapping[str, Any], run_dir: str) -> None:
    out.print(summary_table(summary))
    relative = summary["improvement"]["validation_loss_relative"]
    optimizer = summary["optimizer"]
    out.print(f"optimizer {optimizer['used']} ({' -> '.join(optimizer['chain'])}), "
              f"{summary['evaluations']} evaluations ({summary['failed_evaluations']} failed) "
              f"in {summary['wall_seconds']:.1f} s on {summary['workers']} {summary['executor']} worker(s)")
    if relative is not None:
        before = summary["baseline"]["validation"]["loss"]
        after = summary["best"]["validation"]["loss"]
        change = f"validation loss {before:.4g} -> {after:.4g}"
        if before > 0:  # a percentage of a loss that can be negative (maximised metrics) would mislead
            change += f", {'reduced' if relative >= 0 else 'increased'} by {abs(relative) * 100:.1f} %"
        out.print(change)
    out.print(f"run directory: {run_dir}")


def metrics_table(title: str, rows: Mapping[str, Mapping[str, Any]]) -> Table:
    """One column per split (or per candidate), one row per figure."""
    table = Table(title=title)
    table.add_column("figure")
    for column in rows:
        table.add_column(column, justify="right")
    names = ["loss", *sorted({n for r in rows.values() for n in r.get("metrics", {})})]
    for name in names:
        table.add_row(name, *(_fmt(r.get("loss") if name == "loss" else r.get("metrics", {}).get(name))
                              for r in rows.values()))
    return table
