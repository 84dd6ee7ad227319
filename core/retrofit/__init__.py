"""retrofit: retrofit trained deep models on metrics gradients cannot reach, with nevergrad.

Plugin authors need only this module: :data:`hookimpl` to mark hook implementations, and
the types the hooks exchange. Everything is imported lazily so that ``retrofit --help``
stays fast.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import pluggy

try:
    __version__ = metadata.version("retrofit-core")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+source"

hookimpl = pluggy.HookimplMarker("retrofit")

_EXPORTS = {
    "Domain": "retrofit.domain", "Option": "retrofit.domain",
    "Config": "retrofit.config", "RunSettings": "retrofit.config",
    "Knob": "retrofit.knobs", "ArrayKnob": "retrofit.knobs", "KnobSet": "retrofit.knobs", "ProbeGroup": "retrofit.knobs",
    "Aggregate": "retrofit.objective",
    "ReportSection": "retrofit.report", "ReportImage": "retrofit.report",
    "UsageError": "retrofit.errors", "ConfigError": "retrofit.errors",
    "PluginError": "retrofit.errors", "RunFailed": "retrofit.errors",
}

__all__ = ["__version__", "hookimpl", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'retrofit' has no attribute {name!r}")
