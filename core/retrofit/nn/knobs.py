"""Knobs that act on a torch model in place.

Two families:

* *tensor knobs* rewrite one parameter tensor of the model: ``apply`` computes the new
  tensor from a clone of the original taken at construction and ``copy_``s it in, ``restore``
  copies the clone back, so the tensor is bit-identical afterwards. Arithmetic runs in at
  least float32 and is cast back to the tensor's own dtype; the device never changes.
* *activation knobs* change a module's output through a forward hook. ``apply`` registers
  (or updates) the hook and ``restore`` removes it. At the identity no hook is installed at
  all, so candidate 0 costs nothing and is exact.

Build knobs after moving the model to its device and dtype: each tensor knob keeps a clone
of the tensor as it was then. :func:`build_knobs` turns JSON-able specs (config files, delta
files, :meth:`Knob.describe` output) into knobs.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from retrofit.errors import UsageError
from retrofit.knobs import Knob
from retrofit.nn.select import select_modules, select_parameters

#: log-gains live in [-3, 3], i.e. gains in [0.05, 20]: wide enough that identity (0) is
#: 60 default steps from either edge.
LOG_GAIN_BOUND = 3.0
#: linear gains get the same range as exp(+-LOG_GAIN_BOUND), floored at 0 to keep the sign.
GAIN_UPPER = math.exp(LOG_GAIN_BOUND)
#: step used when a tensor is all zeros, so there is no scale to be relative to.
FALLBACK_SIGMA = 0.01
#: largest tensor a ``full`` knob accepts: beyond that the search space is too big.
FULL_MAX_ELEMENTS = 4096


def _check_tensor(name: str, tensor: Any) -> Tensor:
    if not isinstance(tensor, Tensor):
        raise UsageError(f"knob {name}: expected a torch tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise UsageError(f"knob {name}: tensor has dtype {tensor.dtype}; knobs need a floating-point tensor")
    return tensor


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    # half-precision tensors are computed in float32 and rounded once, on the way back
    return torch.promote_types(dtype, torch.float32)


def _spread(tensor: Tensor) -> float:
    """Std of the tensor, else its RMS, else 0: the scale a relative sigma refers to."""
    t = tensor.detach().to(torch.float64)
    if t.numel() > 1:
        std = float(t.std(correction=0))
        if std > 0 and math.isfinite(std):
            return std
    rms = float(t.square().mean().sqrt()) if t.numel() else 0.0
    return rms if rms > 0 and math.isfinite(rms) else 0.0


def _relative_sigma(tensor: Tensor, fraction: float) -> float:
    spread = _spread(tensor)
    return fraction * spread if spread > 0 else FALLBACK_SIGMA


def _as_values(knob: Knob, values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size != knob.size:
        raise UsageError(f"knob {knob.name}: expected {knob.size} values, got {arr.size}")
    return arr


def _check_dim(name: str, dim: int, ndim: int) -> int:
    if not -ndim <= dim < ndim:
        raise UsageError(f"knob {name}: dim {dim} is out of range for a {ndim}-D tensor")
    return dim % ndim


def _gain_bounds(log: bool, lower: float | None, upper: float | None) -> tuple[float, float]:
    # gains are always bounded: None picks the default for that side
    default_lower, default_upper = (-LOG_GAIN_BOUND, LOG_GAIN_BOUND) if log else (0.0, GAIN_UPPER)
    return (default_lower if lower is None else lower), (default_upper if upper is None else upper)


def _add_exact(original: Tensor, delta: Tensor) -> Tensor:
    # x + 0.0 turns -0.0 into +0.0; keep the original wherever the delta is zero so an
    # identity (or partly identity) shift leaves those elements bit-identical.
    return torch.where(delta == 0, original, original + delta)


class TensorKnob(Knob):
    """Base of the knobs that rewrite one tensor of the model in place.

    ``target`` is the tensor's name in the model (used by :meth:`describe` and by
    :func:`build_knobs` to find it again); it defaults to ``name``.
    """

    kind: str = ""

    def __init__(self, name: str, tensor: Tensor, *, size: int, target: str | None,
                 sigma: float, lower: float | None, upper: float | None) -> None:
        self.name = name
        self.target = name if target is None else target
        self.tensor = _check_tensor(name, tensor)
        self.size = int(size)
        self.sigma, self.lower, self.upper = float(sigma), lower, upper
        self._original = tensor.detach().clone()

    def _original_work(self) -> Tensor:
        return self._original.to(_work_dtype(self._original.dtype))

    def _torch(self, values: np.ndarray) -> Tensor:
        return torch.as_tensor(values, dtype=_work_dtype(self._original.dtype), device=self._original.device)

    def _compute(self, values: np.ndarray) -> Tensor:
        """The new tensor (any float dtype, same device) for these natural values."""
        raise NotImplementedError

    def apply(self, values: np.ndarray) -> None:
        new = self._compute(_as_values(self, values))
        with torch.no_grad():
            self.tensor.copy_(new)

    def restore(self) -> None:
        with torch.no_grad():
            self.tensor.copy_(self._original)

    def _args(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "target": self.target, "size": self.size,
                "sigma": self.sigma, "lower": self.lower, "upper": self.upper, **self._args()}


class ScaleKnob(TensorKnob):
    """One scalar multiplying a whole tensor (natural identity 1.0, bounds [0, 10])."""

    kind = "scale"

    def __init__(self, name: str, param: Tensor, *, target: str | None = None, sigma: float = 0.05,
                 lower: float | None = 0.0, upper: float | None = 10.0) -> None:
        super().__init__(name, param, size=1, target=target, sigma=sigma, lower=lower, upper=upper)

    def identity(self) -> np.ndarray:
        return np.ones(1)

    def _compute(self, values: np.ndarray) -> Tensor:
        return self._original_work() * float(values[0])


class ChannelGainKnob(TensorKnob):
    """A gain per slice along ``dim`` (the output channel, dim 0, of Linear/Conv weights).

    With ``log=True`` the natural value is a log-gain (identity 0, gain ``exp(v)``, bounds
    [-3, 3]), which keeps gains positive and makes halving and doubling equally far away.
    With ``log=False`` it is the gain itself (identity 1, bounds [0, 20]). A bound left at
    ``None`` takes that default: gains are always bounded.
    """

    kind = "channel_gain"

    def __init__(self, name: str, param: Tensor, log: bool = True, *, dim: int = 0, target: str | None = None,
                 sigma: float = 0.05, lower: float | None = None, upper: float | None = None) -> None:
        _check_tensor(name, param)
        if param.dim() == 0:
            raise UsageError(f"knob {name}: a channel gain needs a tensor with channels; use a scale knob on a scalar")
        self.log = bool(log)
        self.dim = _check_dim(name, dim, param.dim())
        lower, upper = _gain_bounds(self.log, lower, upper)
        super().__init__(name, param, size=param.shape[self.dim], target=target, sigma=sigma, lower=lower, upper=upper)

    def identity(self) -> np.ndarray:
        return np.zeros(self.size) if self.log else np.ones(self.size)

    def gains(self, values: np.ndarray) -> np.ndarray:
        """The multiplicative gains for these natural values."""
        values = _as_values(self, values)
        return np.exp(values) if self.log else values

    def _compute(self, values: np.ndarray) -> Tensor:
        shape = [1] * self._original.dim()
        shape[self.dim] = self.size
        return self._original_work() * self._torch(self.gains(values)).reshape(shape)

    def _args(self) -> dict[str, Any]:
        return {"log": self.log, "dim": self.dim}


class BiasShiftKnob(TensorKnob):
    """An additive shift of every element of a (bias) tensor; identity zeros.

    The default ``sigma`` is a tenth of the tensor's spread (std, else RMS), unbounded.
    """

    kind = "bias_shift"

    def __init__(self, name: str, param: Tensor, *, target: str | None = None, sigma: float | None = None,
                 lower: float | None = None, upper: float | None = None) -> None:
        _check_tensor(name, param)
        sigma = _relative_sigma(param, 0.1) if sigma is None else sigma
        super().__init__(name, param, size=param.numel(), target=target, sigma=sigma, lower=lower, upper=upper)

    def identity(self) -> np.ndarray:
        return np.zeros(self.size)

    def _compute(self, values: np.ndarray) -> Tensor:
        return _add_exact(self._original_work(), self._torch(values).reshape(self._original.shape))


class LowRankKnob(TensorKnob):
    """A low-rank update ``W += U @ V.T`` of a weight seen as a matrix ``[out, rest]``.

    Only ``U`` (``out x rank``, identity zeros) is searched: ``V`` (``rest x rank``) is a fixed
    random basis, so the knob has ``rank * out`` values, its identity is exactly zero (no
    flat direction where a zero factor hides changes of the other), and it is linear in its
    values. ``V`` has i.i.d. N(0, 1/rest) entries (columns of norm ~1) drawn by numpy's PCG64
    from ``seed`` and the CRC32 of ``target``, so a fresh copy of the model rebuilds the same
    basis from :meth:`describe`. Conv weights are flattened over ``in * kh * kw``.

    The default ``sigma`` moves each row of ``W`` by about 5 % of its norm per unit step.
    """

    kind = "low_rank"

    def __init__(self, name: str, param: Tensor, rank: int, *, seed: int = 0, target: str | None = None,
                 sigma: float | None = None, lower: float | None = None, upper: float | None = None) -> None:
        _check_tensor(name, param)
        if param.dim() < 2:
            raise UsageError(f"knob {name}: a low-rank knob needs a weight with 2 or more dims, got shape {tuple(param.shape)}")
        out = param.shape[0]
        rest = param.numel() // out
        if not 1 <= rank <= rest:
            raise UsageError(f"knob {name}: rank must be between 1 and {rest} for shape {tuple(param.shape)}, got {rank}")
        self.rank, self.seed = int(rank), int(seed)
        if sigma is None:
            spread = _spread(param)
            # U entries of size sigma move a row by ~sigma*sqrt(rank); a row's norm is ~spread*sqrt(rest)
            sigma = 0.05 * spread * math.sqrt(rest / rank) if spread > 0 else FALLBACK_SIGMA
        super().__init__(name, param, size=out * self.rank, target=target, sigma=sigma, lower=lower, upper=upper)
        rng = np.random.default_rng([self.seed, zlib.crc32(self.target.encode())])
        basis = rng.standard_normal((rest, self.rank)) / math.sqrt(rest)
        self.basis = self._torch(basis)

    def identity(self) -> np.ndarray:
        return np.zeros(self.size)

    def _compute(self, values: np.ndarray) -> Tensor:
        u = self._torch(values).reshape(self._original.shape[0], self.rank)
        return _add_exact(self._original_work(), (u @ self.basis.T).reshape(self._original.shape))

    def _args(self) -> dict[str, Any]:
        return {"rank": self.rank, "seed": self.seed}


class FullTensorKnob(TensorKnob):
    """Every element of a small tensor; identity = its current values.

    Refuses tensors above ``max_elements``. The default ``sigma`` is a tenth of the tensor's
    spread (std, else RMS), unbounded.
    """

    kind = "full"

    def __init__(self, name: str, param: Tensor, *, max_elements: int = FULL_MAX_ELEMENTS, target: str | None = None,
                 sigma: float | None = None, lower: float | None = None, upper: float | None = None) -> None:
        _check_tensor(name, param)
        if param.numel() > max_elements:
            raise UsageError(f"knob {name}: a full knob on {tuple(param.shape)} means {param.numel()} values "
                             f"(limit {max_elements}); use a low_rank knob (or channel_gain / bias_shift), "
                             "or raise max_elements")
        self.max_elements = int(max_elements)
        sigma = _relative_sigma(param, 0.1) if sigma is None else sigma
        super().__init__(name, param, size=param.numel(), target=target, sigma=sigma, lower=lower, upper=upper)
        # float64 holds every float16/bfloat16/float32 value exactly, so identity round-trips
        self._identity = self._original.detach().to(torch.float64).cpu().numpy().reshape(-1)

    def identity(self) -> np.ndarray:
        return self._identity.copy()

    def _compute(self, values: np.ndarray) -> Tensor:
        return torch.as_tensor(values, dtype=torch.float64, device=self._original.device).reshape(self._original.shape)

    def _args(self) -> dict[str, Any]:
        return {"max_elements": self.max_elements}


def _map_first(output: Any, fn: Callable[[Tensor], Tensor], name: str) -> Any:
    """Apply ``fn`` to a tensor output, or to the first element of a tuple/list output."""
    if isinstance(output, Tensor):
        return fn(output)
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        items = [fn(output[0]), *output[1:]]
        if isinstance(output, list):
            return items
        return type(output)(*items) if hasattr(output, "_fields") else tuple(items)  # namedtuple-safe
    raise UsageError(f"knob {name}: module output is {type(output).__name__}; "
                     "activation knobs need a tensor or a tuple/list whose first element is one")


class ActivationKnob(Knob):
    """Base of the knobs that change a module's output with a forward hook.

    ``dim`` is the output dimension the ``size`` values run along (the others broadcast).
    ``target`` is the module's name in the model; it defaults to ``name``.
    """

    kind: str = ""

    def __init__(self, name: str, module: nn.Module, *, size: int, dim: int, target: str | None,
                 sigma: float, lower: float | None, upper: float | None) -> None:
        if not isinstance(module, nn.Module):
            raise UsageError(f"knob {name}: expected an nn.Module, got {type(module).__name__}")
        if int(size) < 1:
            raise UsageError(f"knob {name}: size must be at least 1, got {size}")
        self.name = name
        self.target = name if target is None else target
        self.module = module
        self.size, self.dim = int(size), int(dim)
        self.sigma, self.lower, self.upper = float(sigma), lower, upper
        self._handle: torch.utils.hooks.RemovableHandle | None = None
        self._vector: Tensor | None = None  # float64 on CPU; cast per output dtype/device
        self._cache: dict[tuple[torch.device, torch.dtype, int], Tensor] = {}

    @property
    def hooked(self) -> bool:
        """Whether the forward hook is currently installed."""
        return self._handle is not None

    def _transform(self, values: np.ndarray) -> np.ndarray:
        """Natural values -> the vector the hook uses."""
        return values

    def _modify(self, output: Tensor, vector: Tensor) -> Tensor:
        raise NotImplementedError

    def apply(self, values: np.ndarray) -> None:
        values = _as_values(self, values)
        if np.array_equal(values, self.identity()):
            self.restore()  # identity: no hook, so outputs are untouched bit for bit
            return
        self._vector = torch.from_numpy(np.array(self._transform(values), dtype=np.float64))
        self._cache = {}
        if self._handle is None:
            self._handle = self.module.register_forward_hook(self._hook)

    def restore(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._vector, self._cache = None, {}

    def _broadcast(self, output: Tensor) -> Tensor:
        key = (output.device, output.dtype, output.dim())
        if key not in self._cache:
            if not output.is_floating_point():
                raise UsageError(f"knob {self.name}: module output has dtype {output.dtype}, not floating point")
            dim = _check_dim(self.name, self.dim, output.dim())
            if output.shape[dim] != self.size:
                raise UsageError(f"knob {self.name}: expected {self.size} entries along dim {self.dim} of "
                                 f"{self.target}'s output, which has shape {tuple(output.shape)}")
            shape = [1] * output.dim()
            shape[dim] = self.size
            self._cache[key] = self._vector.to(device=output.device, dtype=output.dtype).reshape(shape)
        return self._cache[key]

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        if self._vector is None:
            return None
        return _map_first(output, lambda out: self._modify(out, self._broadcast(out)), self.name)

    def _args(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "target": self.target, "size": self.size,
                "sigma": self.sigma, "lower": self.lower, "upper": self.upper, **self._args()}


class OutputGainKnob(ActivationKnob):
    """A gain per channel (along ``channel_dim``) on a module's output.

    Same natural values and bounds as :class:`ChannelGainKnob` (``log=True``: log-gain,
    identity 0, bounds [-3, 3]).
    """

    kind = "output_gain"

    def __init__(self, name: str, module: nn.Module, channels: int, channel_dim: int = 1, log: bool = True, *,
                 target: str | None = None, sigma: float = 0.05, lower: float | None = None,
                 upper: float | None = None) -> None:
        self.log = bool(log)
        lower, upper = _gain_bounds(self.log, lower, upper)
        super().__init__(name, module, size=channels, dim=channel_dim, target=target, sigma=sigma,
                         lower=lower, upper=upper)

    @property
    def channel_dim(self) -> int:
        return self.dim

    def identity(self) -> np.ndarray:
        return np.zeros(self.size) if self.log else np.ones(self.size)

    def gains(self, values: np.ndarray) -> np.ndarray:
        """The multiplicative gains for these natural values."""
        values = _as_values(self, values)
        return np.exp(values) if self.log else values

    def _transform(self, values: np.ndarray) -> np.ndarray:
        return self.gains(values)

    def _modify(self, output: Tensor, vector: Tensor) -> Tensor:
        return output * vector

    def _args(self) -> dict[str, Any]:
        return {"channels": self.size, "channel_dim": self.dim, "log": self.log}


class SteeringKnob(ActivationKnob):
    """An additive vector of ``width`` entries (along ``dim``) on a module's output.

    Identity zeros, unbounded. The default ``sigma`` (0.05) is in output units: set it to
    about a tenth of the output's spread when that is far from 1.
    """

    kind = "steering"

    def __init__(self, name: str, module: nn.Module, width: int, dim: int = -1, *, target: str | None = None,
                 sigma: float = 0.05, lower: float | None = None, upper: float | None = None) -> None:
        super().__init__(name, module, size=width, dim=dim, target=target, sigma=sigma, lower=lower, upper=upper)

    def identity(self) -> np.ndarray:
        return np.zeros(self.size)

    def _modify(self, output: Tensor, vector: Tensor) -> Tensor:
        return output + vector

    def _args(self) -> dict[str, Any]:
        return {"width": self.size, "dim": self.dim}


# -- specs -> knobs ---------------------------------------------------------------------------

TENSOR_KINDS: dict[str, type[TensorKnob]] = {
    "scale": ScaleKnob, "channel_gain": ChannelGainKnob, "bias_shift": BiasShiftKnob,
    "low_rank": LowRankKnob, "full": FullTensorKnob,
}
ACTIVATION_KINDS: dict[str, type[ActivationKnob]] = {"output_gain": OutputGainKnob, "steering": SteeringKnob}
KINDS: tuple[str, ...] = (*TENSOR_KINDS, *ACTIVATION_KINDS)

_COMMON_KEYS = ("kind", "target", "name", "size", "sigma", "lower", "upper")
# kind-specific spec keys and the type each must have
_KIND_KEYS: dict[str, dict[str, type]] = {
    "scale": {}, "bias_shift": {},
    "channel_gain": {"log": bool, "dim": int},
    "low_rank": {"rank": int, "seed": int},
    "full": {"max_elements": int},
    "output_gain": {"channels": int, "channel_dim": int, "log": bool},
    "steering": {"width": int, "dim": int},
}

_LAST_DIM_MODULES = (nn.Linear, nn.Embedding, nn.LayerNorm, nn.RMSNorm)


def _feature_dim(module: nn.Module) -> int:
    """Where a module's features live in its output: last for Linear-like, 1 (channels) otherwise."""
    return -1 if isinstance(module, _LAST_DIM_MODULES) else 1


