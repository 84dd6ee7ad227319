"""``retrofit report``: a self-contained HTML page of one run (no network needed to view it).

The page answers "ship the retrofitted model or not?": baseline against the chosen result on
train and held-out validation, the loss over the run, the train-validation gap, what the
knobs did, which optimiser ran, what failed and where the time went, then each domain's own
section (from the ``retrofit_report_section`` hook). Figures are PNGs embedded as ``data:``
URIs; the page loads nothing else. A run that is still going, was interrupted or failed is
reported all the same, from what its directory holds, and the page says so at the top.

This module stays light to import (plugins import :class:`ReportSection` from it when they
load): matplotlib is imported only when figures are drawn, by :mod:`retrofit.plots`.
"""

from __future__ import annotations

import base64
import html
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrofit.errors import UsageError

if TYPE_CHECKING:
    from retrofit.plugins import Plugins
    from retrofit.runs import RunView

# image types a section may embed, by their first bytes
_IMAGE_TYPES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF87a", "image/gif"),
                (b"GIF89a", "image/gif"))
# anything that would make the page fetch from elsewhere
_EXTERNAL = re.compile(r"""(?:\b(?:src|href|srcset|action|poster)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:|//)"""
                       r"""(?!#))|url\(\s*["']?\s*(?:https?:|//)|@import""", re.IGNORECASE)

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}img{max-width:100%;height:auto;display:block}
figure{margin:.8em 0}figcaption{color:#555;font-size:.9em}.status{font-weight:bold;padding:.5em .8em;border-radius:4px}
.status.done{background:#e6f4ea}.status.partial{background:#fff4ce;border:1px solid #e0b800}
.warning{background:#fde7e9;padding:.4em .8em;border-radius:4px}.better{color:#1b7f3b}.worse{color:#b3261e}
section{border-top:1px solid #ddd;margin-top:1.4em}.muted{color:#666}"""


@dataclass(frozen=True)
class ReportImage:
    """One picture of a report section: PNG, JPEG or GIF bytes (an animated GIF plays in the page)."""

    data: bytes
    caption: str = ""
    alt: str = ""

    @classmethod
    def from_file(cls, path: Path, caption: str = "", alt: str = "") -> ReportImage:
        """The image stored at ``path`` (e.g. one your ``retrofit_run_finished`` wrote)."""
        return cls(Path(path).read_bytes(), caption, alt)

    @property
    def mime(self) -> str | None:
        """The image's media type, or ``None`` for bytes that are none of the accepted types."""
        return next((mime for magic, mime in _IMAGE_TYPES if self.data.startswith(magic)), None)

    def data_uri(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass(frozen=True)
class ReportSection:
    """A section a plugin adds to ``retrofit report`` through ``retrofit_report_section``.

    ``title`` is the heading; ``html`` a fragment shown under it (escape your own text with
    :func:`html.escape`; it must not load anything from elsewhere: no ``http:`` sources or
    links, no ``<script src>``); ``images`` are shown after the fragment, each with its caption.
    """

    title: str
    html: str = ""
    images: Sequence[ReportImage] = field(default_factory=tuple)

    def problems(self) -> list[str]:
        """What keeps this section out of a self-contained page ([] when it is fine)."""
        found = []
        if not isinstance(self.title, str) or not self.title.strip():
            found.append("its title is empty")
        if not isinstance(self.html, str):
            found.append(f"html is a {type(self.html).__name__}, not a str")
        elif _EXTERNAL.search(self.html):
            found.append("its html refers to an external resource (the report must be self-contained)")
        for number, image in enumerate(self.images, start=1):
            if not isinstance(image, ReportImage) or not isinstance(image.data, bytes):
                found.append(f"image {number} is a {type(image).__name__}, not a ReportImage with bytes")
            elif image.mime is None:
                found.append(f"image {number} is not a PNG, JPEG or GIF")
        return found


# -- small HTML helpers -----------------------------------------------------------------------
def _text(value: Any) -> str:
    return html.escape("-" if value is None else str(value))


def _number(value: Any, error: Any = None) -> str:
    """A figure to 6 significant digits, with its standard error when there is one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _text(value)
    text = f"{value:.6g}"
    if isinstance(error, (int, float)) and error > 0:
        text += f" ± {error:.2g}"
    return text


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell if isinstance(cell, _Html) else _number(cell)}</td>" for cell in row)
                   + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


class _Html(str):
    """A table cell that is already HTML."""


def _image(data: bytes, alt: str, caption: str = "") -> str:
    image = ReportImage(data, caption, alt)
    label = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f"<figure><img src='{image.data_uri()}' alt='{html.escape(alt or caption, quote=True)}'>{label}</figure>"


def _section(title: str, body: str, anchor: str = "") -> str:
    identifier = f" id='{anchor}'" if anchor else ""
    return f"<section{identifier}><h2>{html.escape(title)}</h2>{body}</section>"


# -- the core sections ------------------------------------------------------------------------
def _overview(view: RunView) -> str:
    summary = view.summary
    optimizer = summary.get("optimizer") or {}
    chain = " → ".join(optimizer.get("chain") or [])
    rows = [
        ["domain", view.domain],
        ["optimizer requested", optimizer.get("requested")],
        ["optimizer used", optimizer.get("used") or "(not recorded yet)"],
        ["sub-optimisers (chain)", chain or "-"],
        ["evaluations", f"{summary.get('evaluations', len(view.history))} of {summary.get('budget', '?')}"],
        ["failed evaluations", summary.get("failed_evaluations")],
        ["re-scores (validation and re-evaluations)", summary.get("rescore_evaluations")],
        ["executor and workers", f"{summary.get('executor', '?')}, {summary.get('workers', '?')}"],
        ["seed", summary.get("seed")],
        ["noisy objective", summary.get("noisy")],
        ["selection of the result", summary.get("selection")],
        ["started", view.figures()["started"]],
    ]
    notes = "".join(f"<li>{html.escape(str(n))}</li>" for n in optimizer.get("notes") or [])
    return _section("Run", _table(["", "value"], rows) + (f"<p>Optimizer notes:</p><ul>{notes}</ul>" if notes else ""),
                    "run")


def _figure_cells(figures: dict[str, Any] | None, name: str) -> str:
    if not figures:
        return "-"
    if figures.get("error"):
        return "failed"
    if name == "loss":
        return _number(figures.get("loss"), figures.get("loss_se"))
    return _number((figures.get("metrics") or {}).get(name), (figures.get("standard_errors") or {}).get(name))


def _comparison(view: RunView) -> str:
    summary = view.summary
    baseline, best = summary.get("baseline") or {}, summary.get("best") or {}
    cells = [baseline.get("train"), baseline.get("validation"), best.get("train"), best.get("validation")]
    names = sorted({n for c in cells if c for n in (c.get("metrics") or {})})
    rows = [[name, *(_Html(_figure_cells(c, name)) for c in cells)] for name in ["loss", *names]]
    gaps = []
    for who in (baseline, best):
        train, held_out = who.get("train") or {}, who.get("validation") or {}
        ok = isinstance(train.get("loss"), (int, float)) and isinstance(held_out.get("loss"), (int, float))
        gaps.append(held_out["loss"] - train["loss"] if ok else None)
    rows.append([_Html("<i>gap: validation − train loss</i>"), None, gaps[0], None, gaps[1]])
    body = _table(["figure", "baseline train", "baseline validation", f"chosen (#{_text(best.get('id'))}) train",
                   f"chosen (#{_text(best.get('id'))}) validation"], rows)
    improvement = (summary.get("improvement") or {}).get("validation_loss_relative")
    if improvement is not None:
        kind = "better" if improvement > 0 else "worse" if improvement < 0 else ""
        body += (f"<p>Held-out (validation) loss: <b class='{kind}'>{100 * improvement:+.2f} %</b> relative "
                 f"improvement over the unmodified model. Values after ± are standard errors across batches.</p>")
    else:
        body += "<p class='muted'>No validation re-score of both the baseline and the chosen candidate yet.</p>"
    return _section("Baseline vs chosen result", body, "result")


def _curves(view: RunView) -> str:
    from retrofit import plots

    body = _image(plots.loss_curve(view.history, view.validation, view.checkpoints), "loss curve",
                  "Every evaluation's train loss in the order the optimiser heard it, the best so far, failures "
                  "(×), validation re-scores (◆) and the chosen candidate's validation loss (dashed).")
    return _section("Loss over the run", body, "loss")


def _gap(view: RunView) -> str:
    from retrofit import plots

    checkpoints = view.checkpoints
    if not checkpoints:
        return _section("Train vs validation", "<p class='muted'>No checkpoint yet: the gap of the baseline and of "
                        "the chosen candidate is in the table above.</p>", "gap")
    body = _image(plots.gap_curve(checkpoints), "train-validation gap",
                  "The chosen candidate's train and validation loss at each checkpoint. A widening gap is "
                  "overfitting to the train split.")
    rows = [[c["evaluations"], c.get("best_train_loss"), c.get("best_validation_loss"), c.get("chosen"),
             c.get("chosen_train_loss"), c.get("chosen_validation_loss"),
             None if c.get("chosen_validation_loss") is None or c.get("chosen_train_loss") is None
             else c["chosen_validation_loss"] - c["chosen_train_loss"]] for c in checkpoints]
    body += _table(["evaluations", "best train loss", "best validation loss", "chosen", "chosen train",
                    "chosen validation", "gap"], rows)
    return _section("Train vs validation", body, "gap")


def _knobs(view: RunView) -> str:
    from retrofit import plots

    best = view.summary.get("best") or {}
    values = best.get("values")
    specs = (view.summary.get("parameters") or {}).get("knobs") or []
    identity = next((e.get("values") for e in view.history if e["id"] == 0), None)  # candidate 0 is the identity
    if not values:
        return _section("Knobs of the chosen candidate", "<p class='muted'>No candidate chosen yet.</p>", "knobs")
    body = _image(plots.knob_bars(values, identity), "knob values",
                  f"Values of candidate #{best.get('id')} per knob; black ticks are the unmodified model's values.")
    rows = []
    for name, chosen in values.items():
        spec = next((s for s in specs if s.get("name") == name), {})
        start = (identity or {}).get(name)
        change = (max(abs(a - b) for a, b in zip(chosen, start)) if start and len(start) == len(chosen) and chosen
                  else None)
        rows.append([name, spec.get("kind"), len(chosen), spec.get("sigma"), spec.get("lower"), spec.get("upper"),
                     change])
    body += _table(["knob", "kind", "values", "sigma", "lower", "upper", "largest change from identity"], rows)
    return _section("Knobs of the chosen candidate", body, "knobs")


def _failures(view: RunView) -> str:
    from retrofit import plots

    failures = view.failures()
    rescore_failures = sum(1 for e in [*view.validation, *view.reevaluations] if e.get("error"))
    if not failures:
        body = "<p>No train evaluation failed.</p>"
    else:
        body = _image(plots.failures_bars(failures), "failures by reason")
        body += _table(["reason", "count"], sorted(failures.items(), key=lambda item: -item[1]))
    if rescore_failures:
        body += f"<p>{rescore_failures} re-score(s) on validation or re-evaluation failed too.</p>"
    return _section("Failures by reason", body, "failures")


def _time(view: RunView) -> str:
    from retrofit import plots

    summary = view.summary
    wall, evaluation = summary.get("wall_seconds"), summary.get("evaluation_seconds")
    workers = summary.get("workers") or 1
    if not isinstance(wall, (int, float)) or not isinstance(evaluation, (int, float)):
        seconds = evaluation if isinstance(evaluation, (int, float)) else None
        return _section("Time", f"<p>Evaluations took {_number(seconds)} s in all; wall time is not recorded "
                                f"yet (no summary).</p>", "time")
    per_worker = evaluation / workers
    overhead = max(wall - per_worker, 0.0)
    body = _image(plots.time_split(wall, per_worker), "wall time split",
                  "Overhead is everything but evaluating: the optimiser, the records, process start-up and "
                  "workers waiting for their turn.")
    share = (lambda seconds: _Html(f"{seconds / wall:.1%}")) if wall else (lambda seconds: None)
    body += _table(["", "seconds", "share of wall time"],
                   [["wall time", wall, share(wall)],
                    [f"evaluating (summed over {workers} worker(s))", evaluation, None],
                    ["evaluating per worker", per_worker, share(per_worker)], ["overhead", overhead, share(overhead)]])
    return _section("Time", body, "time")


def _extras(view: RunView) -> str:
    summary, parts = view.summary, []
    if summary.get("constraints"):
        parts.append(_section("Constraints", "<p>" + html.escape(", ".join(summary["constraints"])) + "</p>"))
    if summary.get("pareto"):
        parts.append(_section("Pareto front (train)", _table(
            ["candidate", "objectives"], [[p["id"], ", ".join(f"{v:.4g}" for v in p["objectives"])]
                                          for p in summary["pareto"]])))
    return "".join(parts)


def _evaluations(view: RunView) -> str:
    best, rows = float("inf"), []
    scored = {v["id"]: v for v in view.validation}
    for entry in view.history:
        if entry.get("error") is None and entry.get("loss") is not None:
            best = min(best, entry["loss"])
        validation = scored.get(entry["id"])
        rows.append([entry["id"], entry.get("loss"), best if best < float("inf") else None,
                     validation.get("loss") if validation else None, entry.get("seconds"), entry.get("worker"),
                     entry.get("error")])
    table = _table(["candidate", "train loss", "best so far", "validation loss", "seconds", "worker", "error"], rows)
    return _section("Evaluations", f"<details><summary>All {len(rows)} train evaluations</summary>{table}</details>",
                    "evaluations")


# -- domain sections --------------------------------------------------------------------------
def _warn(message: str) -> str:
    print(f"retrofit: warning: {message}", file=sys.stderr)
    return f"<p class='warning'>{html.escape(message)}</p>"


def render_section(section: ReportSection) -> str:
    """The HTML of one plugin section (checked with :meth:`ReportSection.problems` first)."""
    images = "".join(_image(i.data, i.alt or i.caption or section.title, i.caption) for i in section.images)
    return _section(section.title, section.html + images)


def domain_sections(plugins: Plugins | None, view: RunView) -> str:
    """Every plugin's ``retrofit_report_section`` for this run, each call on its own so that a
    failing plugin costs a warning in the page, not the report."""
    if plugins is None:
        return ""
    domain = plugins.domains.get(view.domain)
    if domain is None:
        return _section("Domain", f"<p class='muted'>Domain {html.escape(view.domain)!s} is not installed here: "
                                  f"no domain section.</p>")
    from retrofit.config import resolve
    from retrofit.errors import ConfigError
    from retrofit.records import CONFIG

    try:
        config = resolve(domain, view.path / CONFIG)
    except (ConfigError, UsageError) as error:
        return _section("Domain", _warn(f"cannot read {view.path / CONFIG} for the domain section: {error}"))
    arguments = {"domain": view.domain, "run_dir": view.path, "summary": view.summary, "config": config}
    parts = []
    for implementation in plugins.hook.retrofit_report_section.get_hookimpls():
        who = implementation.plugin_name
        try:
            answer = implementation.function(**{k: v for k, v in arguments.items() if k in implementation.argnames})
        except Exception as error:  # noqa: BLE001 - a plugin's bug must not cost the user the rest of the report
            parts.append(_warn(f"plugin {who!r} failed in retrofit_report_section: {type(error).__name__}: {error}"))
            continue
        sections = [] if answer is None else [answer] if isinstance(answer, ReportSection) else answer
        if not isinstance(sections, (list, tuple)):
            parts.append(_warn(f"plugin {who!r} returned a {type(answer).__name__} from retrofit_report_section, "
                               f"not a ReportSection, a list of them or None"))
            continue
        for section in sections:
            problems = (section.problems() if isinstance(section, ReportSection)
                        else [f"it is a {type(section).__name__}, not a ReportSection"])
            if problems:
                parts.append(_warn(f"plugin {who!r}: a report section was left out: {'; '.join(problems)}"))
            else:
                parts.append(render_section(section))
    return "".join(parts)


# -- the page ---------------------------------------------------------------------------------
def render(view: RunView, plugins: Plugins | None = None) -> str:
    """The report's HTML for the run in ``view``; with ``plugins``, the domain sections too."""
    if not view.history and not view.has_summary:
        raise UsageError(f"{view.path} has no results yet")
    name = html.escape(view.path.name)
    status = view.status
    done = view.complete
    note = view.status_note
    banner = (f"<p class='status {'done' if done else 'partial'}'>status: {html.escape(status)}"
              f"{' — ' + html.escape(note) if note else ''}</p>")
    navigation = " · ".join(f"<a href='#{anchor}'>{label}</a>" for anchor, label in (
        ("result", "result"), ("loss", "loss"), ("gap", "gap"), ("knobs", "knobs"), ("failures", "failures"),
        ("time", "time"), ("evaluations", "evaluations")))
    parts = [
        (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>retrofit run {name}</title>"
         f"<style>{_STYLE}</style></head><body>"),
        f"<h1>retrofit run {name}</h1>", banner, f"<p>{navigation}</p>",
        _comparison(view), _curves(view), _gap(view), _knobs(view), _overview(view), _failures(view), _time(view),
        _extras(view), domain_sections(plugins, view), _evaluations(view), "</body></html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"


def write_report(run_dir: Path, output: Path | None = None, plugins: Plugins | None = None) -> tuple[Path, RunView]:
    """Render the report of ``run_dir`` to ``output`` (default ``run_dir/report.html``).

    Returns the path written and the run as read, so that the caller can say whether it was complete.
    """
    from retrofit.runs import read_run

    view = read_run(run_dir)
    page = render(view, plugins)
    output = Path(output) if output is not None else view.path / "report.html"
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(page, encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot write {output}: {error.strerror or error}") from None
    return output, view


def write_comparison(first: RunView, second: RunView, rows: Sequence[tuple[str, Any, Any]], output: Path) -> Path:
    """``retrofit compare --html``: the comparison table and both runs' loss curves, self-contained."""
    from retrofit import plots

    names = [html.escape(str(v.path)) for v in (first, second)]
    cells = [[label, *(_Html(html.escape(f"{100 * v:+.2f} %")) if label == "relative improvement"
                       and isinstance(v, float) else v for v in (a, b))] for label, a, b in rows]
    curves = "".join(
        f"<div style='flex:1;min-width:24em'><h3>{name}</h3>"
        + _image(plots.loss_curve(view.history, view.validation, view.checkpoints), f"loss curve of {name}")
        + (f"<p class='status partial'>{html.escape(view.status_note)}</p>" if not view.complete else "")
        + "</div>" for name, view in zip(names, (first, second)))
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>retrofit compare</title>"
            f"<style>{_STYLE}</style></head><body><h1>retrofit compare</h1>"
            + _table(["figure", *names], cells)
            + f"<div style='display:flex;gap:1em;flex-wrap:wrap'>{curves}</div></body></html>\n")
    output = Path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(page, encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot write {output}: {error.strerror or error}") from None
    return output
