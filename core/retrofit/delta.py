"""Delta files: the knobs of a retrofit and their values, re-applicable to the original model.

A delta file is small JSON that travels without the model::

    {"format": "retrofit-delta/1", "domain": "depth",
     "knobs": [{"name": ..., "kind": ..., "size": ..., ...}],
     "values": {"<knob name>": [...]}}

``retrofit <domain> evaluate --params`` and ``export`` read it; it also accepts a run
directory or its ``summary.json`` (the chosen candidate's values).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from retrofit.errors import UsageError
from retrofit.records import SUMMARY, atomic_write

FORMAT = "retrofit-delta/1"


def delta_path(output: str | os.PathLike[str]) -> Path:
    """Where the delta file that goes with checkpoint ``output`` lives: ``<output>.delta.json``."""
    output = Path(output)
    return output.with_name(output.name + ".delta.json")


def write_delta(path: Path, knobs: Sequence[Mapping[str, Any]], values: Mapping[str, Sequence[float]],
                domain: str = "") -> Path:
    """Write knob specs and their values to ``path`` (atomically)."""
    payload = {"format": FORMAT, "domain": domain, "knobs": [dict(k) for k in knobs],
               "values": {name: [float(v) for v in vals] for name, vals in values.items()}}
    atomic_write(Path(path), json.dumps(payload, indent=1) + "\n")
    return Path(path)


def read_values(path: Path) -> dict[str, list[float]]:
    """Knob values from a delta file, a ``summary.json`` or a run directory."""
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"parameter file not found: {path}") from None
    except (ValueError, OSError) as error:
        raise UsageError(f"cannot read parameter file {path}: {error}") from None
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        return payload["values"]
    if isinstance(payload, dict) and isinstance(payload.get("best"), dict) and payload["best"].get("values"):
        return payload["best"]["values"]
    raise UsageError(f"{path} is neither a retrofit delta file nor a run summary with chosen values")


def read_delta(path: Path) -> dict[str, Any]:
    """The whole delta file (format checked)."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:
        raise UsageError(f"cannot read delta file {path}: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UsageError(f"{path} is not a retrofit delta file (format {FORMAT})")
    return payload
