"""What a finished Doom run adds to its directory: the baseline, the retrofitted agent and the
trivial scripted policies played on the same held-out seeds (``heldout.json``), and a recording
of one held-out episode, baseline beside retrofitted (``episode.mp4`` and ``episode.gif``).

A retrofit only counts if the retrofitted agent beats every trivial policy on the held-out
seeds (DESIGN.md: a prototype's "improvement" was a spin-and-shoot policy in disguise), so
``heldout.json`` says for each policy whether the retrofitted agent beat it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

GIF_SCALE = 0.5  # the GIF is for reports and pull requests: half size keeps it small


def _reduced(per_batch: list[dict[str, float]], config: Any) -> dict[str, Any]:
    """The domain's own aggregation, so these figures are computed exactly as the run's."""
    from .plugin import retrofit_aggregate

    aggregate = retrofit_aggregate(domain="doom", metrics=per_batch, config=config)
    return {"loss": aggregate.loss, "loss_se": aggregate.loss_se, "metrics": dict(aggregate.metrics),
            "standard_errors": dict(aggregate.standard_errors)}


def score_heldout(options: dict[str, Any], config: Any, run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Play the baseline, the retrofitted agent and each trivial policy on the held-out seeds,
    batch for batch like the run, and write ``heldout.json``: per-episode results (for the
    report's histograms), reduced metrics with standard errors, and whether the retrofitted
    agent beat each trivial policy. The agents' figures equal the run's validation figures:
    episodes are reproducible, and ``reproduced`` records that they were."""
    from .game import Game
    from .plugin import attack_actions, episode_sums, load_problem, retrofit_batches
    from .scripted import TRIVIAL

    problem = load_problem(options)
    settings = problem.game_settings()
    batches = retrofit_batches(domain="doom", config=config, split="validation")
    attacks = attack_actions(settings)
    played: dict[str, list[list[Any]]] = {}
    with Game(settings) as game:
        for name, make in TRIVIAL.items():
            policy = make(game.action_space)
            played[name] = [[game.play(policy, seed) for seed in batch] for batch in batches]
    played["baseline"] = [problem.play(batch) for batch in batches]
    values = (summary.get("best") or {}).get("values")
    if values:
        with _applied(problem, config, values):
            played["retrofitted"] = [problem.play(batch) for batch in batches]
    scores: dict[str, Any] = {}
    for name, results in played.items():
        scores[name] = _reduced([episode_sums(batch, attacks) for batch in results], config)
        scores[name]["episodes"] = [r.as_dict() for batch in results for r in batch]
    for name, key in (("baseline", "baseline"), ("retrofitted", "best")):
        recorded = ((summary.get(key) or {}).get("validation") or {}).get("loss")
        if name in scores and recorded is not None:
            scores[name]["reproduced"] = bool(abs(scores[name]["loss"] - recorded) <= 1e-9 * max(1.0, abs(recorded)))
    if "retrofitted" in scores:
        for name in TRIVIAL:
            scores[name]["beaten_by_retrofit"] = bool(scores["retrofitted"]["loss"] < scores[name]["loss"])
    (run_dir / "heldout.json").write_text(json.dumps(scores, indent=1) + "\n")
    return scores


@contextmanager
def _applied(problem: Any, config: Any, values: dict[str, Any]) -> Iterator[None]:
    from .plugin import build_doom_knobs

    knobs = build_doom_knobs(problem, list(config.options["knobs"]))
    try:
        for knob in knobs:
            knob.apply(np.asarray(values[knob.name], dtype=float))
        yield
    finally:
        for knob in knobs:
            knob.restore()


def _frames(problem: Any, seed: int) -> tuple[list[np.ndarray], Any]:
    frames: list[np.ndarray] = []
    (result,) = problem.play((seed,), on_frame=lambda frame, action: frames.append(frame.copy()))
    return frames, result


def _caption(frame: np.ndarray, text: str) -> np.ndarray:
    import cv2

    out = frame.copy()
    cv2.putText(out, text, (4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 0), 1, cv2.LINE_AA)
    return out


def record_comparison(options: dict[str, Any], config: Any, run_dir: Path, summary: dict[str, Any],
                      seed: int | None = None) -> list[Path]:
    """Play the first held-out seed (or ``seed``) with the baseline and the retrofitted agent and
    write the two side by side, frame for frame (the shorter episode holds its last frame)."""
    import cv2

    from .plugin import load_problem, seeds

    problem = load_problem(options)
    seed = seeds(options, "validation")[0] if seed is None else seed
    before, result_before = _frames(problem, seed)
    with _applied(problem, config, summary["best"]["values"]):
        after, result_after = _frames(problem, seed)
    n = max(len(before), len(after))
    left_label = f"baseline: {result_before.kills} kills, {result_before.seconds:.0f}s"
    right_label = f"retrofitted: {result_after.kills} kills, {result_after.seconds:.0f}s"
    frames = [np.concatenate([_caption(before[min(i, len(before) - 1)], left_label),
                              _caption(after[min(i, len(after) - 1)], right_label)], axis=1) for i in range(n)]
    fps = max(1, round(35 / problem.game_settings().frame_skip))  # real time
    height, width = frames[0].shape[:2]
    mp4 = run_dir / "episode.mp4"
    writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    written = []
    if writer.isOpened():
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        written.append(mp4)
    animation = cv2.Animation()
    small = [cv2.resize(f, (int(width * GIF_SCALE), int(height * GIF_SCALE)), interpolation=cv2.INTER_AREA)
             for f in frames[::2]]  # every other frame: half the size, still readable
    animation.frames = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in small]
    animation.durations = [int(2000 / fps)] * len(small)
    gif = run_dir / "episode.gif"
    if cv2.imwriteanimation(str(gif), animation):
        written.append(gif)
    (run_dir / "episode.json").write_text(json.dumps(
        {"seed": seed, "baseline": result_before.as_dict(), "retrofitted": result_after.as_dict(),
         "files": [p.name for p in written]}, indent=2) + "\n")
    return written
