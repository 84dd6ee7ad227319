"""Arnold's network family (Lample & Chaplot, "Playing FPS Games with Deep Reinforcement Learning",
AAAI 2017), re-implemented from its published description -- no code of the original repository is
used (it has no licence). Parameter names and shapes follow the released checkpoints so a plain
``state_dict`` of theirs loads with ``load_state_dict(strict=True)``:

====================================  =========================  ====================================
key                                   shape                      what
====================================  =========================  ====================================
conv.0.weight / .bias                 [32, C*history, 8, 8]      conv 8x8 stride 4, ReLU
conv.2.weight / .bias                 [64, 32, 4, 4]             conv 4x4 stride 2, ReLU
health_emb.weight                     [11, 32]                   health // 10, clipped to 0..10
sel_ammo_emb.weight                   [301, 32]                  selected-weapon ammo, clipped 0..300
proj_game_features.1.weight / .bias   [512, 4608]                Dropout, Linear, ReLU, Dropout,
proj_game_features.4.weight / .bias   [n_features, 512]          Linear, Sigmoid (from the conv output)
rnn.weight_ih_l0 / weight_hh_l0       [2048, 4672] / [2048, 512] LSTM, hidden 512 (DRQN)
rnn.bias_ih_l0 / bias_hh_l0           [2048]
feedforward.0.weight / .bias          [512, 4672]                Linear + Sigmoid (DQN, instead of rnn)
proj_action_scores.weight / .bias     [n_actions, 512]           Q-values
====================================  =========================  ====================================

The conv trunk maps a 60x108 screen to 64 x 6 x 12 = 4608 features; with the two 32-wide
embeddings the state is 4672 wide. Screens (uint8 or 0..255 floats) are divided by 255 inside
``forward``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from retrofit import UsageError
from torch import nn

HEIGHT, WIDTH = 60, 108
# Arnold's variable names -> (vizdoom.GameVariable name, number of buckets, bucket size)
VARIABLES: dict[str, tuple[str, int, int]] = {
    "health": ("HEALTH", 11, 10),
    "sel_ammo": ("SELECTED_WEAPON_AMMO", 301, 1),
}
EMBED_DIM = 32
HIDDEN = 512
GAME_FEATURES = ("target", "enemy", "health", "weapon", "ammo")


def conv_output_size(height: int = HEIGHT, width: int = WIDTH) -> tuple[int, int, int]:
    h, w = (height - 8) // 4 + 1, (width - 8) // 4 + 1
    return 64, (h - 4) // 2 + 1, (w - 4) // 2 + 1


class ArnoldNet(nn.Module):
    """DRQN (``recurrent=True``) or DQN (``recurrent=False``) with game-variable embeddings and an
    optional game-feature head.

    ``forward(screens, variables, hidden=None) -> (q, features, hidden)``:

    * recurrent: ``screens`` [B, T, C, H, W], ``variables`` [B, T, n_vars] (raw values; bucketed here),
      ``q`` [B, T, n_actions], ``features`` [B, T, n_features] (sigmoid) or None, ``hidden`` the LSTM state;
    * feed-forward: ``screens`` [B, C*history, H, W], ``variables`` [B, n_vars], ``q`` [B, n_actions],
      ``hidden`` None.
    """

    def __init__(self, n_actions: int, recurrent: bool = True, game_features: Sequence[str] = ("target", "enemy"),
                 variables: Sequence[str] = ("health", "sel_ammo"), channels: int = 3, history: int = 1,
                 height: int = HEIGHT, width: int = WIDTH, hidden: int = HIDDEN, dropout: float = 0.5):
        super().__init__()
        for v in variables:
            if v not in VARIABLES:
                raise UsageError(f"unknown Arnold game variable {v!r} (known: {', '.join(VARIABLES)})")
        if n_actions < 1:
            raise UsageError(f"n_actions must be >= 1, not {n_actions}")
        self.n_actions = n_actions
        self.recurrent = recurrent
        self.game_features = tuple(game_features)
        self.variables = tuple(variables)
        self.channels, self.history = channels, history
        self.height, self.width = height, width
        in_channels = channels if recurrent else channels * history
        self.conv = nn.Sequential(nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),
                                  nn.Conv2d(32, 64, 4, stride=2), nn.ReLU())
        c, h, w = conv_output_size(height, width)
        self.conv_output_dim = c * h * w
        for v in self.variables:
            _, buckets, _ = VARIABLES[v]
            setattr(self, f"{v}_emb", nn.Embedding(buckets, EMBED_DIM))
        self.state_dim = self.conv_output_dim + EMBED_DIM * len(self.variables)
        if self.game_features:
            self.proj_game_features = nn.Sequential(
                nn.Dropout(dropout), nn.Linear(self.conv_output_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                nn.Linear(hidden, len(self.game_features)), nn.Sigmoid())
        if recurrent:
            self.rnn = nn.LSTM(self.state_dim, hidden, num_layers=1, batch_first=True)
        else:
            self.feedforward = nn.Sequential(nn.Linear(self.state_dim, hidden), nn.Sigmoid())
        self.proj_action_scores = nn.Linear(hidden, n_actions)

    # -- helpers ----------------------------------------------------------------------------------------
    def bucket(self, variables: torch.Tensor) -> list[torch.Tensor]:
        """Raw variable values [..., n_vars] -> one long tensor of bucket ids per variable."""
        out = []
        for i, v in enumerate(self.variables):
            _, buckets, size = VARIABLES[v]
            ids = torch.div(variables[..., i].float().clamp(min=0), size, rounding_mode="floor").long()
            out.append(ids.clamp(max=buckets - 1))
        return out

    def _embed(self, screens: torch.Tensor, variables: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        x = screens.float() / 255.0
        conv = self.conv(x).flatten(1)
        parts = [conv]
        if self.variables:
            if variables is None:
                raise UsageError(f"this network needs game variables {self.variables}")
            for v, ids in zip(self.variables, self.bucket(variables)):
                parts.append(getattr(self, f"{v}_emb")(ids))
        return conv, torch.cat(parts, dim=1)

    # -- forward ----------------------------------------------------------------------------------------
    def forward(self, screens: torch.Tensor, variables: torch.Tensor | None = None,
                hidden: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[Any, Any, Any]:
        if self.recurrent:
            if screens.dim() == 4:  # a single step: [B, C, H, W]
                screens = screens.unsqueeze(1)
                variables = None if variables is None else variables.reshape(screens.shape[0], 1, -1)
            b, t = screens.shape[:2]
            conv, state = self._embed(screens.reshape(b * t, *screens.shape[2:]),
                                      None if variables is None else variables.reshape(b * t, -1))
            out, hidden = self.rnn(state.view(b, t, -1), hidden)
            q = self.proj_action_scores(out)
            feats = self.proj_game_features(conv).view(b, t, -1) if self.game_features else None
            return q, feats, hidden
        conv, state = self._embed(screens, variables)
        q = self.proj_action_scores(self.feedforward(state))
        feats = self.proj_game_features(conv) if self.game_features else None
        return q, feats, None

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor], game_features: Sequence[str] | None = None,
                        **kwargs: Any) -> ArnoldNet:
        """Build the network a checkpoint was saved from (shapes inferred) and load it strictly."""
        sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
        if "conv.0.weight" not in sd or "proj_action_scores.weight" not in sd:
            raise UsageError("not an Arnold checkpoint: no conv.0.weight / proj_action_scores.weight")
        n_actions = sd["proj_action_scores.weight"].shape[0]
        recurrent = "rnn.weight_ih_l0" in sd
        variables = tuple(v for v in VARIABLES if f"{v}_emb.weight" in sd)
        in_ch = sd["conv.0.weight"].shape[1]
        kwargs.setdefault("hidden", sd["proj_action_scores.weight"].shape[1])
        if game_features is None:
            n_feat = sd["proj_game_features.4.weight"].shape[0] if "proj_game_features.4.weight" in sd else 0
            game_features = GAME_FEATURES[:n_feat] if n_feat <= 2 else tuple(f"feature{i}" for i in range(n_feat))
        if recurrent:
            kwargs.setdefault("channels", in_ch)
            kwargs.setdefault("history", 1)
        else:
            kwargs.setdefault("channels", 3 if in_ch % 3 == 0 else 1)
            kwargs.setdefault("history", in_ch // kwargs["channels"])
        net = cls(n_actions, recurrent=recurrent, game_features=game_features, variables=variables, **kwargs)
        net.load_state_dict(sd, strict=True)
        return net


def preprocess(frame: np.ndarray, height: int = HEIGHT, width: int = WIDTH, gray: bool = False) -> np.ndarray:
    """A ViZDoom frame H x W x C uint8 -> C x height x width uint8 (resized with area averaging)."""
    import cv2

    img = cv2.resize(np.ascontiguousarray(frame), (width, height), interpolation=cv2.INTER_AREA)
    if img.ndim == 2:
        img = img[:, :, None]
    if gray and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[:, :, None]
    return np.ascontiguousarray(img.transpose(2, 0, 1))


class ArnoldPolicy:
    """Play an :class:`ArnoldNet` in :meth:`game.Game.play`: greedy on the action scores; with
    ``temperature > 0``, sampling from ``softmax(scores / temperature)``; with ``epsilon > 0``, a
    uniformly random action that often. Randomness comes from an RNG seeded by the episode's seed,
    so an episode is reproducible. Keeps the LSTM state or the frame history; ``reset(seed)`` is
    called at the start of each episode."""

    def __init__(self, net: ArnoldNet, device: str = "cpu", temperature: float = 0.0, epsilon: float = 0.0):
        if not 0.0 <= epsilon <= 1.0:
            raise UsageError(f"epsilon must be between 0 and 1, not {epsilon}")
        self.net = net.eval().to(device)
        self.device = device
        self.temperature = temperature
        self.epsilon = epsilon
        self.reset()

    def reset(self, seed: int = 0) -> None:
        self.hidden = None
        self.frames: list[np.ndarray] = []
        self.rng = np.random.default_rng([seed, 0xD00])

    def variable_names(self) -> list[str]:
        return [VARIABLES[v][0] for v in self.net.variables]

    @torch.no_grad()
    def scores(self, frame: np.ndarray, variables: dict[str, float]) -> torch.Tensor:
        screen = preprocess(frame, self.net.height, self.net.width, gray=self.net.channels == 1)
        vals = torch.tensor([[variables.get(VARIABLES[v][0], 0.0) for v in self.net.variables]], device=self.device)
        if self.net.recurrent:
            x = torch.from_numpy(screen).unsqueeze(0).to(self.device)
            q, _, self.hidden = self.net(x, vals, self.hidden)
            return q[0, -1]
        self.frames = (self.frames or [screen] * self.net.history)[1:] + [screen]
        x = torch.from_numpy(np.concatenate(self.frames, axis=0)).unsqueeze(0).to(self.device)
        q, _, _ = self.net(x, vals)
        return q[0]

    def __call__(self, frame: np.ndarray, variables: dict[str, float]) -> int:
        q = self.scores(frame, variables).double().cpu().numpy()  # always: the LSTM state moves on
        if self.epsilon and self.rng.random() < self.epsilon:
            return int(self.rng.integers(len(q)))
        if self.temperature <= 0:
            return int(q.argmax())
        z = (q - q.max()) / self.temperature
        p = np.exp(z)
        return int(self.rng.choice(len(p), p=p / p.sum()))
