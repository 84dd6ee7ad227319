"""Train the demo agent: an Arnold DQN that imitates the scripted expert, with DAgger.

The expert (:class:`scripted.Expert`) aims with ViZDoom's labels buffer; the network only sees
the screen and its game variables. Round 0 records the expert's own episodes; each later round
lets the student play (the expert takes over a share ``beta`` of the steps) and labels every
state the student visits with the expert's action, so the student learns to recover from its own
mistakes (Ross et al., 2011). The game-feature head learns "a monster is in view" and "a monster
is under the crosshair" from the same labels, Arnold's auxiliary task.

    python -m retrofit_doom_arnold.train --out plugins/doom_arnold/retrofit_doom_arnold/assets/arnold_dtc.pt

Takes a few minutes on one core; the shipped checkpoint was made by exactly that command (see
docs/doom.md for the figures).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .actions import ActionSpace
from .arnold import VARIABLES, ArnoldNet, ArnoldPolicy, preprocess
from .game import Game, GameSettings, Label
from .scripted import Expert

FEATURES = ("target", "enemy")


@dataclass
class Demonstrations:
    """States the student saw (or the expert, in round 0), labelled by the expert."""

    screens: list[np.ndarray] = field(default_factory=list)    # C x H x W uint8
    variables: list[list[float]] = field(default_factory=list)  # the net's variables, raw
    actions: list[int] = field(default_factory=list)            # the expert's choice
    features: list[list[float]] = field(default_factory=list)   # target, enemy in view

    def __len__(self) -> int:
        return len(self.actions)


class _Teacher:
    """Plays the student (or the expert with probability ``beta``) and records the expert's labels."""

    needs_labels = True

    def __init__(self, expert: Expert, student: ArnoldPolicy | None, beta: float, data: Demonstrations,
                 net_variables: Sequence[str], height: int, width: int):
        self.expert, self.student, self.beta, self.data = expert, student, beta, data
        self.net_variables = [VARIABLES[v][0] for v in net_variables]
        self.height, self.width = height, width
        self.rng = np.random.default_rng(0)

    def reset(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng([seed, 0xDA66E5])
        if self.student is not None:
            self.student.reset(seed)

    def __call__(self, frame: np.ndarray, variables: dict[str, float], labels: Sequence[Label]) -> int:
        label = self.expert(frame, variables, labels)
        target = any(abs(lab.centre_x - self.expert.centre) <= self.expert.tolerance for lab in labels)
        self.data.screens.append(preprocess(frame, self.height, self.width))
        self.data.variables.append([variables.get(v, 0.0) for v in self.net_variables])
        self.data.actions.append(label)
        self.data.features.append([float(target), float(bool(labels))])
        if self.student is None or self.rng.random() < self.beta:
            return label
        return self.student(frame, variables)


def collect(settings: GameSettings, seeds: Sequence[int], student: ArnoldPolicy | None, beta: float,
            data: Demonstrations, net: ArnoldNet, tolerance: float) -> list[Any]:
    """Play one episode per seed and append the expert-labelled states to ``data``."""
    with Game(settings) as game:
        expert = Expert(game.action_space, width=_screen_width(settings), tolerance=tolerance)
        teacher = _Teacher(expert, student, beta, data, net.variables, net.height, net.width)
        return [game.play(teacher, seed) for seed in seeds]


def _screen_width(settings: GameSettings) -> int:
    return int(settings.resolution.split("_")[1].split("X")[0])


def fit(net: ArnoldNet, data: Demonstrations, epochs: int, seed: int, lr: float = 1e-3,
        batch_size: int = 64) -> float:
    """Cross-entropy on the expert's actions plus the game-feature loss; returns the last epoch's loss."""
    import torch

    torch.manual_seed(seed)
    screens = torch.from_numpy(np.stack(data.screens))
    variables = torch.tensor(data.variables, dtype=torch.float32)
    actions = torch.tensor(data.actions)
    features = torch.tensor(data.features, dtype=torch.float32)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    net.train()
    loss_value = float("nan")
    for _ in range(epochs):
        order = torch.randperm(len(actions), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            q, feats, _ = net(screens[idx], variables[idx])
            loss = torch.nn.functional.cross_entropy(q, actions[idx])
            if feats is not None:
                loss = loss + torch.nn.functional.binary_cross_entropy(feats, features[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        loss_value = total / count
    net.eval()
    return loss_value


def demo_settings() -> GameSettings:
    """The game the demo agent is trained and retrofitted on."""
    return GameSettings(scenario="defend_the_center", resolution="RES_160X120", actions="turn_lr+attack",
                        variables=("HEALTH", "SELECTED_WEAPON_AMMO"), frame_skip=4)


def train(out: Path, *, rounds: int = 4, episodes: int = 30, epochs: int = 6, hidden: int = 128,
          tolerance: float = 9.0, beta: float = 0.5, seed: int = 0, seeds_from: int = 100_000) -> dict[str, Any]:
    """Train the demo agent with DAgger and save it (a plain ``state_dict`` plus metadata)."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    settings = demo_settings()
    space = ActionSpace(settings.actions)
    net = ArnoldNet(len(space), recurrent=False, game_features=FEATURES, hidden=hidden)
    data = Demonstrations()
    log: list[dict[str, Any]] = []
    student: ArnoldPolicy | None = None
    start = time.time()
    for r in range(rounds):
        # training seeds live far above the seeds runs use, so the demo's held-out seeds are unseen
        seeds = range(seeds_from + r * episodes, seeds_from + (r + 1) * episodes)
        results = collect(settings, seeds, student, beta if r else 1.0, data, net, tolerance)
        loss = fit(net, data, epochs, seed + r)
        student = ArnoldPolicy(net)
        entry = {"round": r, "states": len(data), "loss": round(loss, 4),
                 "played_kills": round(float(np.mean([x.kills for x in results])), 2),
                 "seconds": round(time.time() - start, 1)}
        log.append(entry)
        print(entry, flush=True)
    meta = {"scenario": settings.scenario, "resolution": settings.resolution, "actions": settings.actions,
            "variables": list(settings.variables), "frame_skip": settings.frame_skip,
            "game_features": list(FEATURES), "hidden": hidden, "trained_by": "retrofit_doom_arnold.train",
            "recipe": {"rounds": rounds, "episodes": episodes, "epochs": epochs, "tolerance": tolerance,
                       "beta": beta, "seed": seed}, "log": log}
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "meta": meta}, out)
    return meta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--tolerance", type=float, default=9.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train(args.out, rounds=args.rounds, episodes=args.episodes, epochs=args.epochs, hidden=args.hidden,
          tolerance=args.tolerance, seed=args.seed)


if __name__ == "__main__":
    main()
