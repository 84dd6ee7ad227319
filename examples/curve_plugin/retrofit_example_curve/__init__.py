"""retrofit-example-curve: a third-party retrofit plugin in one module.

The model is a cubic fitted on [-1, 1]; the target domain is [-1.5, 1.5]. A point fails when
the prediction is off by more than ``tolerance``; the loss is the failure rate of the worst
batch (this plugin's own aggregation, replacing the core's weighted mean).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from retrofit import Aggregate, ArrayKnob, Domain, Option, hookimpl

NAME = "curve"
DOMAIN = Domain(
    name=NAME,
    help="Example plugin: retrofit a cubic's coefficients so fewer points miss a tolerance.",
    options=(
        Option("tolerance", 0.05, "a point fails when |prediction - truth| exceeds this"),
        Option("span", 1.5, "inputs of the target domain lie in [-span, span]"),
        Option("points", 200, "points per batch"),
    ),
    objective={"worst_failure_rate": 1.0},
    run_defaults={"budget": 120, "validate_every": 40},
)


def truth(x: np.ndarray) -> np.ndarray:
    return np.sin(2.0 * x)


@hookimpl
def retrofit_register_domains(register: Any) -> None:
    register(DOMAIN)


@hookimpl
def retrofit_register_commands(cli: Any) -> None:
    import click

    @cli.command(name="curve-info")
    def curve_info() -> None:
        """Show the example curve model (added by retrofit-example-curve)."""
        coefficients = _fit()
        click.echo("cubic fitted to sin(2x) on [-1, 1]: " + ", ".join(f"{c:+.4f}" for c in coefficients))


def _fit() -> np.ndarray:
    x = np.linspace(-1.0, 1.0, 50)
    return np.polyfit(x, truth(x), 3)


@hookimpl
def retrofit_load_model(domain: str, config: Any) -> np.ndarray | None:
    return _fit() if domain == NAME else None


@hookimpl
def retrofit_expose_parameters(domain: str, model: np.ndarray) -> list[ArrayKnob] | None:
    if domain != NAME:
        return None
    return [ArrayKnob("coefficients", model, sigma=0.05)]


@hookimpl
def retrofit_batches(domain: str, split: str) -> list[int] | None:
    if domain != NAME:
        return None
    return [0, 1, 2] if split == "train" else [100, 101, 102]  # seeds; validation never overlaps


@hookimpl
def retrofit_evaluate(domain: str, model: np.ndarray, batch: int, config: Any) -> dict[str, float] | None:
    if domain != NAME:
        return None
    options = config.options
    x = np.random.default_rng(batch).uniform(-options["span"], options["span"], options["points"])
    error = np.abs(np.polyval(model, x) - truth(x))
    return {"failure_rate": float(np.mean(error > options["tolerance"])), "max_error": float(error.max())}


@hookimpl
def retrofit_aggregate(domain: str, metrics: list[dict[str, float]]) -> Aggregate | None:
    if domain != NAME:
        return None
    worst = max(m["failure_rate"] for m in metrics)
    mean = sum(m["failure_rate"] for m in metrics) / len(metrics)
    return Aggregate(loss=worst, metrics={"worst_failure_rate": worst, "mean_failure_rate": mean,
                                          "max_error": max(m["max_error"] for m in metrics)})


@hookimpl
def retrofit_run_finished(domain: str, run_dir: Path, summary: dict[str, Any]) -> None:
    if domain != NAME:
        return
    # the fitted curve before and after, sampled for a plot
    x = np.linspace(-1.5, 1.5, 61)
    best = np.asarray(summary["best"]["values"]["coefficients"])
    curves = {"x": x.tolist(), "truth": truth(x).tolist(), "baseline": np.polyval(_fit(), x).tolist(),
              "retrofitted": np.polyval(best, x).tolist()}
    (run_dir / "curve.json").write_text(json.dumps(curves) + "\n")


@hookimpl
def retrofit_report_section(domain: str, summary: dict[str, Any]) -> Any:
    """``retrofit report``'s curve section: the cubic before and after, against the truth."""
    if domain != NAME:
        return None
    from retrofit import ReportImage, ReportSection
    from retrofit.plots import new_figure, png

    values = (summary.get("best") or {}).get("values")
    if not values:  # a run that has not chosen anything yet
        return ReportSection("Curve", "<p>No candidate chosen yet.</p>")
    x = np.linspace(-1.5, 1.5, 121)
    figure = new_figure(7, 3)
    axes = figure.add_subplot()
    axes.plot(x, truth(x), color="black", label="truth sin(2x)")
    axes.plot(x, np.polyval(_fit(), x), linestyle="--", label="baseline cubic")
    axes.plot(x, np.polyval(np.asarray(values["coefficients"]), x), label="retrofitted cubic")
    axes.axvspan(-1.0, 1.0, color="grey", alpha=0.1, label="fitted on")
    axes.legend(fontsize=8)
    return ReportSection("Curve", "<p>The polynomial before and after the retrofit; the shaded band is the "
                                  "domain it was originally fitted on.</p>",
                         [ReportImage(png(figure), "baseline and retrofitted cubic", "curve before and after")])


@hookimpl
def retrofit_export(domain: str, model: np.ndarray, knobs: Any, values: dict[str, list[float]], output: Path) -> Path | None:
    if domain != NAME:
        return None
    output.write_text(json.dumps({"coefficients": list(values["coefficients"])}) + "\n")
    return output
