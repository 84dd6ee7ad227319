"""The depth pack's section of ``retrofit report``: the depth metrics before and after, and
error maps of a few held-out images (input, ground truth, baseline and retrofitted error).

The maps are the ``error_maps.png`` that ``retrofit_run_finished`` wrote into the run
directory; a run without it (still going, interrupted, or finished before the pack wrote
maps) gets them rendered now, into a temporary file, since the report never writes into a
run directory.
"""

from __future__ import annotations

import html
import tempfile
from pathlib import Path
from typing import Any

from retrofit import hookimpl

METRICS = (("bad_pixel_rate", "share of pixels off by more than the threshold"),
           ("abs_rel", "mean |d - d*| / d*"), ("rmse", "root mean square error (metres)"),
           ("degenerate_rate", "share of images whose prediction could not be aligned"))


def _metrics_table(summary: Any) -> str:
    """Validation metrics of the baseline and of the chosen candidate, side by side."""
    baseline = ((summary.get("baseline") or {}).get("validation") or {}).get("metrics") or {}
    chosen = ((summary.get("best") or {}).get("validation") or {}).get("metrics") or {}
    rows = []
    for name, meaning in METRICS:
        before, after = baseline.get(name), chosen.get(name)
        cells = [f"{v:.4g}" if isinstance(v, (int, float)) else "-" for v in (before, after)]
        change = (f"{after - before:+.4g}" if isinstance(before, (int, float)) and isinstance(after, (int, float))
                  else "-")
        rows.append(f"<tr><td>{name}</td><td>{html.escape(meaning)}</td><td>{cells[0]}</td><td>{cells[1]}</td>"
                    f"<td>{change}</td></tr>")
    return ("<table><tr><th>metric (validation)</th><th>meaning</th><th>baseline</th><th>chosen</th>"
            "<th>change</th></tr>" + "".join(rows) + "</table>")


def _error_maps(run_dir: Path, config: Any, summary: Any) -> tuple[bytes | None, str]:
    """The error-map PNG and where it came from (``None`` without a chosen candidate)."""
    written = run_dir / "error_maps.png"
    if written.is_file():
        return written.read_bytes(), "error_maps.png of the run"
    if not (summary.get("best") or {}).get("values"):
        return None, "no candidate chosen yet"
    from .error_maps import write_error_maps

    with tempfile.TemporaryDirectory(prefix="retrofit-depth-report-") as scratch:
        path = write_error_maps(config, dict(summary), Path(scratch) / "error_maps.png")
        return path.read_bytes(), "rendered for this report"


@hookimpl
def retrofit_report_section(domain: str, run_dir: Path, summary: Any, config: Any) -> Any:
    """Depth metrics and before/after error maps of held-out images."""
    from retrofit import ReportImage, ReportSection

    from .plugin import NAME

    if domain != NAME:
        return None
    options = config.options
    percent = 100 * (float(options["threshold"]) - 1)
    data, origin = _error_maps(Path(run_dir), config, summary)
    text = (f"<p>A pixel is bad when the aligned depth is off by more than {percent:.0f} % (threshold "
            f"{options['threshold']}), with {html.escape(str(options['alignment']))} alignment.</p>"
            + _metrics_table(summary))
    if data is None:
        return ReportSection("Depth: error maps", text + f"<p class='muted'>No error maps: {origin}.</p>")
    caption = (f"Held-out images, one per row: input, ground truth (near bright), then the error of the "
               f"unmodified and of the retrofitted model (green within {percent:.0f} %, red beyond it, brighter "
               f"is worse; grey has no ground truth). Source: {origin}.")
    return ReportSection("Depth: error maps", text, [ReportImage(data, caption, "depth error maps")])
