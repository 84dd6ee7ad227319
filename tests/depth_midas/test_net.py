"""TinyMidas: shapes, the features/head split, MiDaS head names and checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from retrofit.errors import UsageError
from retrofit_depth_midas.net import CHECKPOINT_FORMAT, TinyMidas, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def net() -> TinyMidas:
    torch.manual_seed(0)
    return TinyMidas().eval()


def test_output_is_disparity_at_input_resolution(net: TinyMidas) -> None:
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 96, 128)
    assert (y >= 0).all()  # final ReLU, as in MiDaS


def test_forward_equals_head_of_features_exactly(net: TinyMidas) -> None:
    x = torch.randn(3, 3, 128, 128)
    with torch.no_grad():
        features = net.features(x)
        assert features.shape == (3, net.config["features"], 64, 64)
        assert torch.equal(net(x), net.head(features))


def test_head_follows_midas_names(net: TinyMidas) -> None:
    names = {n for n, _ in net.named_parameters() if n.startswith("scratch.output_conv.")}
    assert names == {f"scratch.output_conv.{i}.{k}" for i in (0, 2, 4) for k in ("weight", "bias")}
    head = net.scratch.output_conv
    assert head[2].out_channels == 32 and head[4].out_channels == 1 and head[4].kernel_size == (1, 1)
    assert isinstance(head[3], torch.nn.ReLU) and isinstance(head[5], torch.nn.ReLU)


def test_size_stays_small(net: TinyMidas) -> None:
    assert 100_000 <= sum(p.numel() for p in net.parameters()) <= 320_000


def test_rejects_sides_that_are_not_multiples_of_32(net: TinyMidas) -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.randn(1, 3, 100, 128))


def test_checkpoint_round_trip(net: TinyMidas, tmp_path: Path) -> None:
    small = TinyMidas(channels=(8, 16, 24, 32), features=16, stem=8)
    path = save_checkpoint(small, tmp_path / "sub" / "tiny.pt", input_size=128,
                           normalization={"mean": np.full(3, 0.4), "std": (0.2, 0.2, 0.2)})
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == CHECKPOINT_FORMAT and payload["config"]["features"] == 16
    loaded = load_checkpoint(path)
    assert not loaded.training and loaded.config == small.config
    assert loaded.meta == {"input_size": 128, "normalization": {"mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]}}
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(small.eval()(x), loaded(x))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04broken zip"])
def test_corrupt_checkpoint_is_a_usage_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match="broken.pt"):
        load_checkpoint(path)


def test_foreign_checkpoints_are_usage_errors(tmp_path: Path) -> None:
    plain = tmp_path / "plain_state_dict.pt"
    torch.save(TinyMidas().state_dict(), plain)
    with pytest.raises(UsageError, match="plain_state_dict.pt is not a TinyMidas checkpoint"):
        load_checkpoint(plain)
    mismatch = tmp_path / "mismatch.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "config": {"features": 16}, "state_dict": TinyMidas().state_dict(),
                "meta": {}}, mismatch)
    with pytest.raises(UsageError, match="mismatch.pt"):
        load_checkpoint(mismatch)
    with pytest.raises(UsageError, match="missing.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
