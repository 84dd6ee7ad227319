"""Hook implementations of the ``doom`` domain: retrofit an Arnold-style ViZDoom agent for kills
per life and life expectancy.

The "model" the core sees is a :class:`DoomAgent`: the network, the policy that plays it, the
game settings and the play-time knobs (temperature, frame skip). A batch is a tuple of episode
seeds; evaluating it plays one fresh, seeded episode per seed (reproducible wherever it runs)
and returns the batch's sums: kills, deaths, lives, seconds, ... Aggregation takes ratios of
those sums over all the candidate's episodes (kills per life = total kills / total lives), with
standard errors, then the weighted sum of ``[objective]``.

Train and validation seeds are disjoint ranges (``train_seed``, ``validation_seed``), and the
shipped agent was trained on seeds above both, so held-out episodes are new to the optimiser
and to the agent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from retrofit import Domain, Knob, Option, UsageError, hookimpl

from .commands import retrofit_register_commands  # noqa: F401  (hookimpls registered with this module)
from .report_section import retrofit_report_section  # noqa: F401

NAME = "doom"
DEFAULT_KNOBS = [
    # a shift of each action's score: how eager to fire, which way to turn
    {"kind": "bias_shift", "target": "proj_action_scores.bias", "sigma": 0.5},
    # a gain on each hidden unit feeding the action scores: which learnt features count for how much
    {"kind": "channel_gain", "target": "proj_action_scores.weight", "dim": 1, "sigma": 0.05},
    {"kind": "temperature"},  # softmax temperature of the policy (identity: greedy)
]
DEFAULT_REDUCERS = [
    {"name": "kills_per_life", "reduce": "ratio", "of": "kills", "per": "lives"},
    {"name": "life_expectancy", "reduce": "ratio", "of": "seconds", "per": "lives"},  # seconds per life
    {"name": "kd", "reduce": "ratio", "of": "kills", "per": "deaths", "floor": 1},
    {"name": "frags_per_minute", "reduce": "ratio", "of": "frags", "per": "minutes"},
    {"name": "kills_per_episode", "reduce": "ratio", "of": "kills", "per": "episodes"},
    {"name": "attack_share", "reduce": "ratio", "of": "attacks", "per": "steps"},
]
SCRIPTED = ("always_attack", "spin_and_shoot", "random")

DOMAIN = Domain(
    name=NAME,
    help="Arnold-style ViZDoom agents, judged by kills per life and life expectancy.",
    options=(
        Option("model", "builtin", "builtin (the demo agent), a checkpoint of retrofit_doom_arnold.train, or a "
                                   "plain Arnold state_dict (.pth; then give the game options)"),
        Option("scenario", "", "a scenario shipped with vizdoom (defend_the_center, basic, cig, ...) or a .cfg "
                               "path; empty: the checkpoint's"),
        Option("actions", "", "Arnold action combination, e.g. turn_lr+attack or move_fb+move_lr;turn_lr;attack; "
                              "empty: the checkpoint's"),
        Option("resolution", "", "vizdoom.ScreenResolution name, e.g. RES_160X120; empty: the checkpoint's"),
        Option("frame_skip", 0, "tics each action is repeated; 0: the checkpoint's (4 without one)"),
        Option("episode_timeout", 0, "episode length limit in tics; 0: the scenario's"),
        Option("bots", 0, "deathmatch bots (scenarios cig and multi); each episode then gets a fresh engine"),
        Option("fresh_engine", False, "start a new engine for every episode (slower); always on with bots, "
                                      "where reusing one made scores depend on earlier episodes"),
        Option("train_episodes", 64, "train seeds: train_seed .. train_seed + train_episodes - 1"),
        Option("validation_episodes", 48, "held-out seeds: validation_seed .. validation_seed + validation_episodes - 1"),
        Option("train_seed", 0, "first train episode seed"),
        Option("validation_seed", 1_000_000, "first held-out episode seed (keep the ranges disjoint)"),
        Option("episodes_per_batch", 1, "episodes per batch: one per batch gives per-episode standard errors"),
        Option("temperature", 0.0, "policy softmax temperature; 0 plays greedily"),
        Option("epsilon", 0.0, "share of steps played at random (epsilon-greedy)"),
        Option("device", "cpu", "torch device"),
        Option("knobs", DEFAULT_KNOBS, "knob specs: retrofit.nn kinds on the network, plus temperature and "
                                       "frame_skip", cli=False),
        Option("reducers", DEFAULT_REDUCERS, "how episode sums become candidate metrics (retrofit.reductions)",
               cli=False),
        Option("compare", True, "after a run, play the baseline, the retrofitted agent and trivial scripted "
                                "policies on the held-out seeds (heldout.json)"),
        Option("record", True, "after a run, record a held-out episode of the baseline and the retrofitted "
                               "agent side by side (episode.mp4 or .gif)"),
    ),
    # kills per life, and life expectancy at 0.1 per second: one kill is worth ten seconds of life
    objective={"kills_per_life": -1.0, "life_expectancy": -0.1},
    run_defaults={"budget": 120, "batches_per_evaluation": 12, "round_size": 8, "validate_every": 120,
                  "top_k": 3, "reevaluations": 1, "selection": "train"},
    noisy=True,
)


@dataclass
class DoomAgent:
    """Everything an evaluation needs, loaded once per process."""

    agent: Any                 # agents.Agent
    settings: Any              # game.GameSettings
    options: dict[str, Any]
    temperature: np.ndarray = field(default_factory=lambda: np.zeros(1))
    frame_skip: np.ndarray = field(default_factory=lambda: np.full(1, 4.0))
    _game: Any = None  # game.Game, opened on first use and closed with the process

    @property
    def net(self) -> Any:
        return self.agent.net

    def policy(self) -> Any:
        from .arnold import ArnoldPolicy

        return ArnoldPolicy(self.net, device=self.options["device"], temperature=float(self.temperature[0]),
                            epsilon=float(self.options["epsilon"]))

    def game_settings(self) -> Any:
        """The game as currently knobbed (frame skip rounded to whole tics)."""
        from dataclasses import replace

        return replace(self.settings, frame_skip=max(1, round(float(self.frame_skip[0]))))

    def play(self, seeds: tuple[int, ...], policy: Any = None, on_frame: Any = None) -> list[Any]:
        """Play one episode per seed with the agent as knobbed (or ``policy``).

        The engine is kept between calls (one per process; frame skip is read per step, so
        knobbing it needs no new engine). On the single-player scenarios tested a reused engine
        plays the same episodes as fresh ones; with bots it did not, so there each episode gets
        a fresh engine (``GameSettings.fresh_game``).
        """
        from .game import Game

        if self._game is None:
            self._game = Game(self.settings)
        self._game.settings = self.game_settings()
        policy = self.policy() if policy is None else policy
        return [self._game.play(policy, seed, on_frame=on_frame) for seed in seeds]


def episode_sums(results: list[Any], attack_actions: set[int]) -> dict[str, float]:
    """One batch's metrics: sums over its episodes, so ratios over a candidate's batches are
    ratios of totals (kills per life = total kills / total lives)."""
    steps = sum(r.steps for r in results)
    return {
        "episodes": float(len(results)),
        "kills": float(sum(r.kills for r in results)),
        "deaths": float(sum(r.deaths for r in results)),
        "suicides": float(sum(r.suicides for r in results)),
        "frags": float(sum(r.frags for r in results)),
        "lives": float(sum(r.lives for r in results)),
        "seconds": float(sum(r.seconds for r in results)),
        "minutes": float(sum(r.seconds for r in results) / 60.0),
        "reward": float(sum(r.reward for r in results)),
        "steps": float(steps),
        "attacks": float(sum(1 for r in results for a in r.actions if a in attack_actions)),
    }


def game_settings(options: dict[str, Any], meta: dict[str, Any]) -> Any:
    """Game settings from the options, falling back on what the checkpoint was trained with."""
    from .game import GameSettings

    def pick(key: str, fallback: Any) -> Any:
        return options[key] or meta.get(key) or fallback

    variables = tuple(meta.get("variables") or ("HEALTH", "SELECTED_WEAPON_AMMO"))
    return GameSettings(scenario=pick("scenario", "defend_the_center"), resolution=pick("resolution", "RES_160X120"),
                        actions=pick("actions", "turn_lr+attack"), frame_skip=int(pick("frame_skip", 4)),
                        episode_timeout=int(options["episode_timeout"]), bots=int(options["bots"]),
                        variables=variables, fresh_game=bool(options["fresh_engine"]) or int(options["bots"]) > 0)


def _threads() -> None:
    """One torch thread: a step is a small forward, and the engine beside it needs a core too
    (two threads per process, on 2 cores shared with the engines, made steps several times slower)."""
    import torch

    torch.set_num_threads(1)


def load_problem(options: dict[str, Any]) -> DoomAgent:
    from .agents import load_agent

    agent = load_agent(str(options["model"]), device=options["device"])
    settings = game_settings(options, agent.meta)
    settings.validate()
    from .actions import ActionSpace

    n = len(ActionSpace(settings.actions))
    if agent.net.n_actions != n:
        raise UsageError(f"doom model {options['model']!r} scores {agent.net.n_actions} actions but action spec "
                         f"{settings.actions!r} has {n}; give the actions it was trained with")
    if float(options["temperature"]) < 0:
        raise UsageError(f"doom.temperature must be >= 0, not {options['temperature']}")
    if not 0.0 <= float(options["epsilon"]) <= 1.0:
        raise UsageError(f"doom.epsilon must be between 0 and 1, not {options['epsilon']}")
    return DoomAgent(agent=agent, settings=settings, options=options,
                     temperature=np.full(1, float(options["temperature"])),
                     frame_skip=np.full(1, float(settings.frame_skip)))


@hookimpl
def retrofit_register_domains(register: Any) -> None:
    register(DOMAIN)


@hookimpl
def retrofit_load_model(domain: str, config: Any) -> DoomAgent | None:
    if domain != NAME:
        return None
    _threads()
    return load_problem(dict(config.options))


def build_doom_knobs(problem: DoomAgent, specs: list[Any]) -> list[Knob]:
    """This pack's kinds (temperature, frame_skip) here; the rest through ``retrofit.nn.build_knobs``."""
    from retrofit.nn import build_knobs

    from .policy_knobs import FrameSkipKnob, TemperatureKnob

    if not isinstance(specs, list) or not specs:
        raise UsageError("doom.knobs must be a non-empty list of knob specs")
    knobs: list[Knob] = []
    network_specs = []
    for spec in specs:
        kind = spec.get("kind") if isinstance(spec, dict) else None
        extra = {k: float(v) for k, v in spec.items() if k in ("sigma", "upper")} if isinstance(spec, dict) else {}
        if kind == "temperature":
            knobs.append(TemperatureKnob(problem.temperature, **extra))
        elif kind == "frame_skip":
            knobs.append(FrameSkipKnob(problem.frame_skip, **extra))
        else:
            network_specs.append(spec)
    return [*build_knobs(problem.net, network_specs), *knobs] if network_specs else knobs


