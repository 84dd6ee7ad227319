"""Export a retrofitted torch model: a baked state_dict, and a delta file.

A *delta file* is the retrofit itself: the knob specs (:meth:`Knob.describe`) and their
natural values, a few KB of JSON. :func:`apply_delta` rebuilds the knobs on a fresh copy of
the same model and applies them. A *baked state_dict* is a plain checkpoint with the tensor
knobs written into the weights, loadable without retrofit; activation knobs are folded into
the module's weight and bias where that is exact in real arithmetic (Linear/Conv outputs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from retrofit import delta as core_delta
from retrofit.errors import UsageError
from retrofit.knobs import Knob
from retrofit.nn.knobs import ActivationKnob, OutputGainKnob, SteeringKnob, TensorKnob, _work_dtype, build_knobs

DELTA_FORMAT = core_delta.FORMAT


def _values_for(knobs: Sequence[Knob], values: Mapping[str, Any]) -> dict[str, np.ndarray]:
    missing = [knob.name for knob in knobs if knob.name not in values]
    if missing:
        raise UsageError(f"no values for knob(s) {', '.join(missing)}")
    out = {}
    for knob in knobs:
        arr = np.asarray(values[knob.name], dtype=np.float64).reshape(-1)
        if arr.size != knob.size:
            raise UsageError(f"knob {knob.name}: expected {knob.size} values, got {arr.size}")
        out[knob.name] = arr
    return out


# -- baking -----------------------------------------------------------------------------------

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _fold_layout(knob: ActivationKnob) -> int | None:
    """The weight dim holding the output channels if ``knob`` folds into its module, else None."""
    module = knob.module
    if isinstance(module, nn.Linear) and knob.dim == -1:
        return 0
    if isinstance(module, _CONV) and knob.dim == 1:
        return 0
    # a grouped transposed conv spreads output channels over dims 0 and 1: not a plain scale
    if isinstance(module, _CONV_T) and knob.dim == 1 and module.groups == 1:
        return 1
    return None


def _not_bakeable(knob: ActivationKnob, why: str) -> UsageError:
    return UsageError(f"knob {knob.name} ({knob.kind} on {knob.target}, a {type(knob.module).__name__}) "
                      f"cannot be baked into a state_dict: {why}; it is exported only in the delta file")


def _check_bound(model: nn.Module, knob: Knob) -> None:
    if isinstance(knob, TensorKnob):
        if not any(t is knob.tensor for t in (*model.parameters(), *model.buffers())):
            raise UsageError(f"knob {knob.name} acts on a tensor that is not part of this model")
    elif isinstance(knob, ActivationKnob):
        try:
            module = model.get_submodule(knob.target)
        except AttributeError:
            module = None
        if module is not knob.module:
            raise UsageError(f"knob {knob.name} hooks a module that is not {knob.target!r} of this model")


def _scaled(tensor: Tensor, gains: np.ndarray, dim: int) -> Tensor:
    shape = [1] * tensor.dim()
    shape[dim] = gains.size
    g = torch.as_tensor(gains, dtype=_work_dtype(tensor.dtype), device=tensor.device).reshape(shape)
    return (tensor.to(g.dtype) * g).to(tensor.dtype)


def _fold(state: dict[str, Tensor], knob: ActivationKnob, values: np.ndarray) -> None:
    out_dim = _fold_layout(knob)
    if out_dim is None:
        raise _not_bakeable(knob, "only Linear (dim -1) and Conv (dim 1) outputs fold into weights")
    prefix = f"{knob.target}." if knob.target else ""
    bias_key, weight_key = prefix + "bias", prefix + "weight"
    bias = state.get(bias_key) if knob.module.bias is not None else None
    if isinstance(knob, OutputGainKnob):
        gains = knob.gains(values)
        state[weight_key] = _scaled(state[weight_key], gains, out_dim)
        if bias is not None:
            state[bias_key] = _scaled(bias, gains, 0)
    elif isinstance(knob, SteeringKnob):
        if bias is None:
            raise _not_bakeable(knob, "the module has no bias to absorb the shift")
        shift = torch.as_tensor(values, dtype=_work_dtype(bias.dtype), device=bias.device)
        state[bias_key] = (bias.to(shift.dtype) + shift).to(bias.dtype)
    else:
        raise _not_bakeable(knob, "no folding rule for this kind")


def bake_state_dict(model: nn.Module, knobs: Sequence[Knob], values: Mapping[str, Any]) -> dict[str, Tensor]:
    """A standard state_dict of ``model`` with ``values`` (natural, per knob name) baked in.

    Tensor knobs are applied, the state_dict is copied, and the model is restored (its tensors
    are bit-identical afterwards). Activation knobs away from their identity are folded into
    their module's parameters in knob order: an output gain scales a Linear/Conv module's
    output channels in weight and bias, a steering vector adds to its bias. Any other
    activation knob raises :class:`~retrofit.errors.UsageError` before the model is touched.
    """
    values = _values_for(knobs, values)
    for knob in knobs:
        _check_bound(model, knob)
    folds = [k for k in knobs if isinstance(k, ActivationKnob) and not np.array_equal(values[k.name], k.identity())]
    for knob in folds:
        if _fold_layout(knob) is None:
            raise _not_bakeable(knob, "only Linear (dim -1) and Conv (dim 1) outputs fold into weights")
        if isinstance(knob, SteeringKnob) and knob.module.bias is None:
            raise _not_bakeable(knob, "the module has no bias to absorb the shift")
    applied: list[Knob] = []
    try:
        for knob in knobs:
            if not isinstance(knob, ActivationKnob):
                applied.append(knob)
                knob.apply(values[knob.name])
        state = {key: tensor.detach().clone() for key, tensor in model.state_dict().items()}
    finally:
        for knob in reversed(applied):
            knob.restore()
    for knob in folds:
        _fold(state, knob, values[knob.name])
    return state


# -- delta files ------------------------------------------------------------------------------
# The file format and its I/O are the core's (retrofit.delta); this adds torch knob objects on
# the writing side and rebuilt, checked knobs on the reading side.

class Delta(NamedTuple):
    """The contents of a delta file: knob specs and natural values per knob name."""

    specs: list[dict[str, Any]]
    values: dict[str, np.ndarray]
    domain: str = ""


def write_delta(path: str | os.PathLike[str], knobs: Sequence[Knob], values: Mapping[str, Any],
                domain: str = "") -> Path:
    """Write the knobs' specs (:meth:`Knob.describe`) and natural values to a delta file.

    Values must be finite; floats are written with full precision, so reading is exact.
    """
    path = Path(path)
    arrays = _values_for(knobs, values)
    for name, arr in arrays.items():
        if not np.all(np.isfinite(arr)):
            raise UsageError(f"knob {name}: values must be finite to be written")
    specs = [knob.describe() for knob in knobs]
    try:
        json.dumps(specs, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"a knob description is not JSON-able: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    return core_delta.write_delta(path, specs, {name: arr.tolist() for name, arr in arrays.items()}, domain=domain)


def read_delta(path: str | os.PathLike[str]) -> Delta:
    """Read and check a delta file: named specs, and finite values matching them."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"delta file {path} does not exist")
    doc = core_delta.read_delta(path)
    specs, values = doc.get("knobs"), doc.get("values")
    if not isinstance(specs, list) or not all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in specs) \
            or not isinstance(values, dict):
        raise UsageError(f"delta file {path}: 'knobs' must be a list of named knob specs and 'values' a dict")
    names = [s["name"] for s in specs]
    if sorted(names) != sorted(values):
        raise UsageError(f"delta file {path}: knobs {names} do not match values {sorted(values)}")
    try:
        arrays = {name: np.asarray(values[name], dtype=np.float64).reshape(-1) for name in names}
    except (TypeError, ValueError) as exc:
        raise UsageError(f"delta file {path}: values must be lists of numbers ({exc})") from None
    for name, arr in arrays.items():
        if not np.all(np.isfinite(arr)):
            raise UsageError(f"delta file {path}: knob {name} has non-finite values")
    return Delta(specs, arrays, str(doc.get("domain") or ""))


def apply_delta(model: nn.Module, path: str | os.PathLike[str]) -> list[Knob]:
    """Rebuild the knobs of a delta file on ``model`` and apply its values, in place.

    Returns the knobs; call ``restore()`` on each (in reverse order) to undo.
    """
    delta = read_delta(path)
    knobs = build_knobs(model, delta.specs)
    applied: list[Knob] = []
    try:
        for knob in knobs:
            knob.apply(delta.values[knob.name])
            applied.append(knob)
    except BaseException:
        for knob in reversed(applied):
            knob.restore()
        raise
    return knobs
