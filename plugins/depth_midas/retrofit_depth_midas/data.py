"""The depth dataset folder format: validation, splits, lazy loading, PFM.

A dataset is a folder::

    dataset.toml        optional: depth scale and splits (below)
    rgb/<name>.png      colour images, .png, .jpg or .jpeg (8-bit; grey and RGBA are converted to RGB)
    depth/<name>.png    depth maps: 16-bit single-channel PNG, metres = value * depth_scale
    depth/<name>.npy    ... or a 2-D float array in metres
    depth/<name>.pfm    ... or a one-channel PFM in metres

Every image has exactly one depth map with the same name and the same size, and the other way
round. A depth value of 0 (or anything not finite or negative) marks an invalid pixel.
``dataset.toml``::

    depth_scale = 0.001            # metres per unit of 16-bit PNG depth (default 0.001: millimetres)
    validation_fraction = 0.5      # only used without [splits] (default 0.5)
    description = "free text"      # optional
    [splits]                       # optional; names without extension
    train = ["00000", "00001"]
    validation = ["00002"]
    [generator]                    # optional, free-form: written by the scene generator

Without ``[splits]`` every name goes to the validation split when the first 8 bytes of its
SHA-256 hash, read as a fraction of 2**64, fall below ``validation_fraction``: deterministic,
independent of the file order, and stable when images are added.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from retrofit import UsageError

RGB_SUFFIXES = (".png", ".jpg", ".jpeg")
DEPTH_SUFFIXES = (".png", ".npy", ".pfm")
SPLITS = ("train", "validation")
Split = Literal["train", "validation"]
_MANIFEST = "dataset.toml"
_MANIFEST_KEYS = {"depth_scale", "validation_fraction", "description", "splits", "generator"}


@dataclass(frozen=True)
class Sample:
    """One loaded image: ``rgb`` uint8 HxWx3 (RGB order), ``depth`` float32 HxW metres, ``valid`` mask."""

    name: str
    rgb: np.ndarray
    depth: np.ndarray
    valid: np.ndarray


# --- PFM -------------------------------------------------------------------------------------

def read_pfm(path: str | Path) -> np.ndarray:
    """Read a PFM file as float32, HxW (``Pf``) or HxWx3 (``PF``), top row first.

    PFM stores rows bottom to top; a negative scale means little-endian data.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    # Header: three whitespace-separated tokens (kind, "W H", scale), then one whitespace byte.
    match = re.match(rb"(P[Ff])\s+(\d+)\s+(\d+)\s+([-+0-9.eE]+)\s", raw)
    if match is None:
        raise UsageError(f"{path} is not a PFM file (expected a 'Pf' or 'PF' header)")
    channels = 3 if match.group(1) == b"PF" else 1
    width, height = int(match.group(2)), int(match.group(3))
    try:
        scale = float(match.group(4))
    except ValueError:
        raise UsageError(f"{path}: bad PFM scale {match.group(4)!r}") from None
    dtype = np.dtype("<f4" if scale < 0 else ">f4")
    expected = width * height * channels
    body = raw[match.end():]
    if len(body) < expected * 4:
        raise UsageError(f"{path} is truncated: {width}x{height}x{channels} floats need {expected * 4} bytes, "
                         f"found {len(body)}")
    values = np.frombuffer(body, dtype=dtype, count=expected).astype(np.float32)
    shape = (height, width) if channels == 1 else (height, width, 3)
    return np.ascontiguousarray(values.reshape(shape)[::-1])


