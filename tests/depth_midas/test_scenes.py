"""The procedural scene generator: determinism, depth geometry, the two domains, dataset writing."""

from __future__ import annotations

import math
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from retrofit import UsageError
from retrofit_depth_midas import scenes
from retrofit_depth_midas.data import DepthDataset
from retrofit_depth_midas.scenes import SHIFTED, SOURCE, SceneSettings, render, write_dataset


def test_same_seed_same_images_and_other_seed_other_images() -> None:
    rgb_a, depth_a = render(SOURCE, 3)
    rgb_b, depth_b = render(SOURCE, 3)
    assert np.array_equal(rgb_a, rgb_b) and np.array_equal(depth_a, depth_b)
    rgb_c, depth_c = render(SOURCE, 4)
    assert not np.array_equal(rgb_a, rgb_c) and not np.array_equal(depth_a, depth_c)


@pytest.mark.parametrize("settings", [SOURCE, SHIFTED], ids=["source", "shifted"])
def test_types_shapes_and_valid_depth_range(settings: SceneSettings) -> None:
    for seed in range(8):
        rgb, depth = render(settings, seed)
        assert rgb.shape == (settings.height, settings.width, 3) and rgb.dtype == np.uint8
        assert depth.shape == (settings.height, settings.width) and depth.dtype == np.float32
        assert np.isfinite(depth).all()
        valid = depth > 0
        assert valid.mean() > 0.3, "most of every image is geometry within range"
        assert depth.min() >= 0 and depth.max() <= settings.max_depth
        assert depth[valid].min() > 0.1


def test_depth_is_z_depth_of_the_floor() -> None:
    # Open floor, level camera: the floor seen at pixel row i lies at z = height * focal / (y_i),
    # where y_i is the row's distance below the image centre in pixels.
    settings = SOURCE.replace(wall_probability=0.0, boxes=(0, 0), spheres=(0, 0), camera_pitch_deg=(0.0, 0.0),
                              camera_yaw_deg=(0.0, 0.0), camera_height=(1.5, 1.5), fov_deg=(60.0, 60.0),
                              max_depth=50.0)
    _, depth = render(settings, 0)
    focal = (settings.width / 2) / math.tan(math.radians(30.0))
    for row in (settings.height - 1, settings.height - 10, settings.height // 2 + 3):
        below_centre = row + 0.5 - settings.height / 2
        expected = 1.5 * focal / below_centre
        # z-depth is the same across the row (a plane seen by a level camera).
        assert np.allclose(depth[row], expected, rtol=1e-5), row
    assert (depth[: settings.height // 2] == 0).all(), "sky above the horizon is invalid"


def test_depth_beyond_max_depth_is_invalid() -> None:
    near = SOURCE.replace(max_depth=3.0)
    _, depth = render(near, 1)
    _, full = render(SOURCE, 1)
    assert depth.max() <= 3.0
    assert np.array_equal(depth > 0, (full > 0) & (full <= 3.0))


def _statistics(settings: SceneSettings) -> dict[str, float]:
    images = [render(settings, seed)[0].astype(np.float64) for seed in range(8)]
    stack = np.stack(images)
    # Noise: mean absolute difference between horizontal neighbours (high-frequency energy).
    roughness = np.mean(np.abs(np.diff(stack, axis=2)))
    return {"red_over_blue": stack[..., 0].mean() / stack[..., 2].mean(), "roughness": roughness,
            "contrast": float(np.mean([image.std() for image in images]))}


def test_shifted_domain_differs_from_source() -> None:
    source, shifted = _statistics(SOURCE), _statistics(SHIFTED)
    assert shifted["red_over_blue"] > source["red_over_blue"] * 1.15, "warm colour cast"
    assert shifted["roughness"] > source["roughness"] * 1.5, "more sensor noise"
    assert shifted["contrast"] < source["contrast"], "fog and under-exposure flatten the image"
    assert SHIFTED.fov_deg[0] > SOURCE.fov_deg[1], "a wider lens than any source image"
    assert not np.array_equal(render(SOURCE, 5)[0], render(SHIFTED, 5)[0])


def test_render_speed(capsys: pytest.CaptureFixture[str]) -> None:
    render(SOURCE, 0)
    start = time.perf_counter()
    for seed in range(20):
        render(SOURCE, seed)
    per_image = (time.perf_counter() - start) / 20
    with capsys.disabled():
        print(f"\nrender {SOURCE.width}x{SOURCE.height}: {per_image * 1000:.1f} ms per image")


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="fog_density"):
        SceneSettings(fog_density=(0.2, 0.1))
    with pytest.raises(ValueError, match="too small"):
        SceneSettings(width=4)


@pytest.mark.parametrize("depth_format", ["png16", "npy", "pfm"])
def test_write_dataset_round_trips(tmp_path: Path, depth_format: str) -> None:
    small = SOURCE.replace(width=48, height=32)
    write_dataset(tmp_path / "d", small, count=5, seed=7, validation_fraction=0.4, depth_format=depth_format)  # type: ignore[arg-type]
    dataset = DepthDataset(tmp_path / "d")
    assert tomllib.loads((tmp_path / "d" / "dataset.toml").read_text())["generator"].get("preset") is None
    assert dataset.names("train") == ["00000", "00001", "00002"]
    assert dataset.names("validation") == ["00003", "00004"]
    sample = dataset.load("00003")
    rgb, depth = render(small, scenes.image_seed(7, 3))
    assert np.array_equal(sample.rgb, rgb)
    tolerance = 0.0005 + 1e-6 if depth_format == "png16" else 0.0
    assert np.abs(sample.depth - depth).max() <= tolerance
    assert np.array_equal(sample.valid, depth > 0)


def test_write_dataset_refuses_a_folder_with_images(tmp_path: Path) -> None:
    small = SOURCE.replace(width=32, height=32)
    write_dataset(tmp_path, SOURCE, count=1)
    assert tomllib.loads((tmp_path / "dataset.toml").read_text())["generator"]["preset"] == "source"
    with pytest.raises(UsageError, match="already holds files"):
        write_dataset(tmp_path, small, count=1)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "shifted"
    assert scenes.main([str(out), "--preset", "shifted", "--count", "3", "--seed", "1", "--width", "40",
                        "--height", "32"]) == 0
    assert "wrote 3 shifted scenes" in capsys.readouterr().out
    dataset = DepthDataset(out)
    assert len(dataset) == 3 and dataset.load("00000").rgb.shape == (32, 40, 3)
    generator = tomllib.loads((out / "dataset.toml").read_text())["generator"]
    assert generator["seed"] == 1 and generator["settings"]["fov_deg"] == list(SHIFTED.fov_deg)
    assert scenes.main([str(out), "--count", "1"]) == 2
    assert "already holds files" in capsys.readouterr().err
