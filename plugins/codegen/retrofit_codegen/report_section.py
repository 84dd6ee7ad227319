"""The codegen pack's section of ``retrofit report``: per task (per family for the pack's own
tasks) the held-out pass rate and geometric-mean speed-up of the unmodified and the
retrofitted model, a chart of both, a table per task, and one held-out sample before and after.

It reads what ``retrofit_run_finished`` wrote (``heldout.jsonl``, ``samples.jsonl``); a run
still going or interrupted has neither yet, and the section says so rather than decoding: a
report never runs the model.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrofit import hookimpl

TITLE = "Code generation: held-out tasks"
MODELS = ("unmodified", "retrofitted")
COLOURS = {"unmodified": "#999999", "retrofitted": "#4c72b0"}
MAX_CHART_GROUPS = 30  # more bars than this are unreadable: the chart shows the first ones


@dataclass(frozen=True)
class Tally:
    """One model's verdicts on one group of held-out samples."""

    samples: int
    passed: int
    speedup: float | None  # geometric mean over the timed passed samples; None when none was timed

    @property
    def pass_rate(self) -> float:
        return self.passed / self.samples if self.samples else 0.0


def tally(lines: Iterable[Mapping[str, Any]]) -> Tally:
    """Pass count and geometric-mean speed-up of some ``heldout.jsonl`` lines."""
    lines = list(lines)
    passed = [line for line in lines if line["status"] == "passed"]
    timed = [float(line["speedup"]) for line in passed if line.get("speedup") and line["speedup"] > 0]
    speedup = math.exp(sum(math.log(value) for value in timed) / len(timed)) if timed else None
    return Tally(len(lines), len(passed), speedup)


def grouped(lines: Sequence[Mapping[str, Any]], key: str) -> dict[str, dict[str, Tally]]:
    """group -> model -> tally, groups in order of first appearance; ``key`` is ``"family"``
    or ``"task_id"`` (a line without a family counts as its own task)."""
    groups: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for line in lines:
        name = str(line.get(key) or line["task_id"])
        groups.setdefault(name, {model: [] for model in MODELS})
        if line["model"] in MODELS:
            groups[name][line["model"]].append(line)
    return {name: {model: tally(found) for model, found in models.items()} for name, models in groups.items()}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a file the run wrote (blank lines skipped)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _speed(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}x"


def _rate(tallied: Tally) -> str:
    return f"{tallied.passed}/{tallied.samples} ({100 * tallied.pass_rate:.0f} %)"


def table(groups: Mapping[str, Mapping[str, Tally]], label: str) -> str:
    """One row per group: pass counts and speed-ups of both models, and the speed-up ratio."""
    rows = []
    for name, models in groups.items():
        before, after = models["unmodified"], models["retrofitted"]
        ratio = (after.speedup / before.speedup) if before.speedup and after.speedup else None
        worse = " class='worse'" if after.pass_rate < before.pass_rate else ""
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{_rate(before)}</td><td{worse}>{_rate(after)}</td>"
                    f"<td>{_speed(before.speedup)}</td><td>{_speed(after.speedup)}</td><td>{_speed(ratio)}</td></tr>")
    return (f"<table><tr><th>{html.escape(label)}</th><th>passed, unmodified</th><th>passed, retrofitted</th>"
            f"<th>speed-up, unmodified</th><th>speed-up, retrofitted</th><th>retrofitted / unmodified</th></tr>"
            + "".join(rows) + "</table>")


def chart(groups: Mapping[str, Mapping[str, Tally]], label: str) -> bytes:
    """Geometric-mean speed-up (log scale) and pass / fail counts per group, both models."""
    import numpy as np
    from retrofit.plots import new_figure, png

    names = list(groups)[:MAX_CHART_GROUPS]
    x = np.arange(len(names))
    width = 0.38
    figure = new_figure(max(7.0, 0.55 * len(names) + 2.0), 5.6)
    speed_axes, count_axes = figure.subplots(2, 1, sharex=True)
    for offset, model in ((-width / 2, "unmodified"), (width / 2, "retrofitted")):
        tallies = [groups[name][model] for name in names]
        # a group without a timed correct sample has no speed-up: no bar (1x draws nothing on a log axis)
        speedups = [t.speedup if t.speedup else 1.0 for t in tallies]
        speed_axes.bar(x + offset, speedups, width, color=COLOURS[model], label=model)
        passed = [t.passed for t in tallies]
        failed = [t.samples - t.passed for t in tallies]
        count_axes.bar(x + offset, passed, width, color=COLOURS[model], label=f"{model}: passed")
        count_axes.bar(x + offset, failed, width, bottom=passed, color="white", edgecolor=COLOURS[model],
                       hatch="//", label=f"{model}: failed")
    speed_axes.set_yscale("log")
    speed_axes.axhline(1.0, color="black", linewidth=0.8)
    speed_axes.set_ylabel("speed-up vs slow reference\n(geometric mean, log)")
    speed_axes.legend(frameon=False)
    count_axes.set_ylabel("held-out samples")
    # above the axes: inside, it would cover the bars of full families
    count_axes.legend(frameon=False, ncol=4, fontsize="small", loc="lower center", bbox_to_anchor=(0.5, 1.0))
    count_axes.set_xticks(x, names, rotation=40, ha="right")
    count_axes.set_xlabel(label)
    return png(figure)


