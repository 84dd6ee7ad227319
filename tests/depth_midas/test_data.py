"""The dataset folder format: the three depth encodings, splits, PFM, and every error naming its file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from retrofit import UsageError
from retrofit_depth_midas.data import DepthDataset, read_pfm, write_manifest, write_pfm, write_sample


def _image(height: int = 12, width: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 9.0, (height, width)).astype(np.float32)
    depth[0, :3] = 0.0  # invalid pixels
    return rgb, depth


def _folder(root: Path, count: int = 3, **options: object) -> Path:
    for index in range(count):
        write_sample(root, f"im{index}", *_image(seed=index), **options)  # type: ignore[arg-type]
    return root


@pytest.mark.parametrize("depth_format", ["png16", "npy", "pfm"])
def test_round_trip_of_every_depth_format(tmp_path: Path, depth_format: str) -> None:
    rgb, depth = _image()
    write_sample(tmp_path, "a", rgb, depth, depth_format=depth_format)  # type: ignore[arg-type]
    sample = DepthDataset(tmp_path).load("a")
    assert sample.name == "a" and np.array_equal(sample.rgb, rgb)
    assert sample.depth.dtype == np.float32 and sample.valid.dtype == bool
    tolerance = 0.0005 + 1e-6 if depth_format == "png16" else 0.0  # millimetre quantisation
    assert np.abs(sample.depth - depth).max() <= tolerance
    assert np.array_equal(sample.valid, depth > 0)
    assert (sample.depth[~sample.valid] == 0).all()


def test_png16_uses_the_declared_scale(tmp_path: Path) -> None:
    rgb, _ = _image()
    units = np.full((12, 16), 1000, np.uint16)
    units[0, 0] = 0
    (tmp_path / "rgb").mkdir()
    (tmp_path / "depth").mkdir()
    cv2.imwrite(str(tmp_path / "rgb" / "a.png"), rgb[..., ::-1])
    cv2.imwrite(str(tmp_path / "depth" / "a.png"), units)
    assert DepthDataset(tmp_path).load("a").depth[1, 1] == pytest.approx(1.0)  # default: millimetres
    write_manifest(tmp_path, depth_scale=0.005)
    sample = DepthDataset(tmp_path).load("a")
    assert sample.depth[1, 1] == pytest.approx(5.0) and not sample.valid[0, 0]


def test_jpeg_and_grey_images_load_as_rgb(tmp_path: Path) -> None:
    _, depth = _image()
    (tmp_path / "rgb").mkdir()
    (tmp_path / "depth").mkdir()
    cv2.imwrite(str(tmp_path / "rgb" / "grey.png"), np.full((12, 16), 77, np.uint8))
    cv2.imwrite(str(tmp_path / "rgb" / "photo.jpg"), np.full((12, 16, 3), (10, 20, 200), np.uint8))  # BGR
    for name in ("grey", "photo"):
        np.save(tmp_path / "depth" / f"{name}.npy", depth)
    dataset = DepthDataset(tmp_path)
    assert (dataset.load("grey").rgb == 77).all()
    photo = dataset.load("photo").rgb
    assert photo.shape == (12, 16, 3) and abs(int(photo[5, 5, 0]) - 200) < 8  # red first


def test_pfm_round_trip_and_big_endian(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.float32).reshape(3, 4)
    colour = np.arange(36, dtype=np.float32).reshape(3, 4, 3)
    write_pfm(tmp_path / "g.pfm", grey)
    write_pfm(tmp_path / "c.pfm", colour)
    assert np.array_equal(read_pfm(tmp_path / "g.pfm"), grey)
    assert np.array_equal(read_pfm(tmp_path / "c.pfm"), colour)
    # Big-endian (positive scale), rows stored bottom to top.
    (tmp_path / "b.pfm").write_bytes(b"Pf\n4 3\n1.0\n" + grey[::-1].astype(">f4").tobytes())
    assert np.array_equal(read_pfm(tmp_path / "b.pfm"), grey)


def test_malformed_pfm_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "x.pfm").write_bytes(b"P6\n4 3\n255\n")
    with pytest.raises(UsageError, match=r"x\.pfm is not a PFM"):
        read_pfm(tmp_path / "x.pfm")
    (tmp_path / "t.pfm").write_bytes(b"Pf\n4 3\n-1.0\n" + b"\0" * 8)
    with pytest.raises(UsageError, match=r"t\.pfm is truncated"):
        read_pfm(tmp_path / "t.pfm")


def test_split_from_dataset_toml(tmp_path: Path) -> None:
    _folder(tmp_path, 4)
    write_manifest(tmp_path, splits={"train": ["im2", "im0"], "validation": ["im3"]})
    dataset = DepthDataset(tmp_path)
    assert dataset.names("train") == ["im0", "im2"]
    assert dataset.names("validation") == ["im3"]
    assert dataset.names() == ["im0", "im1", "im2", "im3"]
    assert dataset.batches("train", 1) == [("im0",), ("im2",)]


def test_hashed_split_is_deterministic_and_complete(tmp_path: Path) -> None:
    _folder(tmp_path, 30)
    first, again = DepthDataset(tmp_path), DepthDataset(tmp_path)
    train, validation = first.names("train"), first.names("validation")
    assert train == again.names("train") and validation == again.names("validation")
    assert sorted(train + validation) == first.names() and not set(train) & set(validation)
    assert 5 <= len(validation) <= 25
    # Adding images never moves an existing one to the other split.
    write_sample(tmp_path, "zz_new", *_image())
    assert set(validation) <= set(DepthDataset(tmp_path).names("validation"))
    assert DepthDataset(tmp_path, validation_fraction=0.0).names("validation") == []


def test_batches(tmp_path: Path) -> None:
    _folder(tmp_path, 5)
    write_manifest(tmp_path, splits={"train": [f"im{i}" for i in range(5)], "validation": []})
    dataset = DepthDataset(tmp_path)
    batches = dataset.batches("train", 2)
    assert batches == [("im0", "im1"), ("im2", "im3"), ("im4",)]
    samples = dataset.load_batch(batches[0])
    assert [s.name for s in samples] == ["im0", "im1"]
    with pytest.raises(UsageError, match="batch size"):
        dataset.batches("train", 0)
    with pytest.raises(UsageError, match="unknown split 'test'"):
        dataset.names("test")


# --- errors, each naming the file ------------------------------------------------------------

def test_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        DepthDataset(tmp_path / "nowhere")
    (tmp_path / "rgb").mkdir()
    with pytest.raises(UsageError, match="no depth/ folder"):
        DepthDataset(tmp_path)
    (tmp_path / "depth").mkdir()
    with pytest.raises(UsageError, match="holds no images"):
        DepthDataset(tmp_path)


def test_image_without_depth_and_depth_without_image(tmp_path: Path) -> None:
    _folder(tmp_path, 2)
    (tmp_path / "depth" / "im1.png").unlink()
    with pytest.raises(UsageError, match=r"rgb/im1\.png has no depth map"):
        DepthDataset(tmp_path)
    (tmp_path / "rgb" / "im1.png").unlink()
    np.save(tmp_path / "depth" / "lonely.npy", np.ones((2, 2), np.float32))
    with pytest.raises(UsageError, match=r"depth/lonely\.npy has no image"):
        DepthDataset(tmp_path)


def test_duplicate_names_and_unsupported_files(tmp_path: Path) -> None:
    _folder(tmp_path, 1)
    np.save(tmp_path / "depth" / "im0.npy", np.ones((12, 16), np.float32))
    with pytest.raises(UsageError, match=r"im0\.npy and .*im0\.png|im0\.png and .*im0\.npy"):
        DepthDataset(tmp_path)
    (tmp_path / "depth" / "im0.npy").unlink()
    (tmp_path / "rgb" / "notes.txt").write_text("hello")
    with pytest.raises(UsageError, match=r"notes\.txt: unsupported image file type"):
        DepthDataset(tmp_path)
    (tmp_path / "rgb" / "notes.txt").unlink()
    (tmp_path / "rgb" / ".DS_Store").write_text("ignored")
    assert len(DepthDataset(tmp_path)) == 1


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    rgb, _ = _image(12, 16)
    _, depth = _image(10, 16)
    write_sample(tmp_path, "a", rgb, depth, depth_format="npy")
    dataset = DepthDataset(tmp_path)  # opening is cheap: sizes are checked on load
    with pytest.raises(UsageError, match=r"rgb/a\.png is 16x12 but .*depth/a\.npy is 16x10"):
        dataset.load("a")


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    _folder(tmp_path, 1)
    (tmp_path / "rgb" / "im0.png").write_bytes(b"not a png at all")
    with pytest.raises(UsageError, match=r"cannot read image .*rgb/im0\.png"):
        DepthDataset(tmp_path).load("im0")


def test_unreadable_depth_png_names_the_file(tmp_path: Path) -> None:
    _folder(tmp_path, 1)
    (tmp_path / "depth" / "im0.png").write_bytes(b"garbage")
    with pytest.raises(UsageError, match=r"cannot read depth map .*depth/im0\.png"):
        DepthDataset(tmp_path).load("im0")


def test_wrong_depth_types_name_the_file(tmp_path: Path) -> None:
    rgb, _ = _image()
    write_sample(tmp_path, "eight", rgb, np.ones((12, 16)), depth_format="npy")
    (tmp_path / "depth" / "eight.npy").unlink()
    cv2.imwrite(str(tmp_path / "depth" / "eight.png"), np.full((12, 16), 9, np.uint8))
    write_sample(tmp_path, "ints", rgb, np.ones((12, 16)), depth_format="npy")
    np.save(tmp_path / "depth" / "ints.npy", np.ones((12, 16), np.int32))
    write_sample(tmp_path, "cube", rgb, np.ones((12, 16)), depth_format="npy")
    np.save(tmp_path / "depth" / "cube.npy", np.ones((12, 16, 2), np.float32))
    write_sample(tmp_path, "colour", rgb, np.ones((12, 16)), depth_format="pfm")
    write_pfm(tmp_path / "depth" / "colour.pfm", np.ones((12, 16, 3), np.float32))
    write_sample(tmp_path, "bgr", rgb, np.ones((12, 16)), depth_format="npy")
    (tmp_path / "depth" / "bgr.npy").unlink()
    cv2.imwrite(str(tmp_path / "depth" / "bgr.png"), np.ones((12, 16, 3), np.uint16))
    write_sample(tmp_path, "empty", rgb, np.zeros((12, 16)), depth_format="npy")
    dataset = DepthDataset(tmp_path)
    cases = {
        "eight": r"depth/eight\.png is uint8; depth PNGs must be 16-bit",
        "ints": r"depth/ints\.npy is int32; \.npy depth must be float",
        "cube": r"depth/cube\.npy has shape \(12, 16, 2\)",
        "colour": r"depth/colour\.pfm has 3 channels",
        "bgr": r"depth/bgr\.png has 3 channels",
        "empty": r"depth/empty\.npy has no valid pixel",
    }
    for name, message in cases.items():
        with pytest.raises(UsageError, match=message):
            dataset.load(name)


def test_sixteen_bit_rgb_is_refused(tmp_path: Path) -> None:
    _folder(tmp_path, 1)
    cv2.imwrite(str(tmp_path / "rgb" / "im0.png"), np.ones((12, 16, 3), np.uint16))
    with pytest.raises(UsageError, match=r"rgb/im0\.png is uint16; images must be 8-bit"):
        DepthDataset(tmp_path).load("im0")


@pytest.mark.parametrize(("manifest", "message"), [
    ("depth_scale = 0.001\nsplitz = 1\n", "unknown key 'splitz'"),
    ("depth_scale = -1.0\n", "depth_scale must be positive"),
    ("[splits]\ntest = []\n", "unknown split 'test'"),
    ('[splits]\ntrain = ["im0", "ghost"]\n', "names 'ghost', but rgb/ has no such image"),
    ('[splits]\ntrain = ["im0"]\nvalidation = ["im0"]\n', "'im0' is in both"),
    ('[splits]\ntrain = ["im0", "im0"]\n', "lists an image twice"),
    ("[splits]\ntrain = 3\n", "must be a list of image names"),
    ("validation_fraction = 2.0\n", "validation_fraction must be within"),
    ("depth_scale = \n", "is not valid TOML"),
])
def test_bad_dataset_toml_names_the_file(tmp_path: Path, manifest: str, message: str) -> None:
    _folder(tmp_path, 2)
    (tmp_path / "dataset.toml").write_text(manifest)
    with pytest.raises(UsageError, match=message) as raised:
        DepthDataset(tmp_path)
    assert "dataset.toml" in str(raised.value)


def test_unknown_name(tmp_path: Path) -> None:
    _folder(tmp_path, 1)
    with pytest.raises(UsageError, match="no image named 'x'"):
        DepthDataset(tmp_path).load("x")


def test_manifest_round_trips_through_toml(tmp_path: Path) -> None:
    import tomllib

    _folder(tmp_path, 1)
    names = [f"image_{i:04d}" for i in range(40)]  # long enough to be wrapped
    write_manifest(tmp_path, depth_scale=0.0025, description='caf\u00e9 "quoted"\n\U0001F600',
                   splits={"train": names, "validation": []}, generator={"seed": 3, "settings": {"fov": [1.5, 2.0]}})
    table = tomllib.loads((tmp_path / "dataset.toml").read_text(encoding="utf-8"))
    assert table == {"depth_scale": 0.0025, "description": 'caf\u00e9 "quoted"\n\U0001F600',
                     "splits": {"train": names, "validation": []},
                     "generator": {"seed": 3, "settings": {"fov": [1.5, 2.0]}}}