def write_pfm(path: str | Path, array: np.ndarray) -> None:
    """Write a float array (HxW or HxWx3) as little-endian PFM."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:
        kind = b"Pf"
    elif array.ndim == 3 and array.shape[2] == 3:
        kind = b"PF"
    else:
        raise ValueError(f"PFM holds HxW or HxWx3 arrays, got shape {array.shape}")
    height, width = array.shape[:2]
    header = kind + b"\n" + f"{width} {height}\n-1.0\n".encode()
    Path(path).write_bytes(header + np.ascontiguousarray(array[::-1]).astype("<f4").tobytes())


# --- writing (used by the scene generator and tests) -----------------------------------------

def write_sample(folder: str | Path, name: str, rgb: np.ndarray, depth: np.ndarray, *,
                 depth_format: Literal["png16", "npy", "pfm"] = "png16", depth_scale: float = 0.001) -> None:
    """Write one image and its depth map (metres, 0 = invalid) into a dataset folder."""
    root = Path(folder)
    (root / "rgb").mkdir(parents=True, exist_ok=True)
    (root / "depth").mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(root / "rgb" / f"{name}.png"), cv2.cvtColor(np.asarray(rgb, np.uint8), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {root / 'rgb' / f'{name}.png'}")
    depth = np.asarray(depth, dtype=np.float32)
    if depth_format == "png16":
        units = np.round(np.where(np.isfinite(depth) & (depth > 0), depth, 0.0) / depth_scale)
        if units.max(initial=0) > 65535:
            raise ValueError(f"depth {float(depth.max()):.3f} m does not fit a 16-bit PNG at scale {depth_scale} m")
        cv2.imwrite(str(root / "depth" / f"{name}.png"), units.astype(np.uint16))
    elif depth_format == "npy":
        np.save(root / "depth" / f"{name}.npy", depth)
    elif depth_format == "pfm":
        write_pfm(root / "depth" / f"{name}.pfm", depth)
    else:
        raise ValueError(f"unknown depth format {depth_format!r} (use png16, npy or pfm)")


def write_manifest(folder: str | Path, *, depth_scale: float = 0.001, splits: dict[str, list[str]] | None = None,
                   generator: dict[str, Any] | None = None, description: str | None = None) -> None:
    """Write ``dataset.toml`` (scalars and flat lists only, inline; long name lists are wrapped)."""
    top: dict[str, Any] = {"depth_scale": depth_scale}
    if description is not None:
        top["description"] = description
    tables = {"splits": splits, "generator": generator}
    lines = [f"{key} = {_toml_value(value)}" for key, value in top.items()]
    for table, content in tables.items():
        if content is None:
            continue
        lines += ["", f"[{table}]"]
        for key, value in content.items():
            if isinstance(value, dict):
                continue  # nested tables follow, after the table's own keys (TOML order)
            lines.append(f"{key} = {_toml_value(value)}")
        for key, value in content.items():
            if isinstance(value, dict):
                lines += ["", f"[{table}.{key}]", *(f"{k} = {_toml_value(v)}" for k, v in value.items())]
    (Path(folder) / _MANIFEST).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _toml_value(value: Any) -> str:
    # JSON spelling of these types is valid TOML (ensure_ascii=False: TOML has no surrogate escapes).
    if isinstance(value, (bool, int, float, str)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"TOML cannot hold {value}")
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        items = [_toml_value(item) for item in value]
        inline = "[" + ", ".join(items) + "]"
        if len(inline) <= 100:
            return inline
        rows, row = [], ""
        for item in items:
            if row and len(row) + len(item) > 96:
                rows.append(row)
                row = ""
            row += item + ", "
        rows.append(row)
        return "[\n" + "\n".join("    " + r.rstrip() for r in rows) + "\n]"
    raise TypeError(f"cannot write {type(value).__name__} to dataset.toml")


# --- reading ---------------------------------------------------------------------------------

def _hash_fraction(name: str) -> float:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64


def _index(directory: Path, suffixes: tuple[str, ...], kind: str) -> dict[str, Path]:
    """Map names to files in one directory; unknown suffixes and duplicate names are errors."""
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue  # hidden files (.DS_Store) and sub-folders are not part of the format
        if path.suffix.lower() not in suffixes:
            raise UsageError(f"{path}: unsupported {kind} file type (use {', '.join(suffixes)})")
        if path.stem in found:
            raise UsageError(f"{found[path.stem]} and {path} have the same name; keep one")
        found[path.stem] = path
    return found


class DepthDataset:
    """A dataset folder, validated on opening and loaded lazily image by image.

    Raises :class:`retrofit.UsageError` naming the offending file or key: a missing folder, an
    image without a depth map or the other way round, an unsupported file, a bad ``dataset.toml``.
    Problems inside a file (unreadable, wrong type, sizes that differ) surface when it is loaded.
    """

    def __init__(self, folder: str | Path, *, validation_fraction: float | None = None) -> None:
        self.root = Path(folder)
        if not self.root.is_dir():
            raise UsageError(f"dataset folder {self.root} does not exist")
        for sub in ("rgb", "depth"):
            if not (self.root / sub).is_dir():
                raise UsageError(f"dataset folder {self.root} has no {sub}/ folder (expected rgb/ and depth/)")
        self._rgb = _index(self.root / "rgb", RGB_SUFFIXES, "image")
        self._depth = _index(self.root / "depth", DEPTH_SUFFIXES, "depth")
        for name, path in self._rgb.items():
            if name not in self._depth:
                raise UsageError(f"{path} has no depth map (expected depth/{name}.png, .npy or .pfm)")
        for name, path in self._depth.items():
            if name not in self._rgb:
                raise UsageError(f"{path} has no image (expected rgb/{name}.png, .jpg or .jpeg)")
        if not self._rgb:
            raise UsageError(f"dataset folder {self.root} holds no images in rgb/")

        manifest = self._read_manifest()
        self.depth_scale = float(manifest.get("depth_scale", 0.001))
        if not self.depth_scale > 0:
            raise UsageError(f"{self.root / _MANIFEST}: depth_scale must be positive, got {self.depth_scale}")
        fraction = validation_fraction if validation_fraction is not None else manifest.get("validation_fraction", 0.5)
        if not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
            raise UsageError(f"{self.root / _MANIFEST}: validation_fraction must be within [0, 1], got {fraction!r}")
        self._splits = self._resolve_splits(manifest.get("splits"), float(fraction))

    def _read_manifest(self) -> dict[str, Any]:
        path = self.root / _MANIFEST
        if not path.exists():
            return {}
        try:
            manifest = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise UsageError(f"{path} is not valid TOML: {error}") from None
        unknown = sorted(set(manifest) - _MANIFEST_KEYS)
        if unknown:
            raise UsageError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_MANIFEST_KEYS))})")
        return manifest

    def _resolve_splits(self, table: Any, fraction: float) -> dict[str, list[str]]:
        names = sorted(self._rgb)
        if table is None:
            validation = [n for n in names if _hash_fraction(n) < fraction]
            chosen = set(validation)
            return {"train": [n for n in names if n not in chosen], "validation": validation}
        path = self.root / _MANIFEST
        if not isinstance(table, dict):
            raise UsageError(f"{path}: [splits] must be a table of name lists")
        splits: dict[str, list[str]] = {}
        for key, listed in table.items():
            if key not in SPLITS:
                raise UsageError(f"{path}: unknown split {key!r} in [splits] (use train and validation)")
            if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
                raise UsageError(f"{path}: splits.{key} must be a list of image names")
            for name in listed:
                if name not in self._rgb:
                    raise UsageError(f"{path}: splits.{key} names {name!r}, but rgb/ has no such image")
            if len(set(listed)) != len(listed):
                raise UsageError(f"{path}: splits.{key} lists an image twice")
            splits[key] = sorted(listed)
        overlap = sorted(set(splits.get("train", [])) & set(splits.get("validation", [])))
        if overlap:
            raise UsageError(f"{path}: image {overlap[0]!r} is in both the train and the validation split")
        return {key: splits.get(key, []) for key in SPLITS}

    def __repr__(self) -> str:
        return f"DepthDataset({str(self.root)!r}, {len(self._rgb)} images)"

    def __len__(self) -> int:
        return len(self._rgb)

    def names(self, split: str | None = None) -> list[str]:
        """Image names of one split (sorted), or of the whole folder when ``split`` is None."""
        if split is None:
            return sorted(self._rgb)
        if split not in SPLITS:
            raise UsageError(f"unknown split {split!r} (use train or validation)")
        return list(self._splits[split])

    def batches(self, split: str, batch_size: int) -> list[tuple[str, ...]]:
        """The split's names in consecutive groups of ``batch_size`` (the last may be shorter)."""
        if batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {batch_size}")
        names = self.names(split)
        return [tuple(names[i:i + batch_size]) for i in range(0, len(names), batch_size)]

    def paths(self, name: str) -> tuple[Path, Path]:
        """``(rgb file, depth file)`` of one image."""
        if name not in self._rgb:
            raise UsageError(f"dataset {self.root} has no image named {name!r}")
        return self._rgb[name], self._depth[name]

    def load(self, name: str) -> Sample:
        """Read one image and its depth map; errors name the file."""
        rgb_path, depth_path = self.paths(name)
        rgb = _read_rgb(rgb_path)
        depth = self._read_depth(depth_path)
        if rgb.shape[:2] != depth.shape:
            raise UsageError(f"size mismatch: {rgb_path} is {rgb.shape[1]}x{rgb.shape[0]} but {depth_path} is "
                             f"{depth.shape[1]}x{depth.shape[0]} (width x height)")
        valid = np.isfinite(depth) & (depth > 0)
        if not valid.any():
            raise UsageError(f"{depth_path} has no valid pixel (every value is 0 or not finite)")
        return Sample(name=name, rgb=rgb, depth=np.where(valid, depth, 0.0).astype(np.float32), valid=valid)

    def load_batch(self, names: tuple[str, ...] | list[str]) -> list[Sample]:
        """Load several images (one batch of :meth:`batches`)."""
        return [self.load(name) for name in names]

    def _read_depth(self, path: Path) -> np.ndarray:
        suffix = path.suffix.lower()
        if suffix == ".png":
            array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if array is None:
                raise UsageError(f"cannot read depth map {path}: not a readable PNG")
            if array.ndim != 2:
                raise UsageError(f"depth map {path} has {array.shape[2]} channels; depth PNGs have one")
            if array.dtype != np.uint16:
                raise UsageError(f"depth map {path} is {array.dtype}; depth PNGs must be 16-bit (uint16)")
            return array.astype(np.float32) * np.float32(self.depth_scale)
        if suffix == ".npy":
            try:
                array = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as error:
                raise UsageError(f"cannot read depth map {path}: {error}") from None
            if array.ndim != 2:
                raise UsageError(f"depth map {path} has shape {array.shape}; expected a 2-D array (H, W)")
            if not np.issubdtype(array.dtype, np.floating):
                raise UsageError(f"depth map {path} is {array.dtype}; .npy depth must be float metres")
            return array.astype(np.float32)
        array = read_pfm(path)
        if array.ndim != 2:
            raise UsageError(f"depth map {path} has 3 channels ('PF'); depth PFMs have one ('Pf')")
        return array


def _read_rgb(path: Path) -> np.ndarray:
    # IMREAD_UNCHANGED keeps the bit depth so a 16-bit image is reported instead of silently cut.
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UsageError(f"cannot read image {path}: not a readable {path.suffix.lstrip('.').upper()} file")
    if image.dtype != np.uint8:
        raise UsageError(f"image {path} is {image.dtype}; images must be 8-bit")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
