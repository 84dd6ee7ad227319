"""Torch knobs and selection: identity, restore, dtype, sizes, effects, specs."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from retrofit.errors import UsageError
from retrofit.knobs import KnobSet
from retrofit.nn import (
    ActivationKnob,
    BiasShiftKnob,
    ChannelGainKnob,
    FullTensorKnob,
    LowRankKnob,
    OutputGainKnob,
    ScaleKnob,
    SteeringKnob,
    build_knobs,
    select_modules,
    select_parameters,
)
from torch import nn


class TinyConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def conv_net(dtype: torch.dtype = torch.float32) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return TinyConv().to(dtype).eval(), torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1)).to(dtype)


def mlp(dtype: torch.dtype = torch.float32) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return MLP().to(dtype).eval(), torch.randn(5, 6, generator=torch.Generator().manual_seed(1)).to(dtype)


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits of a tensor, so -0.0 vs 0.0 and NaN payloads count as differences."""
    ints = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    return t.detach().contiguous().view(ints[t.element_size()])


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bit_identical(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, tensor in before.items():
        assert after[key].dtype == tensor.dtype and after[key].device == tensor.device, key
        assert torch.equal(bits(after[key]), bits(tensor)), key


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


CONV_SPECS = [  # one tensor knob per tensor: two would overwrite each other
    {"kind": "scale", "target": "body.2.bias"},
    {"kind": "channel_gain", "target": "head.0.weight"},
    {"kind": "channel_gain", "target": "body.2.weight", "log": False},
    {"kind": "bias_shift", "target": "head.*.bias"},
    {"kind": "low_rank", "target": "body.0.weight", "rank": 2},
    {"kind": "full", "target": "head.2.weight"},
    {"kind": "output_gain", "target": "body.1", "channels": 8},
    {"kind": "output_gain", "target": "head.0"},
    {"kind": "steering", "target": "head.1", "width": 4},
    {"kind": "steering", "target": "body.2"},
]


# -- selection --------------------------------------------------------------------------------

def test_select_exact_glob_ordered_unique() -> None:
    model, _ = conv_net()
    names = [n for n, _ in select_parameters(model, "head.*.weight")]
    assert names == ["head.0.weight", "head.2.weight"]
    names = [n for n, _ in select_parameters(model, ["head.2.weight", "head.*", "body.0.bias"])]
    assert names == ["head.2.weight", "head.0.weight", "head.0.bias", "head.2.bias", "body.0.bias"]
    assert [n for n, _ in select_modules(model, "head.2")] == ["head.2"]
    assert [n for n, _ in select_modules(model, "body.?")] == ["body.0", "body.1", "body.2", "body.3"]
    assert "" not in [n for n, _ in select_modules(model, "*")]  # globs never pick the root


def test_select_missing_pattern_names_close_matches() -> None:
    model, _ = conv_net()
    with pytest.raises(UsageError, match=r"'head\.0\.wieght'.*head\.0\.weight"):
        select_parameters(model, "head.0.wieght")
    with pytest.raises(UsageError, match="no module matches 'neck.*'"):
        select_modules(model, ["body.0", "neck.*"])


def test_select_tied_parameter_once() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight
    selected = select_parameters(model, "*.weight")
    assert [n for n, _ in selected] == ["0.weight"]
    assert select_parameters(model, "1.weight")[0][1] is model[0].weight


# -- identity, restore, dtype -----------------------------------------------------------------

@pytest.mark.parametrize("spec", CONV_SPECS, ids=lambda s: f"{s['kind']}-{s['target']}")
def test_identity_is_exact_and_restore_bit_identical(spec: dict) -> None:
    model, x = conv_net()
    base, before = model(x), snapshot(model)
    knobs = build_knobs(model, [spec])
    space = KnobSet(knobs).space
    knob_set = KnobSet(knobs)
    lo, hi = space.normalised_bounds()
    assert np.all(lo < 0) and np.all(hi > 0)  # identity strictly inside the bounds
    with knob_set.applied(knob_set.space.to_natural(np.zeros(knob_set.space.size))):
        assert torch.equal(model(x), base)
        assert_bit_identical(model, before)
    rng = np.random.default_rng(0)
    with knob_set.applied(knob_set.space.to_natural(rng.standard_normal(knob_set.space.size))):
        assert not torch.equal(model(x), base)
    assert_bit_identical(model, before)
    assert no_hooks(model)
    assert torch.equal(model(x), base)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_dtype_and_device_preserved(dtype: torch.dtype) -> None:
    model, x = conv_net(dtype)
    base, before = model(x), snapshot(model)
    knob_set = KnobSet(build_knobs(model, CONV_SPECS))
    with knob_set.applied(knob_set.space.identity):
        assert torch.equal(model(x), base)
        assert_bit_identical(model, before)
    with knob_set.applied(knob_set.space.to_natural(np.full(knob_set.space.size, 0.5))):
        out = model(x)
        assert out.dtype == dtype and out.device == x.device
        assert all(p.dtype == dtype and p.device == x.device for p in model.parameters())
        assert not torch.equal(out, base)
    assert_bit_identical(model, before)
    assert no_hooks(model)


def test_negative_zero_survives_identity() -> None:
    model, _ = mlp()
    with torch.no_grad():
        model.layers[0].bias[0] = -0.0
    before = snapshot(model)
    knobs = build_knobs(model, [{"kind": "bias_shift", "target": "layers.0.bias"}])
    knobs[0].apply(knobs[0].identity())
    assert_bit_identical(model, before)


def test_parameter_counts() -> None:
    model, _ = conv_net()
    sizes = {k.name: k.size for k in build_knobs(model, CONV_SPECS)}
    assert sizes == {
        "scale:body.2.bias": 1,
        "channel_gain:head.0.weight": 4,
        "channel_gain:body.2.weight": 8,
        "bias_shift:head.0.bias": 4,
        "bias_shift:head.2.bias": 2,
        "low_rank:body.0.weight": 2 * 8,  # rank * out: only U is searched
        "full:head.2.weight": 2 * 4,
        "output_gain:body.1": 8,
        "output_gain:head.0": 4,  # inferred from the Conv2d
        "steering:head.1": 4,
        "steering:body.2": 8,
    }


# -- each kind does what it says --------------------------------------------------------------

def test_scale_multiplies() -> None:
    model, x = mlp(torch.float64)
    last = model.layers[4]
    base = model(x)
    knob = ScaleKnob("s", last.weight)
    knob.apply(np.array([2.0]))
    torch.testing.assert_close(model(x) - last.bias, 2 * (base - last.bias))
    knob.restore()


def test_channel_gain_log2_doubles_one_channel() -> None:
    model, x = mlp(torch.float64)
    last = model.layers[4]
    base = model(x)
    knob = ChannelGainKnob("g", last.weight)
    assert knob.size == 3 and knob.lower == -3.0 and knob.upper == 3.0
    knob.apply(np.array([0.0, math.log(2), 0.0]))
    out = model(x)
    torch.testing.assert_close(out[:, 1] - last.bias[1], 2 * (base[:, 1] - last.bias[1]))
    assert torch.equal(out[:, [0, 2]], base[:, [0, 2]])
    knob.restore()


def test_bias_shift_adds() -> None:
    model, x = mlp(torch.float64)
    base = model(x)
    knob = BiasShiftKnob("b", model.layers[4].bias)
    shift = np.array([0.5, -1.0, 0.25])
    knob.apply(shift)
    torch.testing.assert_close(model(x), base + torch.from_numpy(shift))
    knob.restore()
    assert torch.equal(model(x), base)


@pytest.mark.parametrize("factory", [mlp, conv_net])
def test_low_rank_adds_rank_r_update(factory) -> None:
    model, _ = factory(torch.float64)
    param = next(model.parameters())  # the first weight: [16, 6] or [8, 3, 3, 3]
    original = param.detach().clone()
    knob = LowRankKnob("lr", param, rank=2, target="w")
    out = param.shape[0]
    assert knob.size == 2 * out and knob.basis.shape == (original[0].numel(), 2)
    u = np.random.default_rng(0).standard_normal((out, 2))
    knob.apply(u.reshape(-1))
    delta = (param.detach() - original).reshape(out, -1)
    torch.testing.assert_close(delta, torch.from_numpy(u) @ knob.basis.T)
    assert torch.linalg.matrix_rank(delta) == 2
    knob.restore()
    assert torch.equal(param, original)
    # same target and seed -> same basis on a fresh copy; another target -> another basis
    assert torch.equal(LowRankKnob("x", param, 2, target="w").basis, knob.basis)
    assert not torch.equal(LowRankKnob("x", param, 2, target="v").basis, knob.basis)


def test_full_sets_every_element_and_refuses_big_tensors() -> None:
    model, _ = mlp()
    bias = model.layers[4].bias
    knob = FullTensorKnob("f", bias)
    assert np.array_equal(knob.identity(), bias.detach().double().numpy())
    knob.apply(np.array([1.0, 2.0, 3.0]))
    assert torch.equal(bias.detach(), torch.tensor([1.0, 2.0, 3.0]))
    knob.restore()
    big = nn.Linear(100, 100).weight
    with pytest.raises(UsageError, match="low_rank"):
        FullTensorKnob("big", big)


def test_output_gain_and_steering_exact_on_outputs() -> None:
    model, x = mlp()
    last = model.layers[4]
    base = model(x)
    gain = OutputGainKnob("g", last, channels=3, channel_dim=-1)
    gain.apply(np.array([0.0, math.log(2), 0.0]))
    out = model(x)
    assert torch.equal(out[:, 1], 2 * base[:, 1]) and torch.equal(out[:, [0, 2]], base[:, [0, 2]])
    gain.restore()
    steer = SteeringKnob("s", last, width=3)
    vector = np.array([0.5, -2.0, 0.125])
    steer.apply(vector)
    assert torch.equal(model(x), base + torch.tensor(vector, dtype=torch.float32))
    steer.restore()
    assert no_hooks(model) and torch.equal(model(x), base)


def test_output_gain_on_conv_channels() -> None:
    model, x = conv_net()
    conv = model.body[0]
    seen = {}
    # watch the ReLU after the conv: relu(4 x) == 4 relu(x) exactly
    model.body[1].register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))
    model(x)
    base = seen["out"].clone()
    knob = OutputGainKnob("g", conv, channels=8)
    values = np.zeros(8)
    values[3] = math.log(4)
    knob.apply(values)
    model(x)
    assert torch.equal(seen["out"][:, 3], 4 * base[:, 3]) and torch.equal(seen["out"][:, :3], base[:, :3])
    knob.restore()
    assert not conv._forward_hooks


