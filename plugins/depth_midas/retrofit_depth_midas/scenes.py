"""Procedural RGB-D scenes: a small numpy ray caster that writes depth datasets.

Every image is a room (or an open floor under the sky) seen by a pinhole camera, with textured
boxes and spheres on the floor, a directional light plus ambient light (Lambert shading, hard
shadows from the objects), optional exponential fog, an exposure and colour cast, and sensor
noise. Depth is the z-depth along the optical axis in metres, 0 where nothing is hit within
``max_depth`` (sky, far floor).

:data:`SOURCE` and :data:`SHIFTED` are the two domains of the depth demo: a network trained on
SOURCE images misjudges SHIFTED ones systematically (wider field of view, fog, darker and warmer
exposure, more noise), and recalibrating its input statistics or output shape can partly fix it.

Usage: ``python -m retrofit_depth_midas.scenes OUT --preset shifted --count 64 --seed 1``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

Range = tuple[float, float]
"""A closed interval ``(low, high)``; each image draws its value uniformly from it."""

Texture = Literal["checker", "stripes", "noise", "plain"]
DepthFormat = Literal["png16", "npy", "pfm"]

_EPS = 1e-6


@dataclass(frozen=True)
class SceneSettings:
    """Every knob of the generator. Ranges are drawn uniformly per image."""

    width: int = 128
    height: int = 96
    fov_deg: Range = (55.0, 65.0)
    """Horizontal field of view."""
    camera_height: Range = (1.2, 1.8)
    camera_pitch_deg: Range = (-16.0, -6.0)
    """Negative looks down."""
    camera_yaw_deg: Range = (-12.0, 12.0)
    room_width: Range = (6.0, 10.0)
    room_depth: Range = (6.0, 11.0)
    """Distance from the camera to the back wall."""
    wall_height: Range = (2.5, 4.0)
    wall_probability: float = 0.8
    """Share of indoor scenes; the rest is an open floor under the sky (invalid depth there)."""
    max_depth: float = 10.0
    """Depth beyond this is written as 0 (invalid); it matches the protocol's default depth cap."""
    boxes: tuple[int, int] = (2, 5)
    spheres: tuple[int, int] = (1, 3)
    object_size: Range = (0.3, 1.4)
    """Box side lengths and sphere diameters, metres."""
    floating_probability: float = 0.2
    """Share of spheres that float above the floor instead of resting on it."""
    textures: tuple[Texture, ...] = ("checker", "stripes", "noise", "plain")
    texture_frequency: Range = (0.8, 4.0)
    """Pattern repeats per metre."""
    texture_contrast: Range = (0.2, 0.7)
    light_elevation_deg: Range = (30.0, 75.0)
    light_intensity: Range = (0.7, 1.0)
    ambient: Range = (0.2, 0.35)
    shadows: bool = True
    fog_density: Range = (0.0, 0.0)
    """Extinction per metre: a pixel at distance r keeps exp(-density * r) of its colour."""
    fog_colour: tuple[float, float, float] = (0.72, 0.74, 0.78)
    exposure_ev: Range = (0.0, 0.0)
    """Exposure change in stops (-1 halves the light)."""
    colour_gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Per-channel white-balance gains (R, G, B): a colour cast."""
    noise_std: Range = (0.004, 0.012)
    """Gaussian sensor noise, in units of full scale, added after gamma."""
    gamma: float = 2.2

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8:
            raise ValueError(f"image size {self.width}x{self.height} is too small (at least 8x8)")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in ("fog_colour", "colour_gains", "textures"):
                continue
            if isinstance(value, tuple) and len(value) == 2 and value[0] > value[1]:
                raise ValueError(f"SceneSettings.{field.name}: low {value[0]} is above high {value[1]}")
        if not self.textures:
            raise ValueError("SceneSettings.textures is empty")
        if self.max_depth <= 0:
            raise ValueError("SceneSettings.max_depth must be positive")

    def replace(self, **changes: Any) -> SceneSettings:
        """A copy with some knobs changed (e.g. ``SOURCE.replace(width=256, height=192)``)."""
        return dataclasses.replace(self, **changes)


SOURCE = SceneSettings()
"""The domain a depth network is trained on: moderate field of view, clear air, neutral light."""

SHIFTED = SceneSettings(
    fov_deg=(80.0, 95.0),
    fog_density=(0.06, 0.14),
    exposure_ev=(-1.3, -0.6),
    colour_gains=(1.15, 0.97, 0.72),
    noise_std=(0.02, 0.04),
)
"""The deployment domain: wide-angle lens, fog, under-exposed with a warm cast, noisier sensor."""

PRESETS: dict[str, SceneSettings] = {"source": SOURCE, "shifted": SHIFTED}


# --- geometry --------------------------------------------------------------------------------
# Rays are (N, 3) arrays. Primary ray directions are scaled so that dir . forward == 1: the ray
# parameter t of a hit is then its z-depth directly, and fog distance is t * |dir|.


@dataclass(frozen=True)
class _Surface:
    """Texture and colour of one surface."""

    texture: str
    frequency: float
    angle: float
    colour_a: np.ndarray
    colour_b: np.ndarray
    lattice: np.ndarray  # value-noise lattice, used by the "noise" texture


@dataclass(frozen=True)
class _Box:
    centre: np.ndarray
    half: np.ndarray
    yaw: float
    surface: _Surface

    def rotation(self) -> np.ndarray:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        # Columns are the box's local axes in world coordinates (a rotation about y).
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


@dataclass(frozen=True)
class _Sphere:
    centre: np.ndarray
    radius: float
    surface: _Surface


@dataclass(frozen=True)
class _Plane:
    """The plane ``point . normal == offset`` limited to a rectangle (walls) or unbounded (floor)."""

    normal: np.ndarray
    offset: float
    surface: _Surface
    limits: tuple[tuple[int, float, float], ...] = ()  # (axis, low, high) bounds of the hit point
    uv_axes: tuple[int, int] = (0, 2)


def _hit_plane(origin: np.ndarray, direction: np.ndarray, plane: _Plane) -> np.ndarray:
    denominator = direction @ plane.normal
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (plane.offset - origin @ plane.normal) / denominator
    t = np.where(t > _EPS, t, np.inf)
    if plane.limits:
        point = origin + direction * t[:, None]
        for axis, low, high in plane.limits:
            t = np.where((point[:, axis] >= low) & (point[:, axis] <= high), t, np.inf)
    return t


def _hit_sphere(origin: np.ndarray, direction: np.ndarray, sphere: _Sphere) -> np.ndarray:
    oc = origin - sphere.centre
    a = np.einsum("ij,ij->i", direction, direction)
    half_b = direction @ oc if oc.ndim == 1 else np.einsum("ij,ij->i", direction, oc)
    c = (oc @ oc if oc.ndim == 1 else np.einsum("ij,ij->i", oc, oc)) - sphere.radius**2
    discriminant = half_b * half_b - a * c
    root = np.sqrt(np.maximum(discriminant, 0.0))
    near = (-half_b - root) / a
    far = (-half_b + root) / a
    t = np.where(near > _EPS, near, np.where(far > _EPS, far, np.inf))
    return np.where(discriminant >= 0.0, t, np.inf)


def _hit_box(origin: np.ndarray, direction: np.ndarray, box: _Box) -> np.ndarray:
    rotation = box.rotation()
    # Slab method in the box's frame, one axis at a time on contiguous columns (much faster than
    # reducing over the last axis of an (N, 3) array).
    local_origin = np.atleast_2d((origin - box.centre) @ rotation).T
    local_direction = np.ascontiguousarray((direction @ rotation).T)
    t_enter = np.full(len(direction), -np.inf)
    t_exit = np.full(len(direction), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in range(3):
            inverse = 1.0 / local_direction[axis]
            t1 = (-box.half[axis] - local_origin[axis]) * inverse
            t2 = (box.half[axis] - local_origin[axis]) * inverse
            # fmin/fmax skip the NaN of 0 * inf (a ray exactly on a face plane).
            t_enter = np.fmax(t_enter, np.fmin(t1, t2))
            t_exit = np.fmin(t_exit, np.fmax(t1, t2))
    hit = (t_exit >= t_enter) & (t_enter > _EPS)
    return np.where(hit, t_enter, np.inf)


def _box_normal_uv(point: np.ndarray, box: _Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rotation = box.rotation()
    local = (point - box.centre) @ rotation
    # The face hit is the axis where the point is closest to the box's extent.
    axis = np.argmax(np.abs(local) / box.half, axis=1)
    sign = np.sign(local[np.arange(len(local)), axis])
    normal_local = np.zeros_like(local)
    normal_local[np.arange(len(local)), axis] = sign
    # Texture coordinates: the two local coordinates of the face's plane.
    u = np.where(axis == 0, local[:, 2], local[:, 0])
    v = np.where(axis == 1, local[:, 2], local[:, 1])
    return normal_local @ rotation.T, u, v


def _sphere_normal_uv(point: np.ndarray, sphere: _Sphere) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    normal = (point - sphere.centre) / sphere.radius
    u = np.arctan2(normal[:, 0], normal[:, 2]) * sphere.radius
    v = np.arcsin(np.clip(normal[:, 1], -1.0, 1.0)) * sphere.radius
    return normal, u, v


def _plane_normal_uv(point: np.ndarray, plane: _Plane) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    normal = np.broadcast_to(plane.normal, point.shape)
    return normal, point[:, plane.uv_axes[0]], point[:, plane.uv_axes[1]]


# --- textures --------------------------------------------------------------------------------

def _value_noise(lattice: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smooth noise in [0, 1]: bilinear interpolation of a wrapped random lattice with smoothstep."""
    size = lattice.shape[0]
    u0, v0 = np.floor(u), np.floor(v)
    fu, fv = u - u0, v - v0
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    i0, j0 = u0.astype(np.int64) % size, v0.astype(np.int64) % size
    i1, j1 = (i0 + 1) % size, (j0 + 1) % size
    top = lattice[i0, j0] * (1 - fu) + lattice[i1, j0] * fu
    bottom = lattice[i0, j1] * (1 - fu) + lattice[i1, j1] * fu
    return top * (1 - fv) + bottom * fv


