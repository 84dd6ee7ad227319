"""A headless ViZDoom wrapper: play one episode of a shipped scenario with a policy, reproducibly.

``Game(settings)`` starts one engine process (window hidden, sound off) and always closes it
(``__exit__``, ``close()``, and a finaliser). ``play(policy, seed)`` runs one episode and returns
an :class:`EpisodeResult` with Arnold's metrics: kills, deaths, suicides, frags = kills - suicides,
survival time in tics and seconds (35 tics/s) and the scenario's total reward.

Reproducibility: reusing one engine across evaluations made scores history-dependent even with
``set_seed`` (DESIGN.md; measured again here with deathmatch bots on cig), so by default ``play``
starts a fresh engine for every episode, seeded at start-up (about 0.15 s), which is reproducible
with bots too. ``GameSettings(fresh_game=False)`` reuses the engine with ``set_seed`` +
``new_episode`` instead: about twice as fast on short episodes, and on the single-player
scenarios tested (basic, defend_the_center, with random and trained policies, seeds played in
any order) identical to fresh engines episode for episode, actions included; not with bots.
DEATHCOUNT is cumulative across episodes of one engine, so deaths are per-episode differences.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
from retrofit import UsageError

from . import watchdog
from .actions import ActionSpace

TICS_PER_SECOND = 35
# variables read for the metrics, whatever the policy asks for
_BOOKKEEPING = ("KILLCOUNT", "DEATHCOUNT", "FRAGCOUNT", "HEALTH")

Policy = Callable[..., int]
"""``policy(frame, variables) -> action``; a policy with ``needs_labels = True`` is called as
``policy(frame, variables, labels)`` with the objects on screen (ViZDoom's labels buffer)."""


@dataclass(frozen=True)
class Label:
    """An object on screen, from ViZDoom's labels buffer (pixel box in the frame)."""

    name: str
    x: int
    y: int
    width: int
    height: int

    @property
    def centre_x(self) -> float:
        return self.x + self.width / 2


def engine_pids(parent: int | None = None) -> list[int]:
    """Ids of running ViZDoom engine processes started by ``parent`` (default: this process)."""
    parent = os.getpid() if parent is None else parent
    return [pid for pid, ppid, _ in watchdog.engine_processes() if ppid == parent]


def scenarios() -> list[str]:
    """Names of the scenarios shipped in the vizdoom wheel (``basic``, ``defend_the_center``, ...)."""
    import vizdoom

    return sorted(f[:-4] for f in os.listdir(vizdoom.scenarios_path) if f.endswith(".cfg"))


@dataclass
class GameSettings:
    scenario: str = "defend_the_center"      # a shipped scenario name, or a path to a .cfg
    resolution: str = "RES_160X120"           # a vizdoom.ScreenResolution name
    gray: bool = False                        # GRAY8 frames (H x W x 1) instead of RGB24 (H x W x 3)
    frame_skip: int = 4                       # tics each chosen action is repeated
    episode_timeout: int = 0                  # tics; 0 keeps the scenario's own
    seed: int = 0                             # default episode seed of play()
    actions: str = "turn_lr+attack"           # combination string, see actions.py
    variables: tuple[str, ...] = ("HEALTH", "AMMO2")  # vizdoom.GameVariable names given to the policy
    fresh_game: bool = True                   # a new engine per episode (history-independent)
    respawn: bool = True                      # respawn after a death when the episode goes on (deathmatch)
    bots: int = 0                             # deathmatch bots (bots.cfg): hosts a one-player deathmatch game
    args: tuple[str, ...] = ()                # extra engine arguments

    def validate(self) -> None:
        import vizdoom

        if not self.scenario.endswith(".cfg") and self.scenario not in scenarios():
            raise UsageError(f"unknown ViZDoom scenario {self.scenario!r}; shipped: {', '.join(scenarios())}")
        if not hasattr(vizdoom.ScreenResolution, self.resolution):
            raise UsageError(f"unknown screen resolution {self.resolution!r} (e.g. RES_160X120)")
        for v in self.variables:
            if not hasattr(vizdoom.GameVariable, v):
                raise UsageError(f"unknown ViZDoom game variable {v!r} (e.g. HEALTH, AMMO2, KILLCOUNT)")
        if not 0 <= self.bots <= 15:
            raise UsageError(f"bots must be between 0 and 15, not {self.bots}")
        if self.frame_skip < 1:
            raise UsageError(f"frame_skip must be >= 1, not {self.frame_skip}")
        ActionSpace(self.actions)


@dataclass
class EpisodeResult:
    seed: int
    kills: int = 0
    deaths: int = 0
    suicides: int = 0
    tics: int = 0                      # episode length in tics (survival time when the agent died once)
    reward: float = 0.0
    steps: int = 0                     # policy decisions
    lives: int = 1                     # deaths, plus one when the episode ended alive
    actions: list[int] = field(default_factory=list, repr=False)

    @property
    def frags(self) -> int:
        return self.kills - self.suicides

    @property
    def seconds(self) -> float:
        return self.tics / TICS_PER_SECOND

    @property
    def survival_tics(self) -> float:
        """Mean life length in tics: episode tics over lives (deaths, plus one when it ended alive)."""
        return self.tics / max(1, self.lives)

    @property
    def survival_seconds(self) -> float:
        return self.survival_tics / TICS_PER_SECOND

    @property
    def kd(self) -> float:
        return self.kills / max(1, self.deaths)

    @property
    def frags_per_minute(self) -> float:
        return self.frags / max(self.seconds / 60.0, 1e-9)

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "kills": self.kills, "deaths": self.deaths, "suicides": self.suicides,
                "frags": self.frags, "tics": self.tics, "seconds": self.seconds, "lives": self.lives,
                "survival_tics": self.survival_tics, "survival_seconds": self.survival_seconds,
                "kd": self.kd, "reward": self.reward, "steps": self.steps}


