"""The zero-shot relative-depth criterion: alignment in inverse-depth space and per-image metrics.

A MiDaS-style model predicts relative inverse depth (disparity) up to an unknown scale and shift.
The protocol fits ``s * p + b`` to the target disparity ``t = 1 / depth`` by least squares over the
valid pixels (per image, or once over a whole dataset), clamps the aligned disparity below at
``1 / depth_cap`` and compares ``depth = 1 / aligned`` with the ground truth:

* ``bad_pixel_rate``: share of valid pixels with ``max(d / d*, d* / d) > threshold`` (1.25 classic;
  "off by more than X %" is ``threshold_from_percent(X)``),
* ``abs_rel``: mean of ``|d - d*| / d*``, ``rmse``: root mean squared error in metres.

A prediction that cannot be scored (NaN or inf on a valid pixel, a singular fit such as a constant
prediction) is *degenerate*: it counts as a complete failure, never as NaN (``NaN > 1.25`` is false,
so a NaN prediction would otherwise pass every pixel). Its ``bad_pixel_rate`` is 1, and its
``abs_rel`` and ``rmse`` are the worst values any finite prediction could reach on that image (the
aligned depth always lies in ``(0, depth_cap]``)::

    abs_rel = max(1, depth_cap / min(d*) - 1)        rmse = max(depth_cap - min(d*), max(d*))

so a degenerate output is never better than a real one on any metric.

Every function takes a batch: a sequence of 2-D arrays (sizes may differ between images) or a 3-D
array; a single 2-D array is a batch of one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

Alignment = Literal["per_image", "dataset", "none"]
Kind = Literal["disparity", "depth"]
ALIGNMENTS: tuple[str, ...] = ("per_image", "dataset", "none")
KINDS: tuple[str, ...] = ("disparity", "depth")
Images = np.ndarray | Sequence[np.ndarray]

DETERMINANT_EPS = 1e-9
"""A fit is singular when ``det <= DETERMINANT_EPS * a00 * a11``: the prediction's variance over the
valid pixels is below about 1e-9 of its mean square, i.e. it is constant up to rounding. Relative,
so that it does not depend on the prediction's units (an untrained head may output ~1e-8)."""


def threshold_from_percent(percent: float) -> float:
    """The ratio threshold of "relative error above ``percent`` %": ``1 + percent / 100``."""
    if not percent > 0 or not math.isfinite(percent):
        raise ValueError(f"percent must be a positive number, got {percent}")
    return 1.0 + percent / 100.0


def _batch(images: Images, what: str) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        if images.ndim == 2:
            return [images]
        if images.ndim == 3:
            return list(images)
        raise ValueError(f"{what} must be one 2-D image or a batch of them, got shape {images.shape}")
    batch = [np.asarray(image) for image in images]
    for image in batch:
        if image.ndim != 2:
            raise ValueError(f"every {what} image must be 2-D, got shape {image.shape}")
    return batch