def sample_pair(samples: Sequence[Mapping[str, Any]]) -> str:
    """One shown held-out sample, unmodified beside retrofitted: the one whose speed-up grew most
    (a sample that became correct counts as growing most)."""
    pairs: dict[tuple[str, int], dict[str, Mapping[str, Any]]] = {}
    for record in samples:
        pairs.setdefault((record["task_id"], record["seed"]), {})[record["model"]] = record
    complete = [pair for pair in pairs.values() if set(MODELS) <= set(pair)]
    if not complete:
        return ""

    def gain(pair: Mapping[str, Mapping[str, Any]]) -> float:
        def log_speed(record: Mapping[str, Any]) -> float:
            if record["status"] != "passed":
                return -10.0
            return math.log(record["speedup"]) if record.get("speedup") else 0.0
        return log_speed(pair["retrofitted"]) - log_speed(pair["unmodified"])

    best = max(complete, key=gain)
    cells = []
    for model in MODELS:
        record = best[model]
        speed = f", speed-up {record['speedup']:.3g}x" if record["status"] == "passed" and record.get("speedup") else ""
        code = record.get("prompt", "") + record["completion"]
        cells.append(f"<td style='vertical-align:top;text-align:left'><strong>{model}</strong>: "
                     f"{html.escape(record['status'])}{speed}<pre>{html.escape(code)}</pre></td>")
    task = html.escape(str(best["unmodified"]["task_id"]))
    return (f"<p>A held-out sample of {task} (the same sampling seed for both): the shown sample whose "
            f"speed-up grew most. <code>samples.md</code> in the run directory has one per family.</p>"
            f"<table><tr>{''.join(cells)}</tr></table>")


@hookimpl
def retrofit_report_section(domain: str, run_dir: Path, summary: Any) -> Any:
    """Per-task pass / fail and speed-up on held-out data, and a sample before and after."""
    from retrofit import ReportImage, ReportSection

    from .plugin import HELDOUT, NAME, SAMPLES

    if domain != NAME:
        return None
    run_dir = Path(run_dir)
    path = run_dir / HELDOUT
    if not path.is_file():
        status = (summary or {}).get("status", "unknown")
        return ReportSection(TITLE, f"<p class='muted'>No held-out comparison yet (run status: "
                                    f"{html.escape(str(status))}): every held-out sample is decoded and judged "
                                    f"again, unmodified and retrofitted, when the run finishes ({HELDOUT}).</p>")
    lines = read_jsonl(path)
    by_family = any(line.get("family") for line in lines)
    label = "family" if by_family else "task"
    groups = grouped(lines, "family" if by_family else "task_id")
    totals = {model: tally(line for line in lines if line["model"] == model) for model in MODELS}
    tasks = len({line["task_id"] for line in lines})
    text = (f"<p>Every held-out sample ({totals['unmodified'].samples} samples of {tasks} tasks the optimiser "
            f"never saw) decoded with the same sampling seeds by the unmodified and the retrofitted model, run "
            f"in the sandbox against the tests, and timed against the task's slow reference. Speed-ups are "
            f"geometric means over the correct, timed samples. Overall: passed "
            f"{_rate(totals['unmodified'])} unmodified, {_rate(totals['retrofitted'])} retrofitted; speed-up "
            f"{_speed(totals['unmodified'].speedup)} unmodified, {_speed(totals['retrofitted'].speedup)} "
            f"retrofitted.</p>" + table(groups, label))
    if by_family:
        per_task = grouped(lines, "task_id")
        text += (f"<details><summary>Per task ({len(per_task)} tasks)</summary>{table(per_task, 'task')}"
                 f"</details>")
    shown = run_dir / SAMPLES
    if shown.is_file():
        text += sample_pair(read_jsonl(shown))
    caption = f"Per {label}: geometric-mean speed-up over the slow reference (top, log scale) and held-out " \
              f"samples passed (filled) and failed (hatched), unmodified vs retrofitted."
    if len(groups) > MAX_CHART_GROUPS:
        caption += f" The first {MAX_CHART_GROUPS} of {len(groups)} {label}s; the table has them all."
    return ReportSection(TITLE, text, [ReportImage(chart(groups, label), caption, "per-task speed-up and pass counts")])
