"""The torch toolkit: select tensors and modules, knobs on them, and exports.

The only part of retrofit that imports torch. Names are loaded lazily so that importing
:mod:`retrofit.nn.plugin` (registered for every command) does not pull torch in.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "select": ("select_parameters", "select_modules"),
    "knobs": ("TensorKnob", "ScaleKnob", "ChannelGainKnob", "BiasShiftKnob", "LowRankKnob", "FullTensorKnob",
              "ActivationKnob", "OutputGainKnob", "SteeringKnob", "build_knobs", "KINDS"),
    "export": ("bake_state_dict", "write_delta", "read_delta", "apply_delta", "Delta",
               "DELTA_FORMAT"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