def _pattern(surface: _Surface, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mixing weight in [0, 1] between the surface's two colours."""
    f = surface.frequency
    if surface.texture == "checker":
        return ((np.floor(u * f) + np.floor(v * f)) % 2).astype(np.float64)
    if surface.texture == "stripes":
        along = u * math.cos(surface.angle) + v * math.sin(surface.angle)
        return (np.mod(along * f, 1.0) < 0.5).astype(np.float64)
    if surface.texture == "noise":
        # Two octaves so the texture has detail at several scales.
        coarse = _value_noise(surface.lattice, u * f, v * f)
        fine = _value_noise(surface.lattice.T, u * f * 4.0, v * f * 4.0)
        return 0.7 * coarse + 0.3 * fine
    return np.zeros_like(u)


def _albedo(surface: _Surface, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    weight = _pattern(surface, u, v)[:, None]
    return surface.colour_a * (1 - weight) + surface.colour_b * weight


# --- scene sampling --------------------------------------------------------------------------

class _Sampler:
    """Draws every random quantity of one scene from one generator, in a fixed order."""

    def __init__(self, settings: SceneSettings, seed: int) -> None:
        self.settings = settings
        self.rng = np.random.default_rng(seed)

    def uniform(self, bounds: Range) -> float:
        # Draw even for empty ranges so that the draw order never depends on the settings.
        return float(bounds[0] + (bounds[1] - bounds[0]) * self.rng.random())

    def integer(self, bounds: tuple[int, int]) -> int:
        return int(bounds[0] + math.floor(self.rng.random() * (bounds[1] - bounds[0] + 1)))

    def surface(self) -> _Surface:
        s = self.settings
        texture = s.textures[int(self.rng.integers(len(s.textures)))]
        base = self.rng.uniform(0.15, 0.85, 3)
        contrast = self.uniform(s.texture_contrast)
        other = np.clip(base * (1 - contrast) + self.rng.uniform(0.0, 1.0, 3) * contrast, 0.02, 0.95)
        return _Surface(texture=texture, frequency=self.uniform(s.texture_frequency),
                        angle=float(self.rng.uniform(0, math.pi)), colour_a=base, colour_b=other,
                        lattice=self.rng.random((16, 16)))


def _build_scene(sampler: _Sampler) -> tuple[list[_Plane], list[_Box], list[_Sphere]]:
    s = sampler.settings
    width, depth, height = sampler.uniform(s.room_width), sampler.uniform(s.room_depth), sampler.uniform(s.wall_height)
    indoor = sampler.rng.random() < s.wall_probability
    planes = [_Plane(normal=np.array([0.0, 1.0, 0.0]), offset=0.0, surface=sampler.surface(), uv_axes=(0, 2))]
    wall_surfaces = [sampler.surface() for _ in range(3)]
    if indoor:
        half = width / 2
        x_limit, z_limit = (0, -half, half), (2, -2.0, depth)
        y_limit = (1, 0.0, height)
        planes += [
            _Plane(np.array([0.0, 0.0, -1.0]), -depth, wall_surfaces[0], (x_limit, y_limit), uv_axes=(0, 1)),
            _Plane(np.array([1.0, 0.0, 0.0]), -half, wall_surfaces[1], (z_limit, y_limit), uv_axes=(2, 1)),
            _Plane(np.array([-1.0, 0.0, 0.0]), -half, wall_surfaces[2], (z_limit, y_limit), uv_axes=(2, 1)),
        ]
    x_range = (-width / 2 + 0.4, width / 2 - 0.4)
    z_range = (1.8, max(2.0, depth - 0.6))
    boxes = []
    for _ in range(sampler.integer(s.boxes)):
        size = np.array([sampler.uniform(s.object_size) for _ in range(3)])
        centre = np.array([sampler.uniform(x_range), size[1] / 2, sampler.uniform(z_range)])
        boxes.append(_Box(centre, size / 2, float(sampler.rng.uniform(0, math.pi / 2)), sampler.surface()))
    spheres = []
    for _ in range(sampler.integer(s.spheres)):
        radius = sampler.uniform(s.object_size) / 2
        lift = sampler.uniform((0.3, 1.2)) if sampler.rng.random() < s.floating_probability else 0.0
        centre = np.array([sampler.uniform(x_range), radius + lift, sampler.uniform(z_range)])
        spheres.append(_Sphere(centre, radius, sampler.surface()))
    return planes, boxes, spheres


def _camera_rays(settings: SceneSettings, fov_deg: float, pitch: float, yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """Ray directions (H*W, 3) with ``dir . forward == 1``, and the forward axis."""
    forward = np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    right = np.array([math.cos(yaw), 0.0, -math.sin(yaw)])
    up = np.cross(forward, right)
    w, h = settings.width, settings.height
    focal = (w / 2) / math.tan(math.radians(fov_deg) / 2)  # pixels; square pixels
    xs = (np.arange(w) + 0.5 - w / 2) / focal
    ys = -(np.arange(h) + 0.5 - h / 2) / focal
    grid_x, grid_y = np.meshgrid(xs, ys)
    directions = forward + grid_x.reshape(-1, 1) * right + grid_y.reshape(-1, 1) * up
    return directions, forward


def render(settings: SceneSettings = SOURCE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene: ``(rgb uint8 HxWx3 RGB, depth float32 HxW in metres, 0 = invalid)``.

    The same ``(settings, seed)`` always gives the same images. Because every draw happens in a
    fixed order, SOURCE and SHIFTED with the same seed show the same layout under different
    cameras and conditions.
    """
    s = settings
    sampler = _Sampler(s, seed)
    fov = sampler.uniform(s.fov_deg)
    camera = np.array([sampler.uniform((-0.5, 0.5)), sampler.uniform(s.camera_height), 0.0])
    pitch = math.radians(sampler.uniform(s.camera_pitch_deg))
    yaw = math.radians(sampler.uniform(s.camera_yaw_deg))
    planes, boxes, spheres = _build_scene(sampler)

    elevation = math.radians(sampler.uniform(s.light_elevation_deg))
    azimuth = sampler.rng.uniform(-math.pi, math.pi)
    light = np.array([math.cos(elevation) * math.sin(azimuth), math.sin(elevation),
                      math.cos(elevation) * math.cos(azimuth)])
    intensity, ambient = sampler.uniform(s.light_intensity), sampler.uniform(s.ambient)
    fog_density, exposure = sampler.uniform(s.fog_density), sampler.uniform(s.exposure_ev)
    noise_std = sampler.uniform(s.noise_std)
    noise_seed = int(sampler.rng.integers(2**63))

    directions, _ = _camera_rays(s, fov, pitch, yaw)
    count = len(directions)

    # Nearest hit over every object; `owner` indexes `objects` (-1 = sky).
    objects: list[tuple[Any, Callable[..., np.ndarray], Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]]] = [
        *((p, _hit_plane, _plane_normal_uv) for p in planes),
        *((b, _hit_box, _box_normal_uv) for b in boxes),
        *((sp, _hit_sphere, _sphere_normal_uv) for sp in spheres),
    ]
    nearest = np.full(count, np.inf)
    owner = np.full(count, -1)
    for index, (shape, hit, _) in enumerate(objects):
        t = hit(camera, directions, shape)
        closer = t < nearest
        nearest[closer] = t[closer]
        owner[closer] = index

    hit_any = owner >= 0
    ray_length = np.linalg.norm(directions, axis=1)
    colour = np.empty((count, 3))
    # Sky: a vertical gradient from a pale horizon to a blue zenith.
    elevation_of_ray = directions[:, 1] / ray_length
    sky_weight = np.clip(elevation_of_ray * 2.0, 0.0, 1.0)[:, None]
    colour[:] = np.array([0.78, 0.82, 0.88]) * (1 - sky_weight) + np.array([0.35, 0.5, 0.85]) * sky_weight

    points = camera + directions * np.where(hit_any, nearest, 0.0)[:, None]
    normals = np.zeros((count, 3))
    for index, (shape, _, normal_uv) in enumerate(objects):
        mine = owner == index
        if not mine.any():
            continue
        normal, u, v = normal_uv(points[mine], shape)
        normals[mine] = normal
        colour[mine] = _albedo(shape.surface, u, v)
    albedo = colour[hit_any]

    lit = np.clip(normals[hit_any] @ light, 0.0, None)
    if s.shadows and (boxes or spheres):
        # Hard shadows: a shadow ray towards the light from every lit point, against the objects.
        lit_index = np.flatnonzero(hit_any)[lit > 0]
        origins = points[lit_index] + normals[lit_index] * 1e-3
        towards = np.broadcast_to(light, origins.shape)
        blocked = np.zeros(len(lit_index), dtype=bool)
        for shape in (*boxes, *spheres):
            hit = _hit_box if isinstance(shape, _Box) else _hit_sphere
            blocked |= np.isfinite(hit(origins, towards, shape))
        shadowed = np.zeros(count, dtype=bool)
        shadowed[lit_index[blocked]] = True
        lit = np.where(shadowed[hit_any], 0.0, lit)
    colour[hit_any] = albedo * (ambient + intensity * lit)[:, None]

    if fog_density > 0:
        # Exponential fog over the Euclidean distance; the sky is fully fogged.
        distance = np.where(hit_any, nearest * ray_length, np.inf)
        keep = np.exp(-fog_density * distance)[:, None]
        colour = colour * keep + np.asarray(s.fog_colour) * (1 - keep)

    colour = colour * (2.0**exposure) * np.asarray(s.colour_gains)
    display = np.clip(colour, 0.0, 1.0) ** (1.0 / s.gamma)
    if noise_std > 0:
        display = display + np.random.default_rng(noise_seed).normal(0.0, noise_std, display.shape)
    rgb = np.clip(np.round(display * 255.0), 0, 255).astype(np.uint8).reshape(s.height, s.width, 3)

    depth = np.where(hit_any & (nearest <= s.max_depth), nearest, 0.0)
    return rgb, depth.astype(np.float32).reshape(s.height, s.width)


# --- dataset writing -------------------------------------------------------------------------

def image_seed(seed: int, index: int) -> int:
    """The render seed of image ``index`` of a dataset written with ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0])


def write_dataset(folder: str | Path, settings: SceneSettings = SOURCE, count: int = 64, seed: int = 0,
                  validation_fraction: float = 0.5, depth_format: DepthFormat = "png16",
                  depth_scale: float = 0.001) -> Path:
    """Render ``count`` scenes into ``folder`` in the dataset folder format of :mod:`.data`.

    Images are ``rgb/00000.png`` ..., depth maps ``depth/00000.<png|npy|pfm>``; ``dataset.toml``
    holds the depth scale, the split (the last ``round(count * validation_fraction)`` images are
    the validation split) and the generator settings. Refuses a folder that already holds images.
    """
    from retrofit import UsageError

    from . import data

    if count < 1:
        raise UsageError(f"count must be at least 1, got {count}")
    if not 0.0 <= validation_fraction <= 1.0:
        raise UsageError(f"validation_fraction must be within [0, 1], got {validation_fraction}")
    if depth_format not in ("png16", "npy", "pfm"):
        raise UsageError(f"unknown depth format {depth_format!r} (use png16, npy or pfm)")
    root = Path(folder)
    for sub in ("rgb", "depth"):
        if (root / sub).is_dir() and any((root / sub).iterdir()):
            raise UsageError(f"{root / sub} already holds files; write the dataset into an empty folder")
    (root / "rgb").mkdir(parents=True, exist_ok=True)
    (root / "depth").mkdir(parents=True, exist_ok=True)

    names = [f"{index:05d}" for index in range(count)]
    for index, name in enumerate(names):
        rgb, depth = render(settings, image_seed(seed, index))
        data.write_sample(root, name, rgb, depth, depth_format=depth_format, depth_scale=depth_scale)
    validation_count = round(count * validation_fraction)
    splits = {"train": names[: count - validation_count], "validation": names[count - validation_count:]}
    generator: dict[str, Any] = {"seed": seed, "count": count}
    preset = next((name for name, known in PRESETS.items() if known == settings), None)
    if preset is not None:
        generator["preset"] = preset
    generator["settings"] = _settings_table(settings)
    data.write_manifest(root, depth_scale=depth_scale, splits=splits, generator=generator)
    return root


def _settings_table(settings: SceneSettings) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(settings).items()}


def main(argv: list[str] | None = None) -> int:
    """Command line: write a procedural dataset folder."""
    parser = argparse.ArgumentParser(prog="python -m retrofit_depth_midas.scenes",
                                     description="Render a procedural RGB-D dataset folder.")
    parser.add_argument("out", type=Path, help="folder to write (created; must not hold images yet)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="source")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation-fraction", type=float, default=0.5)
    parser.add_argument("--depth-format", choices=["png16", "npy", "pfm"], default="png16")
    parser.add_argument("--width", type=int, help="override the preset's image width")
    parser.add_argument("--height", type=int, help="override the preset's image height")
    args = parser.parse_args(argv)

    from retrofit import UsageError

    settings = PRESETS[args.preset]
    if args.width is not None or args.height is not None:
        try:
            settings = settings.replace(width=args.width or settings.width, height=args.height or settings.height)
        except ValueError as error:
            parser.error(str(error))
    start = time.perf_counter()
    try:
        write_dataset(args.out, settings, args.count, args.seed, args.validation_fraction, args.depth_format)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    print(f"wrote {args.count} {args.preset} scenes ({settings.width}x{settings.height}) to {args.out} "
          f"in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
