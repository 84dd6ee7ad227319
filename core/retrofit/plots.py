"""The report's figures, drawn with matplotlib and returned as PNG bytes.

matplotlib is imported inside the functions, never at module level: the command line's
start-up path must not pay for it. Figures are built with :class:`matplotlib.figure.Figure`
rather than ``pyplot``, so no GUI backend or global figure state is involved (Agg renders
them). Plugins may use :func:`new_figure` and :func:`png` for their own report sections.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

# colours used consistently across the figures
TRAIN, BEST, VALIDATION, FAILURE, OVERHEAD = "#4c72b0", "#222222", "#dd8452", "#c44e52", "#999999"


def new_figure(width: float = 8.0, height: float = 3.2) -> Any:
    """A blank matplotlib ``Figure`` (Agg, not registered with pyplot) of ``width`` x ``height`` inches."""
    # no matplotlib.use(): a bare Figure saves through the Agg canvas whatever pyplot's backend,
    # and switching backends would close the figures of a user's interactive session
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def png(figure: Any, dpi: int = 100) -> bytes:
    """Render ``figure`` to PNG bytes (no metadata, so the bytes depend on the data only)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def loss_curve(history: Sequence[Mapping[str, Any]], validation: Sequence[Mapping[str, Any]],
               checkpoints: Sequence[Mapping[str, Any]]) -> bytes:
    """Train loss of every evaluation in the order the optimiser heard them, the best so far,
    failures (marked at the top), validation re-scores and the chosen candidate's validation loss."""
    figure = new_figure(9, 3.6)
    axes = figure.add_subplot()
    position = {entry["id"]: index for index, entry in enumerate(history, start=1)}
    good = [(i, e["loss"]) for i, e in enumerate(history, start=1)
            if e.get("error") is None and e.get("loss") is not None]
    if good:
        xs, ys = zip(*good)
        axes.scatter(xs, ys, s=10, color=TRAIN, alpha=0.6, label="train loss of an evaluation")
        best, steps = float("inf"), []
        for x, y in good:
            best = min(best, y)
            steps.append((x, best))
        axes.step(*zip(*steps), where="post", color=BEST, linewidth=1.5, label="best train loss so far")
    failed = [i for i, e in enumerate(history, start=1) if e.get("error") is not None]
    if failed:
        losses = [y for _, y in good] or [1.0]
        top = max(losses) + 0.05 * ((max(losses) - min(losses)) or 1.0)  # just above every successful loss
        axes.scatter(failed, [top] * len(failed), marker="x", color=FAILURE, s=24, label="failed evaluation")
    scored = [(position[v["id"]], v["loss"], v.get("loss_se")) for v in validation
              if v.get("error") is None and v.get("loss") is not None and v["id"] in position]
    if scored:
        xs, ys, errors = zip(*scored)
        yerr = [e or 0.0 for e in errors] if any(errors) else None
        axes.errorbar(xs, ys, yerr=yerr, fmt="D", markersize=5, color=VALIDATION, linestyle="none",
                      label="validation re-score")
    chosen = [(c["evaluations"], c["chosen_validation_loss"]) for c in checkpoints
              if c.get("chosen_validation_loss") is not None]
    if chosen:
        axes.step(*zip(*chosen), where="post", color=VALIDATION, linestyle="--", linewidth=1.2,
                  label="chosen candidate's validation loss")
    axes.set_xlabel("evaluation (order told to the optimiser)")
    axes.set_ylabel("loss (lower is better)")
    axes.grid(alpha=0.3)
    if good or failed or scored:
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a point
    else:
        axes.text(0.5, 0.5, "no evaluation recorded yet", ha="center", va="center", transform=axes.transAxes)
    return png(figure)


def gap_curve(checkpoints: Sequence[Mapping[str, Any]]) -> bytes:
    """The chosen candidate's train and validation loss at each checkpoint, the gap shaded."""
    figure = new_figure(9, 3.0)
    axes = figure.add_subplot()
    points = [(c["evaluations"], c["chosen_train_loss"], c["chosen_validation_loss"]) for c in checkpoints
              if c.get("chosen_train_loss") is not None and c.get("chosen_validation_loss") is not None]
    if points:
        xs, train, held_out = zip(*points)
        axes.plot(xs, train, marker="o", color=TRAIN, label="chosen: train loss")
        axes.plot(xs, held_out, marker="D", color=VALIDATION, label="chosen: validation loss")
        axes.fill_between(xs, train, held_out, color=VALIDATION, alpha=0.15, label="gap")
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        axes.text(0.5, 0.5, "no checkpoint with both losses yet", ha="center", va="center", transform=axes.transAxes)
    axes.set_xlabel("evaluations at the checkpoint")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    return png(figure)


def knob_bars(values: Mapping[str, Sequence[float]], identity: Mapping[str, Sequence[float]] | None) -> bytes:
    """One panel per knob: the chosen values as bars (a line for long knobs), the unmodified
    model's values (the identity) as black ticks."""
    names = list(values)
    figure = new_figure(9, 1.9 * max(1, len(names)) + 0.4)
    for row, name in enumerate(names, start=1):
        axes = figure.add_subplot(len(names), 1, row)
        chosen = [float(v) for v in values[name]]
        index = list(range(len(chosen)))
        if len(chosen) <= 64:
            axes.bar(index, chosen, color=TRAIN, label="chosen")
        else:
            axes.plot(index, chosen, color=TRAIN, linewidth=1, label="chosen")
        start = (identity or {}).get(name)
        if start is not None and len(start) == len(chosen):
            axes.scatter(index, [float(v) for v in start], marker="_", s=120, color=BEST, zorder=3,
                         label="identity (unmodified)")
        axes.set_title(f"{name} ({len(chosen)} value{'s' if len(chosen) != 1 else ''})", fontsize=9, loc="left")
        axes.grid(alpha=0.3, axis="y")
        if len(chosen) <= 16:
            axes.set_xticks(index)
        if row == 1:
            axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return png(figure)


def failures_bars(failures: Mapping[str, int]) -> bytes:
    """Failed evaluations by reason (reasons shortened to one line)."""
    reasons = sorted(failures, key=lambda r: -failures[r])
    figure = new_figure(9, 0.5 * len(reasons) + 1.0)
    axes = figure.add_subplot()
    labels = [r.splitlines()[0][:70] + ("..." if len(r) > 70 else "") for r in reasons]
    axes.barh(range(len(reasons)), [failures[r] for r in reasons], color=FAILURE)
    axes.set_yticks(range(len(reasons)), labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("failed evaluations")
    return png(figure)


def time_split(wall: float, evaluation_per_worker: float) -> bytes:
    """Wall time as one bar: evaluating (per worker) and overhead (optimiser, records, start-up, idle)."""
    figure = new_figure(9, 1.3)
    axes = figure.add_subplot()
    busy = min(evaluation_per_worker, wall)
    axes.barh([0], [busy], color=TRAIN, label=f"evaluating ({busy:.1f} s per worker)")
    axes.barh([0], [max(wall - busy, 0.0)], left=[busy], color=OVERHEAD,
              label=f"overhead ({max(wall - busy, 0.0):.1f} s)")
    axes.set_yticks([])
    axes.set_xlabel("seconds of wall time")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return png(figure)
