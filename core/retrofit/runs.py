"""Reading run directories for people: one run's figures, a list of runs, two runs side by side.

Unlike :class:`retrofit.records.RunRecord`, which the engine uses to resume, nothing here
writes: a run may still be going in another process, so a torn last line is skipped (not
truncated away) and a missing ``summary.json`` is derived from ``history.jsonl`` alone.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrofit.errors import UsageError
from retrofit.records import CHECKPOINTS, CONFIG, HISTORY, REEVALUATIONS, SUMMARY, VALIDATION

# status words of summary.json (engine.py), plus the one for a run that never wrote it
DONE_STATUSES = ("finished", "stopped_early")
NO_SUMMARY = "running"
STATUS_NOTES = {
    "running": "the run is still going, or was killed before it finished: figures so far",
    "interrupted": "interrupted (Ctrl-C): figures so far; resume it with `retrofit <domain> tune --resume`",
    "failed": "the run failed: figures up to the failure",
}
_CORE_SECTIONS = ("run", "objective", "constraints")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete JSON lines of ``path``; a torn last line (being written, or cut by a crash) is skipped."""
    if not path.exists():
        return []
    entries = []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for number, raw in enumerate(lines, start=1):
        try:
            if not raw.endswith("\n"):
                raise ValueError("no newline")
            entries.append(json.loads(raw))
        except ValueError:
            if number == len(lines):
                break
            raise UsageError(f"{path}:{number} is corrupt (not JSON)") from None
    return entries


@dataclass
class RunView:
    """Everything a run directory holds, read once; ``summary`` is derived when the file is missing."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)
    reevaluations: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    has_summary: bool = True
    started: float = 0.0  # when config.toml was written: the run's start

    @property
    def status(self) -> str:
        return str(self.summary.get("status", NO_SUMMARY))

    @property
    def complete(self) -> bool:
        return self.status in DONE_STATUSES

    @property
    def domain(self) -> str:
        return str(self.summary.get("domain", "?"))

    @property
    def status_note(self) -> str:
        """One sentence on what an unfinished status means for the figures ('' when finished)."""
        note = STATUS_NOTES.get(self.status, "")
        if not self.has_summary:
            note = "no summary.json yet: figures built from history.jsonl alone (" + note + ")"
        return note

    def failures(self) -> Counter[str]:
        """Failed train evaluations by reason."""
        return Counter(str(e["error"]) for e in self.history if e.get("error"))

    def figures(self) -> dict[str, Any]:
        """Key figures for ``retrofit runs`` and ``retrofit compare``."""
        summary = self.summary
        baseline = (summary.get("baseline") or {}).get("validation") or {}
        best = (summary.get("best") or {}).get("validation") or {}
        optimizer = summary.get("optimizer") or {}
        return {
            "run": self.path.name, "domain": self.domain, "status": self.status,
            "evaluations": summary.get("evaluations", len(self.history)), "budget": summary.get("budget"),
            "failed": summary.get("failed_evaluations", sum(self.failures().values())),
            "baseline_validation_loss": baseline.get("loss"), "chosen_validation_loss": best.get("loss"),
            "improvement": (summary.get("improvement") or {}).get("validation_loss_relative"),
            "chosen": (summary.get("best") or {}).get("id"),
            "optimizer": optimizer.get("used"), "wall_seconds": summary.get("wall_seconds"),
            "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started)) if self.started else None,
        }


def read_run(path: Path) -> RunView:
    """Read the run directory ``path`` (finished, running, interrupted or failed)."""
    path = Path(path)
    config_file = path / CONFIG
    if not config_file.is_file():
        raise UsageError(f"{path} is not a retrofit run directory (no {CONFIG})")
    try:
        config = tomllib.loads(config_file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"{config_file} is corrupt: {error}") from None
    view = RunView(path=path, config=config, summary={}, history=_read_jsonl(path / HISTORY),
                   validation=_read_jsonl(path / VALIDATION), reevaluations=_read_jsonl(path / REEVALUATIONS),
                   checkpoints=_read_jsonl(path / CHECKPOINTS), started=config_file.stat().st_mtime)
    summary_file = path / SUMMARY
    summary = None
    if summary_file.exists():
        try:
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
        except ValueError:
            raise UsageError(f"{summary_file} is corrupt (not JSON)") from None
    if summary is None:
        view.has_summary = False
        summary = derive_summary(view)
    elif summary.get("status") not in DONE_STATUSES and len(view.history) > summary.get("evaluations", 0):
        # written at the last checkpoint: the history has gone on since
        summary = {**summary, "evaluations": len(view.history),
                   "failed_evaluations": sum(1 for e in view.history if e.get("error"))}
    view.summary = summary
    return view


def config_domain(config: dict[str, Any]) -> str:
    """The domain of a run's config.toml: its one section that is not a core section."""
    names = [name for name in config if name not in _CORE_SECTIONS]
    return names[0] if len(names) == 1 else "?"


