"""MiDaS-style preprocessing: sizes in multiples of 32, aspect, normalisation, resizing back."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from retrofit_depth_midas.preprocess import (
    HALF,
    IMAGENET,
    Normalization,
    prepare,
    prepare_batch,
    resize_back,
    target_shape,
)


@pytest.mark.parametrize(("shape", "size", "fit", "expected"), [
    ((480, 640), 384, "lower_bound", (384, 512)),   # shorter side to 384
    ((480, 640), 384, "upper_bound", (288, 384)),   # longer side to 384
    ((97, 131), 64, "lower_bound", (64, 96)),       # 86.4 rounded up
    ((97, 131), 64, "upper_bound", (32, 64)),       # 47.4 rounded down
    ((97, 131), 64, "minimal", (64, 96)),           # 0.66 is closer to 1 than 0.49; 86.4 -> 96
    ((96, 128), 384, "lower_bound", (384, 512)),    # enlarging
    ((10, 1000), 64, "upper_bound", (32, 64)),      # never below one multiple
])
def test_target_shape(shape: tuple[int, int], size: int, fit: str, expected: tuple[int, int]) -> None:
    assert target_shape(*shape, size=size, fit=fit) == expected  # type: ignore[arg-type]


def test_sides_are_multiples_and_keep_the_aspect() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        height, width = (int(x) for x in rng.integers(20, 1500, 2))
        size = int(rng.integers(64, 600))
        for fit in ("lower_bound", "upper_bound", "minimal"):
            h, w = target_shape(height, width, size=size, fit=fit)  # type: ignore[arg-type]
            assert h % 32 == 0 and w % 32 == 0 and h >= 32 and w >= 32
            if fit == "lower_bound":
                # One factor for both sides, each rounded up by less than one multiple.
                scale = max(size / height, size / width)
                assert min(h, w) >= size
                assert -1e-6 <= h - height * scale < 32 and -1e-6 <= w - width * scale < 32
            elif fit == "upper_bound":
                scale = min(size / height, size / width)
                assert max(h, w) <= size
                assert abs(h - height * scale) < 32 + 1e-6 and abs(w - width * scale) < 32 + 1e-6


def test_stretch_without_aspect_and_tuple_sizes() -> None:
    assert target_shape(480, 640, size=384, keep_aspect=False) == (384, 384)
    assert target_shape(480, 640, size=(100, 200), keep_aspect=False) == (96, 192)
    assert target_shape(480, 640, size=(256, 256), fit="lower_bound") == (256, 352)  # 341.3 up to 352
    assert target_shape(480, 640, size=64, multiple=14, keep_aspect=False) == (70, 70)


def test_prepare_shape_dtype_and_normalisation() -> None:
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 0, 128
    out = prepare(rgb, size=96, normalization=IMAGENET)
    assert out.dtype == np.float32 and out.shape == (3, 96, 128) and out.flags.c_contiguous
    expected = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    for channel in range(3):  # RGB order is kept, a constant image stays constant
        assert np.allclose(out[channel], expected[channel], atol=1e-5)
    half = prepare(rgb, size=32, normalization=HALF)
    assert np.allclose(half[0], 1.0) and np.allclose(half[1], -1.0)
    assert np.allclose(half[2], 128 / 255 * 2 - 1, atol=1e-6)


def test_prepare_stays_in_range_despite_bicubic_overshoot() -> None:
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, 8:] = 255  # a hard edge, enlarged with bicubic
    out = prepare(rgb, size=128, normalization=HALF)
    assert out.min() >= -1.0 and out.max() <= 1.0


def test_prepare_rejects_bad_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        prepare(np.zeros((8, 8, 3), np.float32), size=32)
    with pytest.raises(ValueError, match="HxWx3"):
        prepare(np.zeros((8, 8), np.uint8), size=32)
    with pytest.raises(ValueError, match="std must be positive"):
        Normalization((0, 0, 0), (1, 0, 1))


def test_prepare_batch() -> None:
    images = [np.full((30, 40, 3), value, np.uint8) for value in (0, 100)]
    batch = prepare_batch(images, size=64, normalization=HALF)
    assert batch.shape == (2, 3, 64, 96)
    with pytest.raises(ValueError, match="different shapes"):
        prepare_batch([np.zeros((30, 40, 3), np.uint8), np.zeros((40, 30, 3), np.uint8)], size=64)


def test_resize_back() -> None:
    prediction = np.linspace(0, 1, 64 * 96, dtype=np.float32).reshape(64, 96)
    back = resize_back(prediction, (48, 70))
    assert back.shape == (48, 70) and back.dtype == np.float32
    assert resize_back(np.full((32, 32), 2.5), (17, 23, 3)).shape == (17, 23)  # an image's shape works too
    assert np.allclose(resize_back(np.full((32, 32), 2.5), (17, 23)), 2.5)
    same = resize_back(prediction, prediction.shape)
    assert np.array_equal(same, prediction) and same is not prediction
    assert resize_back(np.stack([prediction, prediction]), (10, 12)).shape == (2, 10, 12)


def test_no_torch_import() -> None:
    code = ("import sys, retrofit_depth_midas.preprocess, retrofit_depth_midas.metrics, "
            "retrofit_depth_midas.data, retrofit_depth_midas.scenes; "
            "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