class Pair(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 1.5, x


def test_hooks_handle_tuple_outputs_update_and_identity() -> None:
    module = Pair()
    x = torch.randn(2, 4, dtype=torch.float64)
    knob = SteeringKnob("s", module, width=4)
    knob.apply(np.ones(4))
    first, second = module(x)
    assert torch.equal(first, x * 1.5 + 1) and torch.equal(second, x) and first.dtype == torch.float64
    knob.apply(np.full(4, 2.0))  # update, not a second hook
    assert len(module._forward_hooks) == 1 and torch.equal(module(x)[0], x * 1.5 + 2)
    knob.apply(knob.identity())  # identity means no hook at all
    assert not knob.hooked and not module._forward_hooks
    with pytest.raises(UsageError, match="expected 3 entries along dim -1"):
        wrong = SteeringKnob("w", module, width=3)
        wrong.apply(np.ones(3))
        module(x)
    wrong.restore()


# -- specs ------------------------------------------------------------------------------------

def test_build_knobs_glob_names_and_describe_roundtrip() -> None:
    model, x = conv_net()
    knobs = build_knobs(model, [{"kind": "channel_gain", "target": "*.weight", "sigma": 0.1}])
    assert [k.name for k in knobs] == [f"channel_gain:{n}" for n, _ in select_parameters(model, "*.weight")]
    assert all(k.sigma == 0.1 for k in knobs)

    knobs = build_knobs(model, CONV_SPECS)
    specs = [k.describe() for k in knobs]
    assert all({"kind", "name", "target", "size"} <= set(s) for s in specs)
    fresh = copy.deepcopy(model)
    rebuilt = build_knobs(fresh, specs)
    assert [k.describe() for k in rebuilt] == specs
    space = KnobSet(knobs).space
    values = space.to_natural(np.random.default_rng(1).standard_normal(space.size))
    with KnobSet(knobs).applied(values), KnobSet(rebuilt).applied(values):
        assert torch.equal(model(x), fresh(x))


@pytest.mark.parametrize("spec, message", [
    ({"kind": "gain", "target": "head.0.weight"}, "unknown kind 'gain'; kinds: scale, channel_gain"),
    ({"kind": "scale", "target": "head.9.weight"}, "no parameter matches 'head.9.weight'"),
    ({"kind": "scale", "target": "head.0.weight", "rnk": 2}, "unknown key"),
    ({"kind": "low_rank", "target": "head.0.weight"}, "'rank' is required"),
    ({"kind": "low_rank", "target": "head.0.weight", "rank": "2"}, "rank must be int"),
    ({"kind": "scale", "target": "head.0.weight", "sigma": 0}, "sigma must be positive"),
    ({"kind": "scale", "target": "*.bias", "name": "b"}, "matches 4 targets"),
    ({"kind": "scale", "target": "head.0.weight", "size": 3}, "another model"),
    ({"kind": "steering", "target": "body.1"}, "give 'width'"),
    ({"kind": "channel_gain", "target": "head.0.bias", "dim": 1}, "out of range"),
])
def test_build_knobs_errors(spec: dict, message: str) -> None:
    model, _ = conv_net()
    with pytest.raises(UsageError, match=message.replace(".", r"\.").replace("(", r"\(")):
        build_knobs(model, [spec])


def test_build_knobs_refuses_two_tensor_knobs_on_one_tensor() -> None:
    model, _ = conv_net()
    with pytest.raises(UsageError, match="already has knob scale:head.0.weight"):
        build_knobs(model, [{"kind": "scale", "target": "head.0.weight"},
                            {"kind": "channel_gain", "target": "head.*.weight"}])
    with pytest.raises(UsageError, match="list of dicts"):
        build_knobs(model, {"kind": "scale", "target": "head.0.weight"})


def test_activation_knob_is_a_knob() -> None:
    model, _ = mlp()
    knob = build_knobs(model, [{"kind": "output_gain", "target": "layers.2"}])[0]
    assert isinstance(knob, ActivationKnob) and knob.channel_dim == -1 and knob.size == 16