def _figures(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {"loss": entry.get("loss"), "loss_se": entry.get("loss_se"), "metrics": entry.get("metrics") or {},
            "standard_errors": entry.get("standard_errors") or {}, "error": entry.get("error")}


def derive_summary(view: RunView) -> dict[str, Any]:
    """The summary's main keys from the history alone, for a run that never wrote summary.json.

    The chosen candidate is the best validation re-score so far, else the best train loss:
    the engine's own rule without its constraints and re-evaluations.
    """
    run = view.config.get("run", {})
    by_id = {e["id"]: e for e in view.history}
    scored = {v["id"]: v for v in view.validation if v.get("error") is None}
    successes = [e for e in view.history if e.get("error") is None and e.get("loss") is not None]
    chosen = None
    candidates = [v for i, v in scored.items() if i in by_id]
    if candidates:
        chosen = by_id[min(candidates, key=lambda v: (v["loss"], v["id"]))["id"]]
    elif successes:
        chosen = min(successes, key=lambda e: (e["loss"], e["id"]))
    baseline_val, chosen_val = scored.get(0), scored.get(chosen["id"]) if chosen else None
    improvement = None
    if baseline_val and chosen_val:
        improvement = (baseline_val["loss"] - chosen_val["loss"]) / max(abs(baseline_val["loss"]), 1e-12)
    seconds = sum(e.get("seconds") or 0.0 for e in [*view.history, *view.validation, *view.reevaluations])
    return {
        "domain": config_domain(view.config), "status": NO_SUMMARY,
        "optimizer": {"requested": run.get("optimizer"), "used": None, "chain": [], "notes": []},
        "budget": run.get("budget"), "evaluations": len(view.history),
        "failed_evaluations": sum(1 for e in view.history if e.get("error")),
        "evaluation_seconds": round(seconds, 3), "workers": run.get("workers"), "executor": run.get("executor"),
        "seed": run.get("seed"), "selection": run.get("selection"),
        "baseline": {"id": 0, "train": _figures(by_id.get(0)), "validation": _figures(baseline_val)},
        "best": {"id": chosen["id"] if chosen else None, "train": _figures(chosen), "validation": _figures(chosen_val),
                 "values": chosen.get("values") if chosen else None},
        "improvement": {"validation_loss_relative": improvement},
        "checkpoints": view.checkpoints,
    }


def list_runs(directory: Path) -> list[RunView]:
    """Every run directory directly under ``directory`` (or ``directory`` itself), oldest first.

    A directory that cannot be read is skipped: one corrupt run must not hide the others.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory")
    candidates = [directory] if (directory / CONFIG).is_file() else sorted(p for p in directory.iterdir() if p.is_dir())
    views = []
    for candidate in candidates:
        if not (candidate / CONFIG).is_file():
            continue
        try:
            views.append(read_run(candidate))
        except UsageError:
            continue
    return sorted(views, key=lambda v: (v.started, v.path.name))


COMPARED = (("domain", "domain"), ("status", "status"), ("optimizer", "optimizer"), ("evaluations", "evaluations"),
            ("budget", "budget"), ("failed", "failed evaluations"), ("chosen", "chosen candidate"),
            ("baseline_validation_loss", "baseline validation loss"),
            ("chosen_validation_loss", "chosen validation loss"), ("improvement", "relative improvement"),
            ("wall_seconds", "wall seconds"), ("started", "started"))


def compare(first: RunView, second: RunView) -> list[tuple[str, Any, Any]]:
    """Rows ``(figure, first, second)``: the key figures, then every validation metric of the chosen result."""
    a, b = first.figures(), second.figures()
    rows: list[tuple[str, Any, Any]] = [(label, a[key], b[key]) for key, label in COMPARED]
    metrics = [((v.summary.get("best") or {}).get("validation") or {}).get("metrics") or {} for v in (first, second)]
    baseline = [((v.summary.get("baseline") or {}).get("validation") or {}).get("metrics") or {}
                for v in (first, second)]
    for name in sorted(set(metrics[0]) | set(metrics[1])):
        rows.append((f"{name} (baseline validation)", baseline[0].get(name), baseline[1].get(name)))
        rows.append((f"{name} (chosen validation)", metrics[0].get(name), metrics[1].get(name)))
    knobs = [{k.get("name"): k.get("size") for k in (v.summary.get("parameters") or {}).get("knobs", [])}
             for v in (first, second)]
    rows.append(("knobs", ", ".join(f"{n} ({s})" for n, s in knobs[0].items()) or None,
                 ", ".join(f"{n} ({s})" for n, s in knobs[1].items()) or None))
    return rows


def format_value(value: Any) -> str:
    """A figure as text: floats to 4 significant digits, ``None`` as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_improvement(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}%"
