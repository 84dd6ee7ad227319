"""The Doom pack's section of ``retrofit report``: the held-out comparison with the trivial
scripted policies, per-episode histograms of kills and survival (baseline vs retrofitted), and
the recorded episode, baseline beside retrofitted.

It reads what ``retrofit_run_finished`` wrote (``heldout.json``, ``episode.gif``); a run still
going or interrupted has neither yet, and the section says so rather than playing episodes:
a report never runs the model.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from retrofit import hookimpl

ORDER = ("retrofitted", "baseline", "spin_and_shoot", "always_attack", "random")
COLUMNS = (("kills_per_life", "kills per life"), ("life_expectancy", "life expectancy (s)"), ("kd", "K/D"),
           ("attack_share", "share of steps firing"))


def _cell(scores: dict[str, Any], metric: str) -> str:
    value = scores["metrics"].get(metric)
    if value is None:
        return "-"
    se = scores.get("standard_errors", {}).get(metric)
    return f"{value:.3g} &plusmn; {se:.2g}" if se is not None else f"{value:.3g}"


def comparison_table(heldout: dict[str, Any]) -> str:
    """Every policy on the held-out seeds, the retrofitted agent first."""
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in COLUMNS)
    rows = []
    for name in [n for n in ORDER if n in heldout] + [n for n in heldout if n not in ORDER]:
        scores = heldout[name]
        beaten = scores.get("beaten_by_retrofit")
        verdict = "" if beaten is None else ("beaten" if beaten else "<strong>NOT beaten</strong>")
        cells = "".join(f"<td>{_cell(scores, metric)}</td>" for metric, _ in COLUMNS)
        rows.append(f"<tr><td>{html.escape(name.replace('_', ' '))}</td>{cells}<td>{scores['loss']:.4g}</td>"
                    f"<td>{verdict}</td></tr>")
    return (f"<table><tr><th>policy (held-out seeds)</th>{head}<th>loss</th><th>by the retrofit</th></tr>"
            + "".join(rows) + "</table>")


def histograms(heldout: dict[str, Any]) -> bytes:
    """Kills and survival per held-out episode, baseline vs retrofitted."""
    from retrofit.plots import new_figure, png

    figure = new_figure(8.0, 3.0)
    kills_axes, life_axes = figure.subplots(1, 2)
    for name, colour in (("baseline", "#999999"), ("retrofitted", "#4c72b0")):
        if name not in heldout:
            continue
        episodes = heldout[name]["episodes"]
        kills = [e["kills"] for e in episodes]
        top = max(kills) if kills else 1
        kills_axes.hist(kills, bins=range(int(top) + 2), alpha=0.6, color=colour, label=name)
        life_axes.hist([e["survival_seconds"] for e in episodes], bins=12, alpha=0.6, color=colour, label=name)
    kills_axes.set_xlabel("kills in the episode")
    life_axes.set_xlabel("seconds per life")
    for axes in (kills_axes, life_axes):
        axes.set_ylabel("episodes")
        axes.legend(frameon=False)
    return png(figure)


@hookimpl
def retrofit_report_section(domain: str, run_dir: Path, summary: Any, config: Any) -> Any:
    """Held-out comparison, per-episode histograms and the recorded episode."""
    from retrofit import ReportImage, ReportSection

    from .plugin import NAME

    if domain != NAME:
        return None
    run_dir = Path(run_dir)
    title = "Doom: held-out episodes"
    path = run_dir / "heldout.json"
    if not path.is_file():
        return ReportSection(title, "<p class='muted'>No held-out comparison yet: it is played when the run "
                                    "finishes (heldout.json).</p>")
    heldout = json.loads(path.read_text())
    seeds = len(heldout.get("baseline", {}).get("episodes", []))
    text = (f"<p>Every policy played the same {seeds} held-out seeds, which neither the optimiser nor the "
            f"agent's training saw. A retrofit only counts if it beats every trivial policy.</p>"
            + comparison_table(heldout))
    images = [ReportImage(histograms(heldout), "Per-episode kills and seconds per life on the held-out seeds.",
                          "histograms of kills and survival")]
    gif = run_dir / "episode.gif"
    if gif.is_file():
        episode = json.loads((run_dir / "episode.json").read_text()) if (run_dir / "episode.json").is_file() else {}
        images.append(ReportImage.from_file(gif, f"Held-out seed {episode.get('seed', '?')}: baseline (left) and "
                                                 f"retrofitted agent (right), every other frame.", "recorded episode"))
    return ReportSection(title, text, images)
