"""DepthModel and load_model: every spec form, the cut at the head, knobs, offline errors."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from retrofit.errors import UsageError
from retrofit.nn import build_knobs
from retrofit_depth_midas import models
from retrofit_depth_midas.models import DepthModel, load_model
from retrofit_depth_midas.net import TinyMidas, save_checkpoint


@pytest.fixture(scope="module")
def tiny_midas_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(TinyMidas(), tmp_path_factory.mktemp("ckpt") / "tiny.pt", input_size=128)


@pytest.fixture(scope="module")
def tiny_dpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.save_tiny_dpt(tmp_path_factory.mktemp("hf") / "tiny-dpt", seed=0)


@pytest.fixture(params=["tinymidas", "hf-dpt"])
def model_and_input(request: pytest.FixtureRequest) -> tuple[DepthModel, torch.Tensor]:
    torch.manual_seed(1)
    if request.param == "tinymidas":
        return load_model(str(request.getfixturevalue("tiny_midas_file"))), torch.randn(2, 3, 96, 128)
    return load_model(str(request.getfixturevalue("tiny_dpt_dir"))), torch.randn(2, 3, 64, 64)


def test_tinymidas_checkpoint_loads_with_its_conventions(tiny_midas_file: Path) -> None:
    model = load_model(tiny_midas_file)
    assert (model.family, model.name, model.head_prefix) == ("tinymidas", "tiny", "scratch.output_conv")
    assert model.input_size == 128 and model.keep_aspect
    mean = model.normalization.mean
    assert isinstance(mean, np.ndarray) and mean.dtype == np.float64 and mean.shape == (3,)
    np.testing.assert_allclose(mean, [0.485, 0.456, 0.406])  # ImageNet by default


def test_hf_directory_loads_offline_with_dpt_conventions(tiny_dpt_dir: Path) -> None:
    model = load_model(str(tiny_dpt_dir))
    assert (model.family, model.head_prefix, model.keep_aspect, model.input_size) == ("hf-dpt", "head.head", False, 64)
    np.testing.assert_array_equal(model.normalization.std, [0.5, 0.5, 0.5])
    assert isinstance(model.head_module, torch.nn.Sequential)


def test_forward_is_head_of_features_exactly(model_and_input: tuple[DepthModel, torch.Tensor]) -> None:
    model, x = model_and_input
    features = model.features(x)
    out = model.head(features)
    assert out.shape == (x.shape[0], *x.shape[-2:])
    assert torch.equal(out, model(x))
    assert out.std() > 0  # the tiny DPT's re-initialised head gives a usable, varying output


def test_hf_cut_reproduces_predicted_depth() -> None:
    net = models.random_tiny_dpt(seed=3)
    model = models.from_hf_dpt(net, "tiny")
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        reference = net(pixel_values=x).predicted_depth
    assert torch.equal(model.head(model.features(x)), reference)
    assert not net.head.head._forward_pre_hooks  # the cut leaves no hook behind


def test_numpy_chw_input_is_accepted(tiny_midas_file: Path) -> None:
    model = load_model(tiny_midas_file)
    image = np.random.default_rng(0).standard_normal((3, 64, 64)).astype(np.float32)
    assert model(image).shape == (1, 64, 64)


def test_head_knobs_change_outputs_and_restore_bit_identically(
        model_and_input: tuple[DepthModel, torch.Tensor]) -> None:
    model, x = model_and_input
    prefix = model.head_prefix
    specs = [{"kind": "channel_gain", "target": f"{prefix}.4.weight", "dim": 1},  # gains before the last 1x1 conv
             {"kind": "output_gain", "target": f"{prefix}.2"}]  # the conv before the ReLU
    knobs = build_knobs(model.net, specs)
    assert [k.size for k in knobs] == [32, 32]
    assert all(model.in_head(k.target) for k in knobs)
    baseline = model(x)
    features = model.features(x)  # head-only knobs: features are computed once
    rng = np.random.default_rng(0)
    for knob in knobs:
        knob.apply(rng.uniform(-0.5, 0.5, knob.size))
    changed = model.head(features)
    assert not torch.equal(changed, baseline)
    assert torch.equal(changed, model(x))  # cached features + head == a full pass
    for knob in knobs:
        knob.restore()
    assert torch.equal(model(x), baseline)


def test_hub_id_offline_is_one_quick_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hub_constants

    # never download in a test, even where there is network; an empty cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for spec in ("Intel/dpt-large", "hf:Intel/dpt-large"):
        start = time.monotonic()
        with pytest.raises(UsageError) as err:
            load_model(spec)
        assert time.monotonic() - start < 10
        message = str(err.value)
        assert "\n" not in message
        assert message.startswith("model Intel/dpt-large is not available offline")
        assert "download Intel/dpt-large --local-dir DIR" in message and "--model DIR" in message


def test_hub_id_found_in_the_cache_loads_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--someone--tiny-dpt"
    models.save_tiny_dpt(repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    model = load_model("someone/tiny-dpt")
    assert (model.family, model.name) == ("hf-dpt", "someone/tiny-dpt")


def test_torch_hub_without_timm_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError, installed or not
    with pytest.raises(UsageError, match="hub:DPT_Large needs timm"):
        load_model("hub:DPT_Large")
    with pytest.raises(UsageError, match="unknown torch.hub MiDaS model 'Nope'"):
        load_model("hub:Nope")


def test_builtin_without_its_asset_points_to_the_training_script(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setattr(models, "BUILTIN_CHECKPOINT", tmp_path / "assets" / "tiny_midas.pt")
    with pytest.raises(UsageError, match=r"python -m retrofit_depth_midas\.train"):
        load_model("builtin")


def test_builtin_loads_the_shipped_checkpoint(monkeypatch: pytest.MonkeyPatch, tiny_midas_file: Path) -> None:
    monkeypatch.setattr(models, "BUILTIN_CHECKPOINT", tiny_midas_file)
    assert load_model("builtin").name == "builtin"


@pytest.mark.parametrize("spec", ["no/such/dir/model.pt", "missing.pt", "./relative-dir", "a/b/c"])
def test_missing_paths_are_named(spec: str) -> None:
    with pytest.raises(UsageError, match=f"model {spec} does not exist"):
        load_model(spec)


def test_directories_that_are_not_dpt_models_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="without config.json"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(UsageError, match="holds a 'bert' model"):
        load_model(str(tmp_path))


def test_transformers_missing_asks_to_install_it(monkeypatch: pytest.MonkeyPatch, tiny_dpt_dir: Path) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(UsageError, match="pip install transformers"):
        load_model(str(tiny_dpt_dir))
