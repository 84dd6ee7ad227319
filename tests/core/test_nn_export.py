"""Baked state_dicts, delta files and the torch export hook."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from retrofit.delta import delta_path
from retrofit.errors import UsageError
from retrofit.knobs import KnobSet
from retrofit.nn import DELTA_FORMAT, apply_delta, bake_state_dict, build_knobs, read_delta, write_delta
from retrofit.nn.plugin import retrofit_export
from torch import nn

CORE = Path(__file__).resolve().parents[2] / "core"


class TinyConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.up(self.body(x)))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def conv_net() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return TinyConv().double().eval(), torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1)).double()


def mlp() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return MLP().double().eval(), torch.randn(5, 6, generator=torch.Generator().manual_seed(1)).double()


CONV_SPECS = [
    {"kind": "channel_gain", "target": "body.0.weight"},
    {"kind": "low_rank", "target": "body.2.weight", "rank": 3},
    {"kind": "bias_shift", "target": "head.1.bias"},
    {"kind": "full", "target": "head.1.weight"},
    {"kind": "output_gain", "target": "body.2"},
    {"kind": "steering", "target": "body.2"},  # folds after the gain, in knob order
    {"kind": "output_gain", "target": "up"},  # transposed conv: channels on weight dim 1
    {"kind": "scale", "target": "up.weight"},  # a tensor knob and a fold on the same weight
]
MLP_SPECS = [
    {"kind": "scale", "target": "layers.0.weight"},
    {"kind": "steering", "target": "layers.2"},
    {"kind": "output_gain", "target": "layers.4"},
    {"kind": "bias_shift", "target": "layers.4.bias"},
]


def random_values(knobs, seed: int = 0) -> dict[str, np.ndarray]:
    space = KnobSet(knobs).space
    return space.split(space.to_natural(np.random.default_rng(seed).standard_normal(space.size) * 3))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert all(not m._forward_hooks for m in model.modules())


def applied_output(model: nn.Module, knobs, values, x: torch.Tensor) -> torch.Tensor:
    space = KnobSet(knobs).space
    with KnobSet(knobs).applied(space.join(values)), torch.no_grad():
        return model(x)


@pytest.mark.parametrize("factory, specs", [(conv_net, CONV_SPECS), (mlp, MLP_SPECS)], ids=["conv", "mlp"])
def test_bake_state_dict_loads_into_fresh_model(factory, specs) -> None:
    model, x = factory()
    fresh = copy.deepcopy(model)
    before = snapshot(model)
    knobs = build_knobs(model, specs)
    values = random_values(knobs)
    expected = applied_output(model, knobs, values, x)
    assert not torch.allclose(expected, model(x))

    state = bake_state_dict(model, knobs, values)
    assert_same_state(model, before)
    assert state.keys() == before.keys()
    assert all(state[k].dtype == before[k].dtype for k in state)
    fresh.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), expected, rtol=1e-10, atol=1e-10)


def test_bake_tensor_knobs_only_is_exact() -> None:
    model, x = mlp()
    knobs = build_knobs(model, [{"kind": "channel_gain", "target": "layers.*.weight"}])
    values = random_values(knobs)
    fresh = copy.deepcopy(model)
    fresh.load_state_dict(bake_state_dict(model, knobs, values))
    with torch.no_grad():
        assert torch.equal(fresh(x), applied_output(model, knobs, values, x))


@pytest.mark.parametrize("spec, why", [
    ({"kind": "steering", "target": "layers.1", "width": 16}, "only Linear"),  # a ReLU
    ({"kind": "output_gain", "target": "layers.4", "channel_dim": 0, "channels": 5}, "only Linear"),
])
def test_bake_refuses_unfoldable_activation_knobs(spec, why) -> None:
    model, _ = mlp()
    before = snapshot(model)
    knobs = build_knobs(model, [{"kind": "scale", "target": "layers.0.weight"}, spec])
    values = random_values(knobs)
    with pytest.raises(UsageError, match=f"{why}.*exported only in the delta file"):
        bake_state_dict(model, knobs, values)
    assert_same_state(model, before)
    # at its identity the same knob needs no folding
    values[knobs[1].name] = knobs[1].identity()
    bake_state_dict(model, knobs, values)


def test_bake_refuses_steering_without_bias_and_foreign_knobs() -> None:
    model = nn.Sequential(nn.Linear(4, 3, bias=False)).double()
    knobs = build_knobs(model, [{"kind": "steering", "target": "0"}])
    with pytest.raises(UsageError, match="no bias"):
        bake_state_dict(model, knobs, {knobs[0].name: np.ones(3)})
    other, _ = mlp()
    knobs = build_knobs(other, [{"kind": "scale", "target": "layers.0.weight"}])
    with pytest.raises(UsageError, match="not part of this model"):
        bake_state_dict(mlp()[0], knobs, {knobs[0].name: [2.0]})


def test_delta_roundtrip_on_fresh_copy(tmp_path: Path) -> None:
    model, x = conv_net()
    fresh = copy.deepcopy(model)
    before = snapshot(fresh)
    knobs = build_knobs(model, CONV_SPECS)
    values = random_values(knobs, seed=3)
    path = write_delta(tmp_path / "sub" / "run.delta.json", knobs, values, domain="depth")

    doc = json.loads(path.read_text())
    assert doc["format"] == DELTA_FORMAT == "retrofit-delta/1"
    delta = read_delta(path)
    assert delta.specs == [k.describe() for k in knobs] and delta.domain == "depth"
    assert all(np.array_equal(delta.values[name], values[name]) for name in values)

    expected = applied_output(model, knobs, values, x)
    rebuilt = apply_delta(fresh, path)
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)
    for knob in reversed(rebuilt):
        knob.restore()
    assert_same_state(fresh, before)


def test_delta_errors(tmp_path: Path) -> None:
    model, _ = mlp()
    with pytest.raises(UsageError, match="does not exist"):
        read_delta(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(UsageError, match="not a retrofit delta file"):
        read_delta(bad)
    knobs = build_knobs(model, [{"kind": "output_gain", "target": "layers.2"}])
    with pytest.raises(UsageError, match="finite"):
        write_delta(tmp_path / "nan.json", knobs, {knobs[0].name: np.full(16, np.nan)})
    path = write_delta(tmp_path / "ok.json", knobs, random_values(knobs))
    # the same delta on a model whose layer is narrower does not fit
    narrow = nn.Module()
    narrow.layers = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8))
    with pytest.raises(UsageError, match="another model"):
        apply_delta(narrow, path)
    doc = json.loads(path.read_text())
    doc["values"]["extra"] = [1.0]
    path.write_text(json.dumps(doc))
    with pytest.raises(UsageError, match="do not match"):
        read_delta(path)


def test_export_hook_writes_state_dict_beside_the_cores_delta(tmp_path: Path) -> None:
    model, x = mlp()
    knobs = build_knobs(model, MLP_SPECS)
    values = random_values(knobs)
    expected = applied_output(model, knobs, values, x)
    output = tmp_path / "out" / "model.pt"
    delta = write_delta(delta_path(output), knobs, values, domain="toy")  # what `retrofit ... export` does first
    written = retrofit_export(domain="toy", model=model, knobs=knobs, values=values, output=output)
    assert written == output and output.is_file()
    assert delta == tmp_path / "out" / "model.pt.delta.json"
    assert read_delta(delta).domain == "toy"

    fresh = mlp()[0]
    fresh.load_state_dict(torch.load(output, weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), expected, rtol=1e-10, atol=1e-10)
    again = mlp()[0]
    apply_delta(again, delta)
    with torch.no_grad():
        assert torch.equal(again(x), expected)


def test_export_hook_declines_and_reports() -> None:
    model, _ = mlp()
    knobs = build_knobs(model, [{"kind": "steering", "target": "layers.1", "width": 16}])
    values = {knobs[0].name: np.ones(16)}
    assert retrofit_export(domain="d", model={"not": "torch"}, knobs=knobs, values=values, output=Path("x.pt")) is None
    assert retrofit_export(domain="d", model=model, knobs=knobs, values=values,
                           output=Path("x.onnx")) is None


def test_export_hook_unbakeable_points_to_the_delta(tmp_path: Path) -> None:
    model, _ = mlp()
    knobs = build_knobs(model, [{"kind": "steering", "target": "layers.1", "width": 16}])
    output = tmp_path / "model.pth"
    with pytest.raises(UsageError, match="delta file .*model.pth.delta.json was written"):
        retrofit_export(domain="d", model=model, knobs=knobs, values={knobs[0].name: np.ones(16)},
                        output=output)
    assert not output.exists()


def test_plugin_import_does_not_load_torch() -> None:
    code = "import sys, retrofit.nn.plugin; assert 'torch' not in sys.modules, 'torch was imported'"
    env = {**os.environ, "PYTHONPATH": str(CORE)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_plugin_registers_against_the_hookspecs(tmp_path: Path) -> None:
    import pluggy
    import retrofit.nn.plugin
    from retrofit import hookspecs

    manager = pluggy.PluginManager("retrofit")
    manager.add_hookspecs(hookspecs)
    manager.register(retrofit.nn.plugin)
    model, _ = mlp()
    knobs = build_knobs(model, [{"kind": "scale", "target": "layers.0.weight"}])
    output = tmp_path / "m.bin"
    written = manager.hook.retrofit_export(domain="d", model=model, knobs=knobs, values={knobs[0].name: [1.5]},
                                           output=output, config=None)
    assert written == output and output.is_file()