@hookimpl
def retrofit_expose_parameters(domain: str, model: Any, config: Any) -> list[Knob] | None:
    if domain != NAME:
        return None
    return build_doom_knobs(model, list(config.options["knobs"]))


def seeds(options: dict[str, Any], split: str) -> list[int]:
    start, count = ((options["train_seed"], options["train_episodes"]) if split == "train"
                    else (options["validation_seed"], options["validation_episodes"]))
    return list(range(int(start), int(start) + int(count)))


@hookimpl
def retrofit_batches(domain: str, config: Any, split: str) -> list[tuple[int, ...]] | None:
    if domain != NAME:
        return None
    options = config.options
    per = int(options["episodes_per_batch"])
    if per < 1:
        raise UsageError(f"doom.episodes_per_batch must be >= 1, not {per}")
    chosen = seeds(options, split)
    if not chosen:
        raise UsageError(f"doom.{split}_episodes must be >= 1")
    train, validation = set(seeds(options, "train")), set(seeds(options, "validation"))
    if train & validation:
        raise UsageError("doom train and validation seed ranges overlap: move validation_seed past the train seeds")
    return [tuple(chosen[i:i + per]) for i in range(0, len(chosen), per)]


def attack_actions(settings: Any) -> set[int]:
    from .actions import ActionSpace

    space = ActionSpace(settings.actions)
    return {i for i, pressed in enumerate(space.pressed) if "ATTACK" in pressed}


