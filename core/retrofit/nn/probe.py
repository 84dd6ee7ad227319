"""Candidate parameter groups of a torch model, for the sensitivity probe (:mod:`retrofit.probe`).

:func:`torch_groups` walks the model's layers in order and offers, per layer:

* ``"<layer> channel gains"``: a ``channel_gain`` knob on its weight (one gain per output
  channel; dim 1 for transposed convolutions, whose weights hold output channels there);
* ``"<layer> bias"``: a ``bias_shift`` knob on its bias, if it has one;
* ``"<layer> output gains"``: an ``output_gain`` knob on the module's output, offered only
  where it differs from the channel gains, i.e. when the layer has a bias (without one, a gain
  on the output channels *is* a gain on the weight's output channels).

Layers are ``Linear``, ``Conv``/``ConvTranspose`` (1-3d) and normalisation layers with affine
parameters (batch, instance, group, layer and RMS norms). Every knob is built by
:func:`retrofit.nn.build_knobs` with default sigma and bounds, so the probe's specs paste back
into a config unchanged. Tensor knobs are *deferred*: built on ``apply`` and dropped on
``restore``, so probing a hundred layers never holds a hundred weight copies at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import nn

from retrofit.errors import UsageError
from retrofit.knobs import Knob, ProbeGroup
from retrofit.nn.knobs import build_knobs

#: groups with more parameters than this are skipped: they are not "a few parameters"
MAX_GROUP_SIZE = 4096
#: at most this many groups, spread evenly over the model (first and last layer kept)
MAX_GROUPS = 64

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)


class DeferredKnob(Knob):
    """A knob rebuilt from its spec on every :meth:`apply` and dropped on :meth:`restore`.

    A tensor knob keeps a copy of its tensor for as long as it lives; deferring that copy to
    the moment the knob is applied keeps the probe's memory at one layer's worth. The knob is
    built once at construction to learn its size, identity and defaults, and
    :meth:`describe` is that knob's description.
    """

    def __init__(self, model: nn.Module, spec: Mapping[str, Any]) -> None:
        (knob,) = build_knobs(model, [dict(spec)])
        self.model = model
        self.spec = knob.describe()
        self.name, self.size = knob.name, knob.size
        self.sigma, self.lower, self.upper = knob.sigma, knob.lower, knob.upper
        self._identity = np.asarray(knob.identity(), dtype=float).copy()
        self._knob: Knob | None = None

    def identity(self) -> np.ndarray:
        return self._identity.copy()

    def apply(self, values: np.ndarray) -> None:
        if self._knob is None:
            (self._knob,) = build_knobs(self.model, [self.spec])
        self._knob.apply(values)

    def restore(self) -> None:
        if self._knob is not None:
            knob, self._knob = self._knob, None
            knob.restore()

    def describe(self) -> dict[str, Any]:
        return dict(self.spec)


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    out = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, *_CONV, *_CONV_T)):
            out.append((name, module))
        elif isinstance(module, _NORMS) and isinstance(getattr(module, "weight", None), nn.Parameter):
            out.append((name, module))  # affine norms only: without parameters there is nothing to retrofit
    return out


def _layer_groups(model: nn.Module, name: str, module: nn.Module, max_group_size: int,
                  seen: set[int]) -> list[ProbeGroup]:
    prefix, label = (f"{name}.", name) if name else ("", "(model)")
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    groups = []

    def add(title: str, tensor: Any, spec: dict[str, Any], size: int | None) -> None:
        if tensor is not None:
            if id(tensor) in seen or not tensor.is_floating_point() or tensor.numel() == 0:
                return  # tied weights are probed once, under the first layer that holds them
            seen.add(id(tensor))
        if size is not None and size > max_group_size:
            return  # known too big before building (and copying) anything
        try:
            knob = DeferredKnob(model, spec) if tensor is not None else build_knobs(model, [spec])[0]
        except UsageError:
            return  # a layer the knobs cannot handle (say, an unusual output) is not a candidate
        if knob.size <= max_group_size:
            groups.append(ProbeGroup(name=f"{label} {title}", knobs=(knob,)))

    if isinstance(weight, nn.Parameter) and weight.dim() >= 1:
        dim = 1 if isinstance(module, _CONV_T) else 0
        add("channel gains", weight, {"kind": "channel_gain", "target": prefix + "weight", "dim": dim},
            weight.shape[dim] if weight.dim() > dim else None)
    if isinstance(bias, nn.Parameter):
        add("bias", bias, {"kind": "bias_shift", "target": prefix + "bias"}, bias.numel())
        # without a bias, output gains equal channel gains on the weight: offered only with one
        add("output gains", None, {"kind": "output_gain", "target": name}, None)
    return groups


def _spread(items: list[Any], count: int) -> list[Any]:
    """``count`` items evenly spaced over ``items``, first and last included."""
    if len(items) <= count:
        return items
    if count == 1:
        return [items[-1]]  # the output end of a model is where a retrofit usually acts
    picks = np.unique(np.round(np.linspace(0, len(items) - 1, count)).astype(int))
    return [items[i] for i in picks]


def torch_groups(model: nn.Module, max_groups: int | None = MAX_GROUPS,
                 max_group_size: int = MAX_GROUP_SIZE) -> list[ProbeGroup]:
    """Candidate groups of ``model``, in layer order (see the module docstring).

    Groups of more than ``max_group_size`` parameters are skipped. If more than ``max_groups``
    remain, that many are kept, spread evenly over the model's depth (the first and the last
    kept); ``None`` keeps all.
    """
    seen: set[int] = set()
    groups = [group for name, module in _layers(model)
              for group in _layer_groups(model, name, module, max_group_size, seen)]
    return groups if max_groups is None else _spread(groups, max(1, int(max_groups)))
