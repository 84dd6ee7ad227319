"""Before/after error maps of a retrofit, as one PNG in the run directory.

Each row is a held-out image: the input, the ground-truth depth, and the error of the
unmodified and of the retrofitted model (green: within the threshold, red: off by more,
the brighter the worse; grey: no ground truth).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

ROWS = 4


def error_image(prediction: np.ndarray, depth: np.ndarray, valid: np.ndarray, *, threshold: float,
                depth_cap: float, alignment: str) -> np.ndarray:
    """An RGB uint8 map of ``max(d/d*, d*/d)`` after alignment; red beyond ``threshold``."""
    from .metrics import align

    aligned = align([prediction], [depth], [valid], mode=alignment, depth_cap=depth_cap)[0]
    image = np.full((*depth.shape, 3), 128, np.uint8)
    if aligned is None:  # degenerate prediction: every pixel fails
        image[valid] = (255, 0, 0)
        return image
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(aligned / depth, depth / aligned)
    ratio = np.where(np.isfinite(ratio), ratio, np.inf)
    bad = valid & (ratio > threshold)
    good = valid & ~bad
    image[good] = (40, 170, 60)
    # brightness grows with how far beyond the threshold a pixel is (saturating at 2x)
    severity = np.clip((ratio[bad] - threshold) / threshold, 0, 1)
    image[bad] = np.stack([150 + 105 * severity, 30 * (1 - severity), 30 * (1 - severity)], axis=-1).astype(np.uint8)
    return image


def depth_image(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Ground-truth depth as a colour map (near bright, far dark)."""
    import cv2

    scaled = np.zeros(depth.shape, np.uint8)
    if valid.any():
        near, far = np.percentile(depth[valid], [2, 98])
        scaled[valid] = np.clip(255 * (far - depth[valid]) / max(far - near, 1e-6), 0, 255).astype(np.uint8)
    coloured = cv2.applyColorMap(scaled, cv2.COLORMAP_MAGMA)[..., ::-1]
    coloured[~valid] = 128
    return coloured


def write_error_maps(config: Any, summary: dict[str, Any], path: Path) -> Path:
    """Render the grid for the run's chosen values; returns the PNG path."""
    import cv2
    from retrofit.evaluator import Evaluator

    evaluator = Evaluator(config)
    problem = evaluator.model
    options = config.options
    names = [n for batch in evaluator.batches("validation") for n in batch][:ROWS]
    samples = [problem.sample(name) for name in names]
    baseline = problem.predict(tuple(names))
    with evaluator.knobs.applied(evaluator.space.join(summary["best"]["values"])):
        retrofitted = problem.predict(tuple(names))
    style = {"threshold": options["threshold"], "depth_cap": options["depth_cap"], "alignment": options["alignment"]}
    rows = []
    for sample, before, after in zip(samples, baseline, retrofitted):
        tiles = [sample.rgb, depth_image(sample.depth, sample.valid),
                 error_image(before, sample.depth, sample.valid, **style),
                 error_image(after, sample.depth, sample.valid, **style)]
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], axis=1))
    grid = np.concatenate(rows, axis=0)
    header = np.full((22, grid.shape[1], 3), 255, np.uint8)
    width = grid.shape[1] // 4
    for column, label in enumerate(("input", "ground truth", "baseline error", "retrofitted error")):
        cv2.putText(header, label, (column * width + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), np.concatenate([header, grid], axis=0)[..., ::-1])
    return path
