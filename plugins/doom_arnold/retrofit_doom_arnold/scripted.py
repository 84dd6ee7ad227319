"""Scripted policies: the expert the demo agent imitates, and the trivial baselines every
retrofitted agent must beat.

The expert reads ViZDoom's labels buffer (the objects on screen, with their pixel boxes), which
a network never sees: it turns towards the largest monster in view and fires once it is centred,
and spins to search when nothing is in view. The trivial policies ignore the screen: always
attack, spin and shoot, uniform random. A retrofit that turns an agent into one of them is not an
improvement (DESIGN.md, "Doom retrofits can be degenerate"), so reports put them side by side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from retrofit import UsageError

from .actions import ActionSpace
from .game import Label


def _index(space: ActionSpace, *pressed: str) -> int:
    try:
        return space.index_of(pressed)
    except UsageError:
        raise UsageError(f"scripted policies need an action pressing exactly {list(pressed)} in "
                         f"{space.spec!r} (e.g. 'turn_lr+attack')") from None


class Expert:
    """Aim at the largest monster in view, fire when its centre is within ``tolerance`` pixels of
    the screen's centre; spin right when nothing is in view."""

    needs_labels = True

    def __init__(self, space: ActionSpace, width: int, tolerance: float = 4.0):
        self.left, self.right = _index(space, "TURN_LEFT"), _index(space, "TURN_RIGHT")
        self.attack = _index(space, "ATTACK")
        self.centre = width / 2
        self.tolerance = tolerance

    def __call__(self, frame: np.ndarray, variables: dict[str, float], labels: Sequence[Label]) -> int:
        if not labels:
            return self.right
        target = max(labels, key=lambda lab: lab.width * lab.height)  # the largest is the nearest
        offset = target.centre_x - self.centre
        if abs(offset) <= self.tolerance:
            return self.attack
        return self.left if offset < 0 else self.right


class AlwaysAttack:
    """Fire every step, never turn."""

    def __init__(self, space: ActionSpace):
        self.attack = _index(space, "ATTACK")

    def __call__(self, frame: np.ndarray, variables: dict[str, float]) -> int:
        return self.attack


class SpinAndShoot:
    """Turn right and fire, every step at once when the space has that action, else in turns."""

    def __init__(self, space: ActionSpace):
        try:
            self.cycle = [space.index_of(("TURN_RIGHT", "ATTACK"))]
        except UsageError:
            self.cycle = [_index(space, "TURN_RIGHT"), _index(space, "ATTACK")]
        self.step = 0

    def reset(self, seed: int = 0) -> None:
        self.step = 0

    def __call__(self, frame: np.ndarray, variables: dict[str, float]) -> int:
        self.step += 1
        return self.cycle[(self.step - 1) % len(self.cycle)]


class RandomPolicy:
    """Uniformly random actions, from an RNG seeded by each episode's seed (``reset``)."""

    def __init__(self, space: ActionSpace):
        self.n = len(space)
        self.reset(0)

    def reset(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng([seed, 0x5EED])

    def __call__(self, frame: np.ndarray, variables: dict[str, float]) -> int:
        return int(self.rng.integers(self.n))


TRIVIAL = {"always_attack": AlwaysAttack, "spin_and_shoot": SpinAndShoot, "random": RandomPolicy}
