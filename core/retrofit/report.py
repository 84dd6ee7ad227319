"""``retrofit report``: a self-contained HTML page of one run (no network needed to view it)."""

from __future__ import annotations

import collections
import html
from pathlib import Path
from typing import Any

from retrofit.errors import UsageError
from retrofit.records import HISTORY, VALIDATION, RunRecord

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}
.status{font-weight:bold}"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return html.escape("-" if value is None else str(value))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render(record: RunRecord) -> str:
    """The report's HTML for the run in ``record``."""
    summary = record.read_summary()
    history = record.read_lines(HISTORY)
    validation = record.read_lines(VALIDATION)
    if summary is None and not history:
        raise UsageError(f"{record.path} has no results yet")
    parts = [f"<!doctype html><meta charset='utf-8'><title>retrofit run {html.escape(record.path.name)}</title>",
             f"<style>{_STYLE}</style><h1>retrofit run {html.escape(record.path.name)}</h1>"]
    if summary:
        status = summary["status"]
        note = {"running": " (the run is still going or was killed: figures so far)",
                "interrupted": " (interrupted: resume it with --resume)"}.get(status, "")
        parts.append(f"<p class='status'>status: {html.escape(status)}{html.escape(note)}</p>")
        parts.append(f"<p>domain {html.escape(summary['domain'])}, optimizer {html.escape(summary['optimizer']['used'])}"
                     f" ({html.escape(' -> '.join(summary['optimizer']['chain']))}), {summary['evaluations']} of "
                     f"{summary['budget']} evaluations, {summary['failed_evaluations']} failed, "
                     f"{summary['wall_seconds']:.1f} s wall on {summary['workers']} {summary['executor']} worker(s)</p>")
        rows = []
        cells = [summary[w][s] for w in ("baseline", "best") for s in ("train", "validation")]
        names = sorted({n for c in cells if c for n in c["metrics"]})
        for name in ["loss", *names]:
            rows.append([name, *((c["loss"] if name == "loss" else c["metrics"].get(name)) if c else None
                                 for c in cells)])
        parts.append("<h2>Baseline vs chosen result</h2>")
        parts.append(_table(["figure", "baseline train", "baseline validation", "best train", "best validation"], rows))
    if summary and summary.get("checkpoints"):
        parts.append("<h2>Train vs validation over the run</h2><p>A widening gap between the chosen candidate's "
                     "train and validation loss is overfitting to the train split.</p>")
        parts.append(_table(["evaluations", "best train loss", "best validation loss", "chosen", "chosen train",
                             "chosen validation", "gap"],
                            [[c["evaluations"], c["best_train_loss"], c["best_validation_loss"], c["chosen"],
                              c["chosen_train_loss"], c["chosen_validation_loss"],
                              None if c["chosen_validation_loss"] is None or c["chosen_train_loss"] is None
                              else c["chosen_validation_loss"] - c["chosen_train_loss"]]
                             for c in summary["checkpoints"]]))
    if summary and summary.get("constraints"):
        parts.append("<p>constraints: " + html.escape(", ".join(summary["constraints"])) + "</p>")
    if summary and summary.get("pareto"):
        parts.append("<h2>Pareto front (train)</h2>" + _table(
            ["candidate", "objectives"], [[p["id"], ", ".join(f"{v:.4g}" for v in p["objectives"])]
                                          for p in summary["pareto"]]))
    failures = collections.Counter(entry["error"] for entry in history if entry["error"])
    if failures:
        parts.append("<h2>Failures by reason</h2>" + _table(["reason", "count"], [[r, n] for r, n in failures.items()]))
    if validation:
        parts.append("<h2>Validation re-scores</h2>" + _table(
            ["candidate", "loss", "error"], [[v["id"], v["loss"], v["error"]] for v in validation]))
    best = float("inf")
    rows = []
    for entry in history:
        if entry["loss"] is not None:
            best = min(best, entry["loss"])
        rows.append([entry["id"], entry["loss"], best if best < float("inf") else None, entry["seconds"],
                     entry["worker"], entry["error"]])
    parts.append("<h2>Evaluations</h2>" + _table(["candidate", "train loss", "best so far", "seconds", "worker",
                                                   "error"], rows))
    return "\n".join(parts) + "\n"


def write_report(run_dir: Path, output: Path | None = None) -> Path:
    """Render the report of ``run_dir`` to ``output`` (default ``run_dir/report.html``)."""
    record = RunRecord.open(run_dir)
    output = output or record.path / "report.html"
    output.write_text(render(record), encoding="utf-8")
    return output