def _close_quietly(game: Any) -> None:
    with contextlib.suppress(Exception):  # closing must never mask the error that got us here
        game.close()


class Game:
    """One headless ViZDoom engine (or one per episode with ``fresh_game``); use as a context manager."""

    def __init__(self, settings: GameSettings | None = None, **overrides: Any):
        self.settings = settings or GameSettings()
        if overrides:
            self.settings = GameSettings(**{**self.settings.__dict__, **overrides})
        self.settings.validate()
        self.action_space = ActionSpace(self.settings.actions)
        self._tmp: tempfile.TemporaryDirectory | None = None  # the engine's config and working directory
        self._game: Any = None
        self._finalizer: weakref.finalize | None = None
        self._read: list[str] = list(dict.fromkeys([*self.settings.variables, *_BOOKKEEPING]))
        self._labels = False  # the labels buffer is switched on for policies that ask for it

    # -- engine lifecycle -------------------------------------------------------------------------------
    def _new_game(self) -> Any:
        import vizdoom

        s = self.settings
        cfg = s.scenario if s.scenario.endswith(".cfg") else os.path.join(vizdoom.scenarios_path, s.scenario + ".cfg")
        g = vizdoom.DoomGame()
        g.load_config(cfg)
        g.set_doom_config_path(os.path.join(self._tmp.name, "_vizdoom.ini"))  # not the cwd
        g.set_window_visible(False)
        g.set_sound_enabled(False)
        g.set_console_enabled(False)
        g.set_mode(vizdoom.Mode.PLAYER)
        g.set_screen_resolution(getattr(vizdoom.ScreenResolution, s.resolution))
        g.set_screen_format(vizdoom.ScreenFormat.GRAY8 if s.gray else vizdoom.ScreenFormat.RGB24)
        g.set_available_buttons(self.action_space.vizdoom_buttons())
        g.set_available_game_variables([getattr(vizdoom.GameVariable, v) for v in self._read])
        g.set_labels_buffer_enabled(self._labels)
        if s.episode_timeout:
            g.set_episode_timeout(int(s.episode_timeout))
        if s.bots:
            # works offline on cig.cfg / multi.cfg maps (DESIGN.md); deathmatch.cfg segfaults with -deathmatch
            g.add_game_args("-host 1 -deathmatch +sv_forcerespawn 1 +sv_spawnfarthest 1 +sv_respawnprotect 1")
        if s.args:
            g.add_game_args(" ".join(s.args))
        return g

    def open(self, seed: int | None = None) -> Game:
        """Start the engine (``seed``: its start-up RNG seed; default the settings' seed)."""
        if self._game is None:
            if self._tmp is None:
                # the owner's pid in the name lets the watchdog find this engine if we die
                self._tmp = tempfile.TemporaryDirectory(prefix=watchdog.marker())
            watchdog.ensure_started()
            g = self._new_game()
            g.set_seed(self.settings.seed if seed is None else int(seed))  # also fixes the engine's -rngseed
            cwd = os.getcwd()
            try:
                os.chdir(self._tmp.name)  # the engine may write files (_vizdoom/) into its working directory
                g.init()
            except Exception:
                _close_quietly(g)
                raise
            finally:
                os.chdir(cwd)
            self._game = g
            self._finalizer = weakref.finalize(self, _close_quietly, g)
        return self

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # closes the engine once
            self._finalizer = None
        self._game = None

    def __enter__(self) -> Self:
        # with fresh_game every episode starts its own engine: opening one here would be wasted
        return self if self.settings.fresh_game else self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- playing ----------------------------------------------------------------------------------------
    def _vars(self, state: Any) -> dict[str, float]:
        if state is None or state.game_variables is None:
            return {}
        wanted = self.settings.variables
        return {name: float(v) for name, v in zip(self._read, state.game_variables) if name in wanted}

    def _frame(self, state: Any) -> np.ndarray:
        buf = np.asarray(state.screen_buffer)
        if buf.ndim == 2:
            buf = buf[:, :, None]
        elif buf.shape[0] in (1, 3) and buf.shape[-1] not in (1, 3):
            buf = np.transpose(buf, (1, 2, 0))  # CHW formats -> HWC
        return np.ascontiguousarray(buf, dtype=np.uint8)

    def _labels_of(self, state: Any) -> list[Label]:
        return [Label(lab.object_name, int(lab.x), int(lab.y), int(lab.width), int(lab.height))
                for lab in (state.labels or []) if lab.object_name != "DoomPlayer"]

    def play(self, policy: Policy, seed: int | None = None, max_steps: int | None = None,
             on_frame: Callable[[np.ndarray, int], None] | None = None) -> EpisodeResult:
        """One episode from ``seed``: ``policy(frame HxWxC uint8, variables) -> action index``.

        ``on_frame(frame, action)`` sees every frame the policy saw and the action it chose (for
        recordings and demonstrations).
        """
        import vizdoom

        seed = self.settings.seed if seed is None else int(seed)
        labels = bool(getattr(policy, "needs_labels", False))
        if labels != self._labels:
            self.close()  # the labels buffer is set when the engine starts
            self._labels = labels
        if self.settings.fresh_game:
            self.close()
        self.open(seed)
        g = self._game
        gv = vizdoom.GameVariable
        g.set_seed(seed)
        g.new_episode()
        if self.settings.bots:
            g.send_game_command("removebots")
            for _ in range(self.settings.bots):
                g.send_game_command("addbot")
        if hasattr(policy, "reset"):
            policy.reset(seed)  # a recurrent policy's hidden state, a sampling policy's RNG
        result = EpisodeResult(seed=seed, lives=0)
        death0 = g.get_game_variable(gv.DEATHCOUNT)
        kills0 = g.get_game_variable(gv.KILLCOUNT)
        frags = g.get_game_variable(gv.FRAGCOUNT)
        n = len(self.action_space)
        try:
            while not g.is_episode_finished():
                if g.is_player_dead():
                    if not self.settings.respawn:
                        break
                    g.respawn_player()
                    continue
                state = g.get_state()
                frame = self._frame(state)
                if labels:
                    a = int(policy(frame, self._vars(state), self._labels_of(state)))
                else:
                    a = int(policy(frame, self._vars(state)))
                if not 0 <= a < n:
                    raise UsageError(f"policy returned action {a}, outside 0..{n - 1} of {self.action_space}")
                if on_frame is not None:
                    on_frame(frame, a)
                result.reward += g.make_action(self.action_space.actions[a], self.settings.frame_skip)
                result.actions.append(a)
                result.steps += 1
                f = g.get_game_variable(gv.FRAGCOUNT)
                if f > frags:
                    result.kills += int(f - frags)    # frags against other players (bots)
                elif f < frags:
                    result.suicides += int(frags - f)  # a suicide costs a frag
                frags = f
                if max_steps is not None and result.steps >= max_steps:
                    break
            result.kills += int(g.get_game_variable(gv.KILLCOUNT) - kills0)  # monsters
            result.deaths = int(g.get_game_variable(gv.DEATHCOUNT) - death0)
            result.tics = int(g.get_episode_time())
            result.lives = result.deaths + (0 if g.is_player_dead() else 1)
        finally:
            if self.settings.fresh_game:
                self.close()
        return result

    def evaluate(self, policy: Policy, seeds: list[int]) -> list[EpisodeResult]:
        return [self.play(policy, s) for s in seeds]
