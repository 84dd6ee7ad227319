"""Load an Arnold agent: the shipped demo checkpoint, a checkpoint of this pack's trainer, or a
plain Arnold ``state_dict`` (the format of the released DRQN/DQN models).

A checkpoint of this pack is ``{"state_dict": ..., "meta": {...}}``; its meta names the game it
was trained on (scenario, resolution, action spec, game variables, frame skip), which become the
domain options' defaults. A plain ``state_dict`` carries no game: the options must say it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrofit import UsageError

BUILTIN = Path(__file__).parent / "assets" / "arnold_dtc.pt"


@dataclass
class Agent:
    net: Any  # arnold.ArnoldNet
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def load_agent(spec: str, device: str = "cpu") -> Agent:
    """``"builtin"`` or a path to a ``.pt``/``.pth`` checkpoint."""
    import torch

    from .arnold import ArnoldNet

    path = BUILTIN if spec == "builtin" else Path(spec).expanduser()
    if not path.is_file():
        raise UsageError(f"doom model {spec!r}: no such checkpoint file (give 'builtin' or a .pt/.pth path)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (a truncated or foreign file, whatever torch raises: one line)
        raise UsageError(f"doom model {spec!r}: cannot read the checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(checkpoint, dict):
        raise UsageError(f"doom model {spec!r}: expected a state_dict or {{'state_dict', 'meta'}}, "
                         f"got {type(checkpoint).__name__}")
    meta: dict[str, Any] = dict(checkpoint.get("meta") or {}) if "state_dict" in checkpoint else {}
    state = checkpoint.get("state_dict", checkpoint)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}  # shipped as fp16
    features = tuple(meta["game_features"]) if "game_features" in meta else None
    try:
        net = ArnoldNet.from_state_dict(state, game_features=features)
    except RuntimeError as error:  # shape mismatches from load_state_dict
        detail = " ".join(line.strip() for line in str(error).splitlines()[1:3])
        raise UsageError(f"doom model {spec!r} does not fit Arnold's network: {detail}") from None
    return Agent(net=net.to(device).eval(), meta=meta, source=str(path))
