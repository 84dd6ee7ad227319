"""MiDaS-style input preparation and output resizing with numpy and OpenCV (no torch, no torchvision).

A depth network wants sides that are multiples of 32 (its encoder halves the resolution five
times) and inputs normalised per channel. :func:`prepare` resizes an RGB image accordingly and
:func:`resize_back` brings a prediction back to the ground truth's resolution.

Resizing with ``keep_aspect=True`` scales both sides by one factor, chosen by ``fit``:

* ``"lower_bound"`` (default): the smallest factor that makes *both* sides at least the target,
  i.e. the shorter side becomes ``size``; sides are then rounded *up* to a multiple of 32.
* ``"upper_bound"``: the largest factor that keeps *both* sides at most the target, i.e. the
  longer side becomes ``size``; sides are rounded *down* to a multiple (never below one multiple).
* ``"minimal"``: whichever of the two factors is closer to 1 (the least resampling); sides are
  rounded to the nearest multiple.

With ``keep_aspect=False`` the image is stretched to ``size`` (rounded to the nearest multiple):
the plain ViT path of DPT accepts only square inputs, so use ``size=384, keep_aspect=False`` there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

Fit = Literal["lower_bound", "upper_bound", "minimal"]
FITS: tuple[str, ...] = ("lower_bound", "upper_bound", "minimal")


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x - mean) / std`` on RGB values scaled to [0, 1]."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need three values (R, G, B)")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Normalise an HxWx3 float image in [0, 1] (channels last)."""
        return ((image - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)).astype(np.float32)


IMAGENET = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
"""MiDaS v2.1 models (ResNeXt / EfficientNet encoders)."""
HALF = Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
"""DPT models: maps [0, 1] to [-1, 1]."""
NORMALIZATIONS: dict[str, Normalization] = {"imagenet": IMAGENET, "half": HALF}


def _snap(value: float, multiple: int, rounding: str) -> int:
    # Tolerance so that 384.0000001 is not rounded up to the next multiple.
    steps = value / multiple
    if rounding == "up":
        count = math.ceil(steps - 1e-6)
    elif rounding == "down":
        count = math.floor(steps + 1e-6)
    else:
        count = round(steps)
    return max(1, count) * multiple


def target_shape(height: int, width: int, *, size: int | tuple[int, int], keep_aspect: bool = True,
                 multiple: int = 32, fit: Fit = "lower_bound") -> tuple[int, int]:
    """The ``(height, width)`` :func:`prepare` resizes an image of ``height`` x ``width`` to.

    ``size`` is one side length or a ``(height, width)`` target.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size {width}x{height} is empty")
    if multiple < 1:
        raise ValueError(f"multiple must be at least 1, got {multiple}")
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r} (use {', '.join(FITS)})")
    target_h, target_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if target_h < 1 or target_w < 1:
        raise ValueError(f"target size {size} is empty")
    if not keep_aspect:
        return _snap(target_h, multiple, "nearest"), _snap(target_w, multiple, "nearest")
    scale_h, scale_w = target_h / height, target_w / width
    if fit == "lower_bound":
        scale, rounding = max(scale_h, scale_w), "up"
    elif fit == "upper_bound":
        scale, rounding = min(scale_h, scale_w), "down"
    else:
        scale = scale_h if abs(1 - scale_h) < abs(1 - scale_w) else scale_w
        rounding = "nearest"
    return _snap(height * scale, multiple, rounding), _snap(width * scale, multiple, rounding)


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    # Area averaging when shrinking avoids aliasing; bicubic when enlarging.
    shrinking = height < image.shape[0] and width < image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def prepare(rgb: np.ndarray, *, size: int | tuple[int, int] = 384, keep_aspect: bool = True, multiple: int = 32,
            normalization: Normalization = IMAGENET, fit: Fit = "lower_bound") -> np.ndarray:
    """Turn an HxWx3 uint8 RGB image into a normalised float32 CxHxW network input.

    The output's sides are multiples of ``multiple``; see the module docstring for ``fit``.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {rgb.dtype}")
    height, width = target_shape(rgb.shape[0], rgb.shape[1], size=size, keep_aspect=keep_aspect,
                                 multiple=multiple, fit=fit)
    # Resize in float and clip: bicubic overshoots near edges.
    image = np.clip(_resize(rgb.astype(np.float32) / 255.0, height, width), 0.0, 1.0)
    return np.ascontiguousarray(normalization.apply(image).transpose(2, 0, 1))


def prepare_batch(images: Sequence[np.ndarray], **options: object) -> np.ndarray:
    """:func:`prepare` several images into one NxCxHxW float32 array (they must end up the same size)."""
    prepared = [prepare(image, **options) for image in images]  # type: ignore[arg-type]
    if not prepared:
        raise ValueError("no images to prepare")
    shapes = {p.shape for p in prepared}
    if len(shapes) > 1:
        raise ValueError(f"images resize to different shapes {sorted(shapes)}; batch images of one size "
                         f"or pass keep_aspect=False")
    return np.stack(prepared)


def resize_back(prediction: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resize an HxW prediction (or an NxHxW batch) to ``shape[:2]`` = (height, width), bicubic, float32."""
    prediction = np.asarray(prediction, dtype=np.float32)
    height, width = int(shape[0]), int(shape[1])
    if prediction.ndim == 3:
        return np.stack([resize_back(p, (height, width)) for p in prediction])
    if prediction.ndim != 2:
        raise ValueError(f"expected an HxW prediction or an NxHxW batch, got shape {prediction.shape}")
    if prediction.shape == (height, width):
        return prediction.copy()
    return cv2.resize(prediction, (width, height), interpolation=cv2.INTER_CUBIC)