def _feature_count(module: nn.Module) -> int | None:
    """The number of output features of common layers, or None if it cannot be told."""
    for attr in ("out_features", "out_channels", "num_features", "num_channels", "embedding_dim"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    shape = getattr(module, "normalized_shape", None)
    if isinstance(shape, tuple) and shape:
        return int(shape[-1])
    return None


def _checked(where: str, key: str, value: Any, kind: type) -> Any:
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        raise UsageError(f"{where}: {key} must be {kind.__name__}, got {value!r}")
    return value


def _number(where: str, key: str, value: Any) -> float | None:
    if value is None and key != "sigma":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{where}: {key} must be a finite number, got {value!r}")
    if key == "sigma" and value <= 0:
        raise UsageError(f"{where}: sigma must be positive, got {value!r}")
    return float(value)


def build_knobs(model: nn.Module, specs: Sequence[Mapping[str, Any]]) -> list[Knob]:
    """Build knobs on ``model`` from JSON-able specs, in order.

    Each spec is a dict with ``kind`` (one of :data:`KINDS`) and ``target``: a parameter name
    or glob for tensor kinds, a module name or glob for ``output_gain`` and ``steering``. A
    glob gives one knob per match, named ``f"{kind}:{name}"``. Optional keys: ``name`` (only
    for a single match), ``sigma``, ``lower``, ``upper``, ``size`` (checked: it guards delta
    files against a different model) and the kind's own arguments: ``log``/``dim``
    (channel_gain), ``rank`` (required)/``seed`` (low_rank), ``max_elements`` (full),
    ``channels``/``channel_dim``/``log`` (output_gain), ``width``/``dim`` (steering). Channel
    counts and feature dims are inferred for Linear, Conv, norm and Embedding modules.
    :meth:`Knob.describe` output is a valid spec.
    """
    if isinstance(specs, (str, bytes, Mapping)) or not isinstance(specs, Sequence):
        raise UsageError(f"knob specs must be a list of dicts, got {type(specs).__name__}")
    knobs: list[Knob] = []
    names: set[str] = set()
    owners: dict[int, str] = {}  # id(tensor) -> knob name: two tensor knobs on one tensor would clobber each other
    for index, spec in enumerate(specs):
        where = f"knob spec {index + 1}"
        if not isinstance(spec, Mapping):
            raise UsageError(f"{where}: expected a dict with 'kind' and 'target', got {type(spec).__name__}")
        kind = spec.get("kind")
        if kind not in TENSOR_KINDS and kind not in ACTIVATION_KINDS:
            raise UsageError(f"{where}: unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
        where = f"{where} ({kind})"
        allowed = (*_COMMON_KEYS, *_KIND_KEYS[kind])
        unknown = sorted(set(spec) - set(allowed))
        if unknown:
            raise UsageError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(allowed)}")
        target = spec.get("target")
        if not isinstance(target, str):
            raise UsageError(f"{where}: 'target' must be a parameter or module name (or glob), got {target!r}")
        args = {key: _checked(where, key, spec[key], typ) for key, typ in _KIND_KEYS[kind].items() if key in spec}
        args.update({key: _number(where, key, spec[key]) for key in ("sigma", "lower", "upper") if key in spec})
        if kind == "low_rank" and "rank" not in args:
            raise UsageError(f"{where}: 'rank' is required")

        matches = select_parameters(model, target) if kind in TENSOR_KINDS else select_modules(model, target)
        if "name" in spec and len(matches) > 1:
            raise UsageError(f"{where}: 'name' given but {target!r} matches {len(matches)} targets")
        for match_name, obj in matches:
            name = spec.get("name") or f"{kind}:{match_name}"
            if name in names:
                raise UsageError(f"{where}: knob name {name!r} is used twice")
            if kind in TENSOR_KINDS:
                if id(obj) in owners:
                    raise UsageError(f"{where}: {match_name} already has knob {owners[id(obj)]}; "
                                     "one tensor takes one tensor knob")
                knob: Knob = TENSOR_KINDS[kind](name, obj, target=match_name, **args)
                owners[id(obj)] = name
            else:
                knob = _activation_knob(where, kind, name, match_name, obj, dict(args))
            if "size" in spec and spec["size"] != knob.size:
                raise UsageError(f"{where}: {name} has {knob.size} values on this model, the spec says "
                                 f"{spec['size']}; the spec was made for another model")
            names.add(name)
            knobs.append(knob)
    return knobs


def _activation_knob(where: str, kind: str, name: str, target: str, module: nn.Module,
                     args: dict[str, Any]) -> ActivationKnob:
    count_key, dim_key = ("channels", "channel_dim") if kind == "output_gain" else ("width", "dim")
    args.setdefault(dim_key, _feature_dim(module))
    count = _feature_count(module) if args[dim_key] == _feature_dim(module) else None
    if count_key not in args:
        if count is None:
            raise UsageError(f"{where}: cannot tell how many features {target} ({type(module).__name__}) "
                             f"outputs; give {count_key!r}")
        args[count_key] = count
    elif count is not None and args[count_key] != count:
        # caught here rather than at the first forward: a delta file made for another model
        raise UsageError(f"{where}: {target} outputs {count} features but the spec says {args[count_key]}; "
                         "the spec was made for another model")
    return ACTIVATION_KINDS[kind](name, module, target=target, **args)