@hookimpl
def retrofit_evaluate(domain: str, model: Any, batch: tuple[int, ...]) -> dict[str, float] | None:
    if domain != NAME:
        return None
    return episode_sums(model.play(tuple(batch)), attack_actions(model.settings))


@hookimpl
def retrofit_aggregate(domain: str, metrics: Any, config: Any) -> Any:
    if domain != NAME:
        return None
    from retrofit.objective import reduced_aggregate
    from retrofit.reductions import parse_reducers

    reducers = parse_reducers(config.options["reducers"], where="doom.reducers")
    return reduced_aggregate(metrics, list(reducers), config.objective, resamples=200)


@hookimpl
def retrofit_export(domain: str, model: Any, knobs: Any, values: dict[str, Any], output: Path) -> Path | None:
    """The network's state_dict with its knobs baked in (an Arnold checkpoint that loads as
    before); the temperature and frame skip live in the delta file the core writes beside it."""
    if domain != NAME:
        return None
    from retrofit.nn.plugin import retrofit_export as torch_export

    from .policy_knobs import FrameSkipKnob, TemperatureKnob

    network_knobs = [k for k in knobs if not isinstance(k, (TemperatureKnob, FrameSkipKnob))]
    if not network_knobs:
        return None
    return torch_export(domain=domain, model=model.net, knobs=network_knobs,
                        values={k.name: values[k.name] for k in network_knobs}, output=output)


@hookimpl
def retrofit_run_finished(domain: str, config: Any, run_dir: Path, summary: dict[str, Any]) -> None:
    """Baseline, retrofitted and trivial scripted policies on the held-out seeds (``heldout.json``),
    and a recording of a held-out episode, baseline beside retrofitted (``episode.mp4``, ``.gif``)."""
    if domain != NAME:
        return
    from .finish import record_comparison, score_heldout

    options = dict(config.options)
    if options["compare"]:
        score_heldout(options, config, run_dir, summary)
    if options["record"] and summary.get("best", {}).get("values"):
        record_comparison(options, config, run_dir, summary)