def _check_batches(predictions: Images, depths: Images, valids: Images | None
                   ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    preds = _batch(predictions, "prediction")
    targets = [np.asarray(d, dtype=np.float64) for d in _batch(depths, "depth")]
    if valids is None:
        masks = [np.isfinite(d) & (d > 0) for d in targets]
    else:
        masks = [np.asarray(m, dtype=bool) for m in _batch(valids, "valid")]
    if not len(preds) == len(targets) == len(masks):
        raise ValueError(f"batch sizes differ: {len(preds)} predictions, {len(targets)} depths, {len(masks)} masks")
    for index, (p, d, m) in enumerate(zip(preds, targets, masks)):
        if not p.shape == d.shape == m.shape:
            raise ValueError(f"image {index}: prediction {p.shape}, depth {d.shape} and mask {m.shape} differ in shape")
        # Invalid ground truth can never be scored, whatever the mask says.
        masks[index] = m & np.isfinite(d) & (d > 0)
        if not masks[index].any():
            raise ValueError(f"image {index} has no valid pixel")
    return preds, targets, masks


# --- least squares ---------------------------------------------------------------------------

def normal_equations(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The sums ``[a00, a01, a11, b0, b1]`` of the scale/shift fit over one image's masked pixels.

    Sums of several images add up to the dataset-level fit.
    """
    p = np.asarray(prediction, dtype=np.float64)[mask]
    t = np.asarray(target, dtype=np.float64)[mask]
    return np.array([np.dot(p, p), p.sum(), float(p.size), np.dot(p, t), t.sum()])


def solve_normal_equations(sums: np.ndarray) -> tuple[float, float] | None:
    """Closed-form ``(scale, shift)`` from :func:`normal_equations` sums; None when singular or not finite."""
    a00, a01, a11, b0, b1 = (float(x) for x in sums)
    if not all(math.isfinite(x) for x in (a00, a01, a11, b0, b1)):
        return None
    det = a00 * a11 - a01 * a01
    if not det > DETERMINANT_EPS * a00 * a11 or a11 < 2:
        return None
    scale = (a11 * b0 - a01 * b1) / det
    shift = (a00 * b1 - a01 * b0) / det
    if not (math.isfinite(scale) and math.isfinite(shift)):
        return None
    return scale, shift


def fit_scale_shift(pred_disparity: np.ndarray, target_disparity: np.ndarray,
                    mask: np.ndarray) -> tuple[float, float] | None:
    """Least-squares ``(scale, shift)`` minimising ``sum(mask * (scale * p + shift - t)**2)``.

    Returns None when the fit is singular (fewer than two pixels, a constant prediction) or any
    masked value is not finite.
    """
    mask = np.asarray(mask, dtype=bool)
    p = np.asarray(pred_disparity, dtype=np.float64)
    if not np.isfinite(p[mask]).all():
        return None
    return solve_normal_equations(normal_equations(p, target_disparity, mask))


def fit_scale_shift_dataset(pred_disparities: Images, target_disparities: Images,
                            masks: Images) -> tuple[float, float] | None:
    """One ``(scale, shift)`` for several images, by adding up their normal equations."""
    sums = np.zeros(5)
    for p, t, m in zip(_batch(pred_disparities, "prediction"), _batch(target_disparities, "target"),
                       _batch(masks, "mask")):
        m = np.asarray(m, dtype=bool)
        if not np.isfinite(np.asarray(p, dtype=np.float64)[m]).all():
            return None
        sums += normal_equations(p, t, m)
    return solve_normal_equations(sums)


# --- alignment -------------------------------------------------------------------------------

def _as_disparity(prediction: np.ndarray, kind: str) -> np.ndarray:
    p = np.asarray(prediction, dtype=np.float64)
    if kind == "disparity":
        return p
    # A metric depth model: work in inverse depth like the protocol. A non-positive depth carries
    # no distance; it becomes disparity 0, which the clamp turns into depth_cap. NaN and inf stay
    # non-finite so that they count as degenerate.
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(~np.isfinite(p), np.nan, np.where(p > 0, 1.0 / p, 0.0))


def align(predictions: Images, depths: Images, valids: Images | None = None, *, mode: Alignment = "per_image",
          depth_cap: float = 10.0, kind: Kind = "disparity") -> list[np.ndarray | None]:
    """Aligned depth predictions in metres, one per image, None for a degenerate one.

    ``kind`` says what the model outputs: relative inverse depth ("disparity", MiDaS/DPT) or metric
    depth ("depth"). ``mode`` "per_image" fits a scale and shift per image, "dataset" one pair for
    the whole batch (images with non-finite predictions are left out of that fit), "none" uses the
    prediction as it is (metric models). Aligned disparity is clamped below at ``1 / depth_cap``.
    """
    preds, targets, masks = _check_batches(predictions, depths, valids)
    return _align_checked(preds, targets, masks, mode=mode, depth_cap=depth_cap, kind=kind)


def _align_checked(preds: list[np.ndarray], targets: list[np.ndarray], masks: list[np.ndarray], *, mode: str,
                   depth_cap: float, kind: str) -> list[np.ndarray | None]:
    if mode not in ALIGNMENTS:
        raise ValueError(f"unknown alignment {mode!r} (use {', '.join(ALIGNMENTS)})")
    if kind not in KINDS:
        raise ValueError(f"unknown prediction kind {kind!r} (use {', '.join(KINDS)})")
    if not depth_cap > 0:
        raise ValueError(f"depth_cap must be positive, got {depth_cap}")
    disparities = [_as_disparity(p, kind) for p in preds]
    # An image is scoreable only if its prediction is finite wherever it will be scored.
    finite = [bool(np.isfinite(p[m]).all()) for p, m in zip(disparities, masks)]
    target_disparities = [np.where(m, 1.0 / np.where(m, d, 1.0), 0.0) for d, m in zip(targets, masks)]

    fits: list[tuple[float, float] | None]
    if mode == "none":
        fits = [(1.0, 0.0)] * len(preds)
    elif mode == "per_image":
        fits = [fit_scale_shift(p, t, m) if ok else None
                for p, t, m, ok in zip(disparities, target_disparities, masks, finite)]
    else:
        sums = np.zeros(5)
        for p, t, m, ok in zip(disparities, target_disparities, masks, finite):
            if ok:
                sums += normal_equations(p, t, m)
        shared = solve_normal_equations(sums)
        fits = [shared] * len(preds)

    aligned: list[np.ndarray | None] = []
    floor = 1.0 / depth_cap
    for p, ok, fit in zip(disparities, finite, fits):
        if not ok or fit is None:
            aligned.append(None)
            continue
        scale, shift = fit
        with np.errstate(invalid="ignore", over="ignore"):
            # fmax keeps NaN out of pixels nobody scores (outside the mask) from spreading warnings.
            disparity = np.fmax(scale * p + shift, floor)
        aligned.append(1.0 / disparity)
    return aligned


# --- metrics ---------------------------------------------------------------------------------

def failure_metrics(depth: np.ndarray, valid: np.ndarray, depth_cap: float) -> dict[str, float]:
    """The metrics of a degenerate prediction on one image: the worst any finite prediction can score."""
    target = np.asarray(depth, dtype=np.float64)[valid]
    low, high = float(target.min()), float(target.max())
    return {"bad_pixel_rate": 1.0, "abs_rel": max(1.0, depth_cap / low - 1.0),
            "rmse": max(depth_cap - low, high), "degenerate": 1.0, "valid_pixels": float(target.size)}


def depth_metrics(predictions: Images, depths: Images, valids: Images | None = None, *, threshold: float = 1.25,
                  depth_cap: float = 10.0, alignment: Alignment = "per_image",
                  kind: Kind = "disparity") -> list[dict[str, float]]:
    """Per-image metrics: ``bad_pixel_rate``, ``abs_rel``, ``rmse``, ``degenerate`` (1.0 or 0.0), ``valid_pixels``.

    ``predictions`` are raw model outputs at the ground truth's resolution; ``valids`` defaults to
    ``depth > 0``. A pixel is bad when ``max(d / d*, d* / d) > threshold``. Every value is finite.
    """
    if not threshold > 1:
        raise ValueError(f"threshold is a ratio above 1 (1.25 = 25 %), got {threshold}")
    preds, targets, masks = _check_batches(predictions, depths, valids)
    aligned = _align_checked(preds, targets, masks, mode=alignment, depth_cap=depth_cap, kind=kind)
    results = []
    for prediction, target, mask in zip(aligned, targets, masks):
        if prediction is None:
            results.append(failure_metrics(target, mask, depth_cap))
            continue
        d, d_star = prediction[mask], target[mask]
        ratio = np.maximum(d / d_star, d_star / d)
        results.append({
            "bad_pixel_rate": float(np.mean(ratio > threshold)),
            "abs_rel": float(np.mean(np.abs(d - d_star) / d_star)),
            "rmse": float(np.sqrt(np.mean((d - d_star) ** 2))),
            "degenerate": 0.0,
            "valid_pixels": float(d.size),
        })
    return results
