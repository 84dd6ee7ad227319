"""Arnold-style discrete action spaces built from a combination string.

A spec such as ``move_fb+move_lr;turn_lr;attack`` reads:

* ``;`` separates independent groups; the action space is the Cartesian product of the groups;
* ``+`` joins options that are mutually exclusive within a group: a group offers each of its
  options (both directions of a two-way option such as ``move_fb``) or nothing (its no-op);
* the action in which every group does nothing is dropped.

So ``turn_lr+attack`` has 4 - 1 = 3 actions, ``move_fb;turn_lr`` 3 x 3 - 1 = 8,
``move_fb+move_lr;turn_lr;attack`` 5 x 3 x 2 - 1 = 29 and ``attack+move_lr;turn_lr;move_fb``
4 x 3 x 3 - 1 = 35.

Actions are ordered by :func:`itertools.product` over the groups in spec order, each group
listing its no-op first, then its options in spec order (two-way options: first direction, then
second). Buttons are listed in the order they first appear in the spec.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from retrofit import UsageError

# option name -> the ViZDoom buttons it presses, one per choice (two-way options have two)
OPTIONS: dict[str, tuple[str, ...]] = {
    "move_fb": ("MOVE_FORWARD", "MOVE_BACKWARD"),
    "move_lr": ("MOVE_LEFT", "MOVE_RIGHT"),
    "turn_lr": ("TURN_LEFT", "TURN_RIGHT"),
    "look_ud": ("LOOK_UP", "LOOK_DOWN"),
    "attack": ("ATTACK",),
    "use": ("USE",),
    "jump": ("JUMP",),
    "crouch": ("CROUCH",),
    "speed": ("SPEED",),
    "turn180": ("TURN180",),
}


def parse_spec(spec: str) -> list[list[str]]:
    """``"a+b;c"`` -> ``[["a", "b"], ["c"]]``; a bad or repeated token raises UsageError."""
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(f"empty action spec {spec!r}; expected e.g. 'move_fb+move_lr;turn_lr;attack' "
                         f"(options: {', '.join(OPTIONS)})")
    groups: list[list[str]] = []
    seen: set[str] = set()
    for group_text in spec.split(";"):
        group: list[str] = []
        for token in group_text.split("+"):
            name = token.strip().lower()
            if name not in OPTIONS:
                raise UsageError(f"action spec {spec!r}: unknown option {token.strip()!r} "
                                 f"(options: {', '.join(OPTIONS)}; '+' joins exclusive options, ';' separates groups)")
            if name in seen:
                raise UsageError(f"action spec {spec!r}: option {name!r} appears more than once")
            seen.add(name)
            group.append(name)
        groups.append(group)
    return groups


class ActionSpace:
    """The discrete actions of a combination string, as button-state lists for ``DoomGame.make_action``."""

    def __init__(self, spec: str):
        self.spec = spec
        self.groups = parse_spec(spec)
        self.buttons: list[str] = [b for group in self.groups for name in group for b in OPTIONS[name]]
        index = {b: i for i, b in enumerate(self.buttons)}
        # each group's choices: None (no-op) then one button per option direction
        choices = [[None] + [b for name in group for b in OPTIONS[name]] for group in self.groups]
        self.actions: list[list[int]] = []
        self.pressed: list[tuple[str, ...]] = []
        for combo in itertools.product(*choices):
            pressed = tuple(b for b in combo if b is not None)
            if not pressed:
                continue  # the all-no-op action is dropped
            state = [0] * len(self.buttons)
            for b in pressed:
                state[index[b]] = 1
            self.actions.append(state)
            self.pressed.append(pressed)

    def __len__(self) -> int:
        return len(self.actions)

    def __getitem__(self, i: int) -> list[int]:
        return self.actions[i]

    def vizdoom_buttons(self) -> list:
        """The buttons as ``vizdoom.Button`` members (imports vizdoom)."""
        import vizdoom

        return [getattr(vizdoom.Button, b) for b in self.buttons]

    def index_of(self, pressed: Sequence[str]) -> int:
        """The action index pressing exactly these buttons (order ignored)."""
        want = set(pressed)
        for i, p in enumerate(self.pressed):
            if set(p) == want:
                return i
        raise UsageError(f"no action of {self.spec!r} presses exactly {sorted(want)}")

    def __repr__(self) -> str:
        return f"ActionSpace({self.spec!r}, {len(self)} actions)"
