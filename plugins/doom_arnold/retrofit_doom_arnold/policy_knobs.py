"""This pack's own knob kinds, beside retrofit.nn's tensor knobs on the network.

* ``temperature``: the policy's sampling temperature (identity: the configured one, 0 = greedy);
* ``frame_skip``: tics each action is repeated, a discrete knob (the value is rounded).

Both act on the :class:`DoomAgent`'s play settings, not on the network, so they are exported in
the delta file rather than baked into a checkpoint.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from retrofit import ArrayKnob


class TemperatureKnob(ArrayKnob):
    """Softmax temperature of the policy over action scores; 0 plays greedily."""

    def __init__(self, temperature: np.ndarray, sigma: float = 0.1, upper: float = 5.0) -> None:
        super().__init__("policy_temperature", temperature, sigma=sigma, lower=0.0, upper=upper)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "spec": {"kind": "temperature"}}


class FrameSkipKnob(ArrayKnob):
    """Tics each chosen action is repeated (rounded to an integer when played)."""

    def __init__(self, frame_skip: np.ndarray, sigma: float = 1.0, upper: float = 12.0) -> None:
        super().__init__("frame_skip", frame_skip, sigma=sigma, lower=1.0, upper=upper)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "spec": {"kind": "frame_skip"}}


PACK_KINDS = {"temperature": TemperatureKnob, "frame_skip": FrameSkipKnob}
