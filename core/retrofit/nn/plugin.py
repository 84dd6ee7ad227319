"""The ``retrofit_export`` and ``retrofit_probe_groups`` implementations for torch models.

Importing this module does not import torch: the core registers it for every command, and
it only looks at the model when torch is already loaded (a torch model implies it is).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrofit import hookimpl
from retrofit.errors import UsageError

if TYPE_CHECKING:
    from retrofit.knobs import Knob, ProbeGroup

#: checkpoint suffixes this plugin writes as a ``torch.save``d state_dict
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin")


@hookimpl(trylast=True)
def retrofit_export(domain: str, model: Any, knobs: Sequence[Knob], values: Mapping[str, Any], output: Path) -> Path | None:
    """Write ``output`` (.pt/.pth/.bin) as a baked state_dict.

    Returns None (another plugin takes over, or the core's delta file is the whole export) when
    the model is not an ``nn.Module`` or ``output`` has another suffix. The core writes the
    delta file before calling this hook, so a knob that cannot be baked still leaves a usable
    export and an error that says so.
    """
    if "torch" not in sys.modules:
        return None
    import torch

    if not isinstance(model, torch.nn.Module):
        return None
    output = Path(output)
    if output.suffix.lower() not in STATE_DICT_SUFFIXES:
        return None
    from retrofit.delta import delta_path
    from retrofit.nn.export import bake_state_dict

    try:
        state = bake_state_dict(model, knobs, values)
    except UsageError as exc:
        raise UsageError(f"{exc} (the delta file {delta_path(output)} was written; "
                         f"load it with retrofit.nn.apply_delta)") from exc
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, output)
    return output


@hookimpl(trylast=True)
def retrofit_probe_groups(model: Any) -> list[ProbeGroup] | None:
    """Every layer's channel gains, biases and output gains (:func:`retrofit.nn.probe.torch_groups`).

    Registered ``trylast``: a domain plugin that knows better groups for its model answers first.
    Returns None when the model is not an ``nn.Module``.
    """
    if "torch" not in sys.modules:
        return None
    import torch

    if not isinstance(model, torch.nn.Module):
        return None
    from retrofit.nn.probe import torch_groups

    return torch_groups(model)
