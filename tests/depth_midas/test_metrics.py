"""The relative-depth criterion against hand-computed cases, degenerate predictions included."""

from __future__ import annotations

import math

import numpy as np
import pytest
from retrofit_depth_midas.metrics import (
    align,
    depth_metrics,
    fit_scale_shift,
    fit_scale_shift_dataset,
    threshold_from_percent,
)


def _scene(seed: int = 0, shape: tuple[int, int] = (8, 10)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(1.0, 9.0, shape)


def test_threshold_from_percent() -> None:
    assert threshold_from_percent(25) == pytest.approx(1.25)
    assert threshold_from_percent(10) == pytest.approx(1.10)
    assert threshold_from_percent(2.5) == pytest.approx(1.025)
    for bad in (0, -5, math.nan, math.inf):
        with pytest.raises(ValueError):
            threshold_from_percent(bad)


def test_fit_recovers_scale_and_shift() -> None:
    depth = _scene()
    target = 1.0 / depth
    prediction = (target - 0.7) / 3.0  # so that 3 * p + 0.7 == target
    scale, shift = fit_scale_shift(prediction, target, np.ones_like(depth, bool))
    assert scale == pytest.approx(3.0) and shift == pytest.approx(0.7)


def test_fit_by_hand() -> None:
    # p = [1, 2, 3, 4], t = [1, 2, 3, 5]: a00 = 30, a01 = 10, a11 = 4, b0 = 34, b1 = 11, det = 20,
    # s = (4*34 - 10*11) / 20 = 1.3, b = (30*11 - 10*34) / 20 = -0.5.
    p = np.array([[1.0, 2.0], [3.0, 4.0]])
    t = np.array([[1.0, 2.0], [3.0, 5.0]])
    scale, shift = fit_scale_shift(p, t, np.ones((2, 2), bool))
    assert scale == pytest.approx(1.3) and shift == pytest.approx(-0.5)


def test_perfect_prediction_up_to_scale_and_shift_has_no_bad_pixel() -> None:
    depth = _scene()
    prediction = 3.0 / depth + 0.7
    (metrics,) = depth_metrics(prediction, depth, depth > 0, depth_cap=10.0)
    assert metrics["bad_pixel_rate"] == 0.0 and metrics["degenerate"] == 0.0
    assert metrics["abs_rel"] == pytest.approx(0.0, abs=1e-9) and metrics["rmse"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["valid_pixels"] == depth.size


def test_aligned_case_by_hand() -> None:
    # The fit above gives aligned disparity [0.8, 2.1, 3.4, 4.7] against target [1, 2, 3, 5]:
    # depth ratios 1.25, 1.05, 1.133, 1.064.
    p = np.array([[1.0, 2.0], [3.0, 4.0]])
    depth = 1.0 / np.array([[1.0, 2.0], [3.0, 5.0]])
    (strict,) = depth_metrics(p, depth, threshold=1.1, depth_cap=100.0)
    (loose,) = depth_metrics(p, depth, threshold=1.2, depth_cap=100.0)
    assert strict["bad_pixel_rate"] == pytest.approx(0.5)
    assert loose["bad_pixel_rate"] == pytest.approx(0.25)
    aligned_depth = 1.0 / np.array([0.8, 2.1, 3.4, 4.7])
    truth = depth.ravel()
    assert strict["abs_rel"] == pytest.approx(np.mean([0.25, 1 - 2 / 2.1, 1 - 3 / 3.4, 5 / 4.7 - 1]))
    assert strict["rmse"] == pytest.approx(math.sqrt(np.mean((aligned_depth - truth) ** 2)))


def test_known_ratio_case_without_alignment() -> None:
    # Metric prediction of a 2 m wall: half exact, a quarter at 2.6 m (ratio 1.3), a quarter at 1.5 m (1.333).
    depth = np.full((4, 4), 2.0)
    prediction = depth.copy()
    prediction[:2, :2] = 2.6
    prediction[2:, 2:] = 1.5
    (metrics,) = depth_metrics(prediction, depth, alignment="none", kind="depth")
    assert metrics["bad_pixel_rate"] == pytest.approx(0.5)
    assert metrics["abs_rel"] == pytest.approx(0.25 * 0.3 + 0.25 * 0.25)
    assert metrics["rmse"] == pytest.approx(math.sqrt(0.25 * 0.6**2 + 0.25 * 0.5**2))
    # "Off by more than 40 %": only ratios above 1.4 fail, none here.
    (lenient,) = depth_metrics(prediction, depth, alignment="none", kind="depth",
                               threshold=threshold_from_percent(40))
    assert lenient["bad_pixel_rate"] == 0.0


def test_constant_prediction_is_a_complete_failure() -> None:
    depth = np.array([[2.0, 3.0], [4.0, 5.0]])
    for constant in (0.3, 1e-8, -4.0):
        prediction = np.full((2, 2), constant)
        assert fit_scale_shift(prediction, 1.0 / depth, np.ones((2, 2), bool)) is None
        (metrics,) = depth_metrics(prediction, depth, depth_cap=10.0)
        # abs_rel = max(1, cap / min(d*) - 1) = 4, rmse = max(cap - min(d*), max(d*)) = 8
        assert metrics == {"bad_pixel_rate": 1.0, "abs_rel": 4.0, "rmse": 8.0, "degenerate": 1.0,
                           "valid_pixels": 4.0}


def test_constant_up_to_rounding_is_degenerate() -> None:
    depth = _scene()
    prediction = np.full(depth.shape, 0.1) + np.random.default_rng(1).normal(0, 1e-17, depth.shape)
    (metrics,) = depth_metrics(prediction, depth)
    assert metrics["degenerate"] == 1.0 and metrics["bad_pixel_rate"] == 1.0


@pytest.mark.parametrize("poison", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("alignment", ["per_image", "dataset", "none"])
def test_non_finite_prediction_is_a_complete_failure(poison: float, alignment: str) -> None:
    depth = _scene()
    prediction = 1.0 / depth
    prediction[3, 4] = poison
    (metrics,) = depth_metrics(prediction, depth, alignment=alignment)  # type: ignore[arg-type]
    assert metrics["bad_pixel_rate"] == 1.0 and metrics["degenerate"] == 1.0
    assert all(math.isfinite(value) for value in metrics.values())


def test_non_finite_outside_the_valid_mask_is_ignored() -> None:
    depth = _scene()
    depth[0, 0] = 0.0  # invalid ground truth
    prediction = 2.0 / np.where(depth > 0, depth, 1.0) + 0.1
    prediction[0, 0] = math.nan
    (metrics,) = depth_metrics(prediction, depth)
    assert metrics["degenerate"] == 0.0 and metrics["bad_pixel_rate"] == 0.0
    assert metrics["valid_pixels"] == depth.size - 1
    assert np.isfinite(align(prediction, depth)[0]).all()


def test_degenerate_is_never_better_than_a_finite_prediction() -> None:
    rng = np.random.default_rng(3)
    depth = _scene(4)
    (failure,) = depth_metrics(np.zeros_like(depth), depth, depth_cap=10.0)
    for _ in range(50):
        prediction = rng.normal(0, 1, depth.shape) * rng.uniform(0.01, 100)
        for alignment in ("per_image", "none"):
            (metrics,) = depth_metrics(prediction, depth, depth_cap=10.0, alignment=alignment)  # type: ignore[arg-type]
            assert metrics["degenerate"] == 0.0
            for key in ("bad_pixel_rate", "abs_rel", "rmse"):
                assert metrics[key] <= failure[key] + 1e-12, (key, metrics[key], failure[key])


def test_dataset_level_versus_per_image_alignment() -> None:
    depths = [_scene(1), _scene(2)]
    # Each image is perfect up to its own scale: per-image alignment forgives that, one shared fit cannot.
    different = [2.0 / depths[0] + 0.1, 6.0 / depths[1] + 0.1]
    per_image = depth_metrics(different, depths, alignment="per_image")
    shared = depth_metrics(different, depths, alignment="dataset")
    assert [m["bad_pixel_rate"] for m in per_image] == [0.0, 0.0]
    assert sum(m["bad_pixel_rate"] for m in shared) > 0.2
    # With one common scale and shift, the shared fit is perfect as well.
    same = [2.0 / depths[0] + 0.1, 2.0 / depths[1] + 0.1]
    assert [m["bad_pixel_rate"] for m in depth_metrics(same, depths, alignment="dataset")] == [0.0, 0.0]


def test_dataset_fit_equals_the_fit_over_all_pixels() -> None:
    rng = np.random.default_rng(5)
    predictions = [rng.uniform(0, 1, (4, 5)), rng.uniform(0, 1, (6, 3))]  # sizes may differ
    targets = [rng.uniform(0.1, 1, (4, 5)), rng.uniform(0.1, 1, (6, 3))]
    masks = [rng.random((4, 5)) > 0.3, rng.random((6, 3)) > 0.3]
    joint = fit_scale_shift_dataset(predictions, targets, masks)
    flat = fit_scale_shift(np.concatenate([p[m] for p, m in zip(predictions, masks)]),
                           np.concatenate([t[m] for t, m in zip(targets, masks)]),
                           np.ones(sum(int(m.sum()) for m in masks), bool))
    assert joint == pytest.approx(flat)


def test_dataset_alignment_leaves_a_poisoned_image_out() -> None:
    depths = [_scene(1), _scene(2)]
    predictions = [2.0 / depths[0] + 0.1, np.full(depths[1].shape, math.nan)]
    first, second = depth_metrics(predictions, depths, alignment="dataset")
    assert first["bad_pixel_rate"] == 0.0 and first["degenerate"] == 0.0
    assert second["bad_pixel_rate"] == 1.0 and second["degenerate"] == 1.0


def test_depth_cap_clamps_far_predictions() -> None:
    # Exact disparities, no alignment: pixels at 20 m are predicted at the 10 m cap (ratio 2).
    depth = np.array([[2.0, 4.0], [20.0, 20.0]])
    (metrics,) = depth_metrics(1.0 / depth, depth, alignment="none", depth_cap=10.0)
    assert metrics["bad_pixel_rate"] == pytest.approx(0.5)
    assert metrics["abs_rel"] == pytest.approx(0.25)
    (uncapped,) = depth_metrics(1.0 / depth, depth, alignment="none", depth_cap=80.0)
    assert uncapped["bad_pixel_rate"] == 0.0
    # Negative disparity (behind the camera) is clamped to the cap too.
    (aligned,) = align(np.array([[-1.0, 0.25]]), np.array([[10.0, 4.0]]), mode="none", depth_cap=10.0)
    assert aligned == pytest.approx(np.array([[10.0, 4.0]]))


def test_metric_depth_predictions() -> None:
    depth = _scene()
    (exact,) = depth_metrics(depth.copy(), depth, alignment="none", kind="depth")
    assert exact["bad_pixel_rate"] == 0.0 and exact["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    # A depth model can also be aligned in inverse-depth space: 1/p affine in 1/d is forgiven.
    (affine,) = depth_metrics(1.0 / (0.5 / depth + 0.05), depth, kind="depth")
    assert affine["bad_pixel_rate"] == 0.0
    # Zero predicted depth carries no distance: it lands at the cap.
    (aligned,) = align(np.array([[0.0, 4.0]]), np.array([[9.0, 4.0]]), mode="none", kind="depth", depth_cap=10.0)
    assert aligned == pytest.approx(np.array([[10.0, 4.0]]))


def test_batch_forms_and_mask_default() -> None:
    depths = np.stack([_scene(1), _scene(2)])
    predictions = 1.0 / depths
    as_array = depth_metrics(predictions, depths)
    as_list = depth_metrics(list(predictions), list(depths), [d > 0 for d in depths])
    assert as_array == as_list and len(as_array) == 2


def test_input_errors() -> None:
    depth = _scene()
    with pytest.raises(ValueError, match="differ in shape"):
        depth_metrics(np.ones((3, 3)), depth)
    with pytest.raises(ValueError, match="no valid pixel"):
        depth_metrics(np.ones((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="unknown alignment"):
        depth_metrics(depth, depth, alignment="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold"):
        depth_metrics(depth, depth, threshold=0.8)
    with pytest.raises(ValueError, match="batch sizes differ"):
        depth_metrics([depth, depth], [depth])
