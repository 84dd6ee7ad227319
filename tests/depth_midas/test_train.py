"""The TinyMidas training script and the built-in checkpoint it ships."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from retrofit_depth_midas import metrics, scenes, train
from retrofit_depth_midas.models import BUILTIN_CHECKPOINT, load_model
from retrofit_depth_midas.net import read_checkpoint
from retrofit_depth_midas.preprocess import prepare, target_shape


def test_inputs_keep_the_rendered_size() -> None:
    # 128x96 renders stay 128x96 (shorter side 96, both sides multiples of 32): no resampling at all
    assert target_shape(96, 128, size=train.INPUT_SIZE, keep_aspect=True) == (96, 128)
    rendered = train.render_set(scenes.SOURCE, 0, [0, 1])
    assert rendered.x.shape == (2, 3, 96, 128) and rendered.disparity.shape == (2, 96, 128)
    valid = rendered.valid
    np.testing.assert_allclose(rendered.disparity[valid].numpy(), 1.0 / rendered.depth[valid.numpy()], rtol=1e-6)
    assert (rendered.disparity[~valid] == 0).all()
    target = rendered.target[0][valid[0]]
    assert abs(float(target.median())) < 1e-5 and abs(float(target.abs().mean()) - 1.0) < 0.1


def test_loss_ignores_scale_and_shift_and_invalid_pixels() -> None:
    rendered = train.render_set(scenes.SOURCE, 0, [2, 3])
    disparity, valid = rendered.disparity, rendered.valid
    exact = 3.0 * disparity + 0.7
    assert float(train.ssi_loss(exact, disparity, valid)) < 1e-4
    # garbage outside the valid mask changes nothing
    noisy = torch.where(valid, exact, torch.full_like(exact, 123.0))
    assert float(train.ssi_loss(noisy, disparity, valid)) < 1e-4
    wrong = torch.rand(disparity.shape, generator=torch.Generator().manual_seed(0))
    loss = train.ssi_loss(wrong, disparity, valid)
    assert float(loss) > 0.3
    scaled = train.ssi_loss(5.0 * wrong - 2.0, disparity, valid)
    assert abs(float(scaled) - float(loss)) < 1e-3 * float(loss)
    # differentiable, and a constant prediction does not produce NaN
    constant = torch.ones_like(disparity, requires_grad=True)
    value = train.ssi_loss(constant, disparity, valid)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(constant.grad).all()


def test_short_training_run_writes_a_loadable_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiny.pt"
    assert train.main(["--out", str(out), "--images", "16", "--steps", "12", "--batch-size", "8", "--heldout", "4",
                       "--threads", "2"]) == 0
    printed = capsys.readouterr().out
    assert "held-out bad-pixel rate" in printed and "SOURCE" in printed and "SHIFTED" in printed

    meta = read_checkpoint(out)["meta"]
    assert meta["steps"] == 12 and meta["images"] == 16 and meta["trained_on"] == "scenes.SOURCE"
    assert meta["input_size"] == 96 and meta["keep_aspect"] is True
    assert meta["loss_last"] < meta["loss_first"], "the loss did not decrease"
    assert 0 <= meta["heldout"]["source_bad_pixel_rate"] <= 1

    model = load_model(out)
    np.testing.assert_allclose(model.normalization.mean, [0.485, 0.456, 0.406])
    assert model.input_size == 96 and model.keep_aspect
    rgb, _ = scenes.render(scenes.SOURCE, 99)
    x = prepare(rgb, size=model.input_size, keep_aspect=model.keep_aspect, normalization=model.normalization)
    disparity = model(torch.from_numpy(x)[None])
    assert disparity.shape == (1, 96, 128) and torch.isfinite(disparity).all()


def test_time_budget_stops_training(tmp_path: Path) -> None:
    _, meta = train.train(out=None, images=4, seconds=0.5, seed=1, batch_size=4, heldout=2, log=lambda _: None)
    assert meta["steps"] >= 1 and meta["seconds"] < 10


def test_builtin_checkpoint_is_small_and_beats_a_constant_on_source() -> None:
    assert BUILTIN_CHECKPOINT.stat().st_size < 2_000_000
    model = load_model("builtin")
    assert model.meta["trained_on"] == "scenes.SOURCE" and model.input_size == 96
    # fresh images: indices no training or held-out run of train.py renders
    held_out = train.render_set(scenes.SOURCE, 0, range(3_000_000, 3_000_012))
    prediction = model(held_out.x).numpy()
    rate = train.bad_pixel_rate(prediction, held_out.depth)
    constant = train.constant_baseline(held_out.depth)
    assert rate < 0.2 and constant > 0.5, (rate, constant)
    # a constant disparity cannot even be aligned: it is scored as a complete failure
    flat = metrics.depth_metrics(list(np.ones_like(prediction)), list(held_out.depth))
    assert all(row["bad_pixel_rate"] == 1.0 for row in flat)
