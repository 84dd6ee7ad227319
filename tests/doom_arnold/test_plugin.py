"""The doom domain end to end on short real episodes: loading, knobs, bookkeeping, reproducible
evaluation in and across processes, the CLI, the scripted comparison and the recording, and
engine clean-up when things go wrong (no mocks of ViZDoom)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli, history, summary
from retrofit import UsageError
from retrofit.config import resolve
from retrofit.evaluator import Evaluator, Task
from retrofit_doom_arnold import watchdog
from retrofit_doom_arnold.arnold import ArnoldNet
from retrofit_doom_arnold.game import EpisodeResult
from retrofit_doom_arnold.plugin import DOMAIN, episode_sums, retrofit_aggregate, retrofit_batches

SHORT = {"doom.episode_timeout": 140, "doom.train_episodes": 4, "doom.validation_episodes": 2}


def all_engines() -> dict[int, int]:
    """Every live engine a retrofit process started: engine pid -> owner pid (from its marker)."""
    found = {}
    for pid, _, cmd in watchdog.engine_processes():
        marker = re.search(rb"/retrofit_doom_(\d+)_", cmd)
        if marker:
            found[pid] = int(marker.group(1))
    return found


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def orphans(wait: float = 5.0) -> list[int]:
    """Engines whose owner is gone, once the watchdogs had ``wait`` seconds to sweep them
    (engines of other live runs on this machine are not orphans)."""
    deadline = time.monotonic() + wait
    while True:
        left = [pid for pid, owner in all_engines().items() if not os.path.exists(f"/proc/{owner}")]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small random agent in this pack's checkpoint format (meta names its game)."""
    torch.manual_seed(0)
    net = ArnoldNet(3, recurrent=False, game_features=("target", "enemy"), hidden=16)
    path = tmp_path_factory.mktemp("doom") / "agent.pt"
    torch.save({"state_dict": net.state_dict(),
                "meta": {"scenario": "defend_the_center", "actions": "turn_lr+attack", "resolution": "RES_160X120",
                         "variables": ["HEALTH", "SELECTED_WEAPON_AMMO"], "frame_skip": 4, "hidden": 16,
                         "game_features": ["target", "enemy"]}}, path)
    return path


def _config(checkpoint: Path, **overrides):
    return resolve(DOMAIN, None, {"doom.model": str(checkpoint), "run.executor": "serial", **SHORT, **overrides})


def test_episode_sums_and_ratio_of_totals():
    results = [EpisodeResult(seed=1, kills=4, deaths=1, tics=350, lives=1, steps=10, actions=[2] * 3 + [0] * 7),
               EpisodeResult(seed=2, kills=0, deaths=1, tics=70, lives=1, steps=5, actions=[1] * 5),
               EpisodeResult(seed=3, kills=9, deaths=0, tics=700, lives=1, steps=4, actions=[2] * 4)]
    per_batch = [episode_sums([r], attack_actions={2}) for r in results]
    assert per_batch[0] == {"episodes": 1.0, "kills": 4.0, "deaths": 1.0, "suicides": 0.0, "frags": 4.0,
                            "lives": 1.0, "seconds": 10.0, "minutes": 10.0 / 60, "reward": 0.0, "steps": 10.0,
                            "attacks": 3.0}
    config = resolve(DOMAIN, None, {})
    aggregate = retrofit_aggregate(domain="doom", metrics=per_batch, config=config)
    m = aggregate.metrics
    assert m["kills_per_life"] == pytest.approx(13 / 3)          # totals, not a mean of ratios
    assert m["kd"] == pytest.approx(13 / 2)                      # deaths floored at 1 per Arnold
    assert m["life_expectancy"] == pytest.approx((10 + 2 + 20) / 3)
    assert m["attack_share"] == pytest.approx(7 / 19)
    assert aggregate.loss == pytest.approx(-m["kills_per_life"] - 0.1 * m["life_expectancy"])
    assert aggregate.standard_errors["kills_per_life"] > 0 and aggregate.loss_se > 0
    again = retrofit_aggregate(domain="doom", metrics=per_batch, config=config)
    assert again.loss_se == aggregate.loss_se  # a seeded bootstrap: the same input, the same error
    assert retrofit_aggregate(domain="depth", metrics=per_batch, config=config) is None


def test_seed_ranges_are_disjoint_and_checked(checkpoint):
    config = _config(checkpoint)
    train = retrofit_batches(domain="doom", config=config, split="train")
    validation = retrofit_batches(domain="doom", config=config, split="validation")
    assert train == [(0,), (1,), (2,), (3,)] and validation == [(1_000_000,), (1_000_001,)]
    paired = retrofit_batches(domain="doom", config=_config(checkpoint, **{"doom.episodes_per_batch": 2}),
                              split="train")
    assert paired == [(0, 1), (2, 3)]
    with pytest.raises(UsageError, match="overlap"):
        retrofit_batches(domain="doom", config=_config(checkpoint, **{"doom.validation_seed": 2}), split="train")


def test_epsilon_greedy_plays_random_actions_reproducibly(checkpoint):
    evaluator = Evaluator(_config(checkpoint, **{"doom.epsilon": 1.0}))
    runs = [evaluator.evaluate(Task(0, "train", evaluator.space.identity, (0, 1))) for _ in range(2)]
    assert runs[0].metrics == runs[1].metrics
    assert 0.2 < runs[0].metrics["attack_share"] < 0.5  # one action in three attacks
    with pytest.raises(UsageError, match="epsilon"):
        Evaluator(_config(checkpoint, **{"doom.epsilon": 1.5}))


def test_bad_models_get_one_line(checkpoint, tmp_path):
    from retrofit_doom_arnold.plugin import load_problem

    options = dict(_config(checkpoint).options)
    with pytest.raises(UsageError, match="no such checkpoint"):
        load_problem({**options, "model": str(tmp_path / "missing.pt")})
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(UsageError, match="cannot read the checkpoint"):
        load_problem({**options, "model": str(tmp_path / "corrupt.pt")})
    with pytest.raises(UsageError, match="scores 3 actions but action spec 'move_fb;turn_lr' has 8"):
        load_problem({**options, "actions": "move_fb;turn_lr"})
    # a plain Arnold state_dict has no meta: the options say which game
    torch.save(ArnoldNet(8, recurrent=True, hidden=32).state_dict(), tmp_path / "plain.pth")
    problem = load_problem({**options, "model": str(tmp_path / "plain.pth"), "actions": "move_fb;turn_lr"})
    assert problem.net.recurrent and problem.settings.actions == "move_fb;turn_lr"


def test_default_knobs_start_at_the_identity_and_move_the_agent(checkpoint):
    config = _config(checkpoint)
    evaluator = Evaluator(config)
    knobs = {k.name: k for k in evaluator.knobs.knobs}
    assert set(knobs) == {"bias_shift:proj_action_scores.bias", "channel_gain:proj_action_scores.weight",
                          "policy_temperature"}
    assert knobs["channel_gain:proj_action_scores.weight"].size == 16  # one gain per hidden unit
    space = evaluator.space
    identity = evaluator.evaluate(Task(0, "train", space.identity, (0, 1)))
    assert identity.error is None
    bias = space.split(space.identity)
    bias["bias_shift:proj_action_scores.bias"] = np.array([0.0, 0.0, 50.0])  # always attack
    attacking = evaluator.evaluate(Task(1, "train", space.join(bias), (0, 1)))
    assert attacking.metrics["attack_share"] == pytest.approx(1.0)
    assert identity.metrics["attack_share"] < 1.0 or identity.metrics != attacking.metrics
    again = evaluator.evaluate(Task(0, "train", space.identity, (0, 1)))
    assert again.metrics == identity.metrics  # knobs restored, episodes reproducible


def test_temperature_samples_reproducibly_and_frame_skip_is_discrete(checkpoint):
    config = _config(checkpoint, **{"doom.knobs": [{"kind": "temperature"}, {"kind": "frame_skip"}]})
    evaluator = Evaluator(config)
    space = evaluator.space
    values = space.split(space.identity)
    values["policy_temperature"] = np.array([2.0])
    values["frame_skip"] = np.array([6.4])  # played as 6 tics
    hot = space.join(values)
    first = evaluator.evaluate(Task(1, "train", hot, (0, 1)))
    second = evaluator.evaluate(Task(2, "train", hot, (0, 1)))
    greedy = evaluator.evaluate(Task(0, "train", space.identity, (0, 1)))
    assert first.metrics == second.metrics and first.metrics != greedy.metrics
    with evaluator.knobs.applied(hot):
        assert evaluator.model.game_settings().frame_skip == 6
        assert evaluator.model.policy().temperature == 2.0
    assert evaluator.model.game_settings().frame_skip == 4 and evaluator.model.temperature[0] == 0.0


_EVALUATE_ELSEWHERE = """
import json, sys
import numpy as np
from retrofit.config import resolve
from retrofit.evaluator import Evaluator, Task
from retrofit_doom_arnold.plugin import DOMAIN
config = resolve(DOMAIN, None, json.loads(sys.argv[1]))
evaluator = Evaluator(config)
space = evaluator.space
values = space.identity + 0.3 * np.sin(np.arange(space.size))
print(json.dumps(evaluator.evaluate(Task(7, "train", values, (2, 3))).metrics))
"""


def test_the_same_candidate_and_seeds_score_the_same_in_another_process(checkpoint):
    overrides = {"doom.model": str(checkpoint), "run.executor": "serial", **SHORT}
    config = resolve(DOMAIN, None, overrides)
    evaluator = Evaluator(config)
    space = evaluator.space
    values = space.identity + 0.3 * np.sin(np.arange(space.size))
    here = evaluator.evaluate(Task(7, "train", values, (2, 3))).metrics
    done = subprocess.run([sys.executable, "-c", _EVALUATE_ELSEWHERE, json.dumps(overrides)], capture_output=True,
                          text=True, timeout=120, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == pytest.approx(here)


def test_tune_with_two_workers_writes_the_comparison_and_the_recording(checkpoint, tmp_path):
    sets = [f"--set={k}={v}" for k, v in {**SHORT, "run.budget": 4, "run.batches_per_evaluation": 2,
                                          "run.round_size": 2, "run.validate_every": 4, "run.workers": 2}.items()]
    done = cli("doom", "tune", "--model", str(checkpoint), *sets, "--out", str(tmp_path / "run"), check=0,
               timeout=280)
    run = tmp_path / "run"
    s = summary(run)
    assert s["status"] == "finished" and len(history(run)) == 4
    for split in ("train", "validation"):
        figures = s["baseline"][split]
        assert {"kills_per_life", "life_expectancy", "kd"} <= set(figures["metrics"])
    heldout = json.loads((run / "heldout.json").read_text())
    assert set(heldout) == {"always_attack", "spin_and_shoot", "random", "baseline", "retrofitted"}
    assert heldout["always_attack"]["metrics"]["attack_share"] == 1.0
    assert all("beaten_by_retrofit" in heldout[name] for name in ("always_attack", "spin_and_shoot", "random"))
    assert len(heldout["baseline"]["episodes"]) == 2
    # replaying the agents on the held-out seeds gives the run's own validation figures
    assert heldout["baseline"]["reproduced"] and heldout["retrofitted"]["reproduced"]
    episode = json.loads((run / "episode.json").read_text())
    assert episode["seed"] == 1_000_000 and (run / "episode.gif").stat().st_size > 1000
    cli("doom", "record", str(run), "--seed", "1000001", check=0)
    assert json.loads((run / "episode.json").read_text())["seed"] == 1_000_001
    assert "kills_per_life" in done.stdout
    cli("report", str(run), "-o", str(tmp_path / "report.html"), check=0)
    page = (tmp_path / "report.html").read_text()
    assert "Doom: held-out episodes" in page and "spin and shoot" in page and page.count("data:image/gif") == 1
    assert orphans() == []


def test_engines_die_with_their_owner_on_kill_and_on_ctrl_c(checkpoint, tmp_path):
    code = ("from retrofit_doom_arnold.game import Game, GameSettings\n"
            "import time\n"
            "g = Game(GameSettings(scenario='basic', fresh_game=False)).open()\n"
            "print('ready', flush=True)\n"
            "time.sleep(120)\n")
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert owner.stdout.readline().strip() == "ready"
    assert watchdog.engines_of(owner.pid)
    owner.kill()  # what a pool does to a worker past its timeout
    owner.wait()
    deadline = time.monotonic() + 5
    while watchdog.engines_of(owner.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert watchdog.engines_of(owner.pid) == []

    # Ctrl-C in the middle of a two-worker run: no engine survives it
    sets = [f"--set={k}={v}" for k, v in {**SHORT, "doom.episode_timeout": 2100, "run.budget": 50,
                                          "run.workers": 2}.items()]
    run = subprocess.Popen([sys.executable, "-m", "retrofit", "doom", "tune", "--model", str(checkpoint), *sets,
                            "--out", str(tmp_path / "interrupted")], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)

    def engines_of_the_run() -> list[int]:  # owned by the run or by its pool workers
        return [pid for pid, owner in all_engines().items() if owner == run.pid or _parent(owner) == run.pid]

    deadline = time.monotonic() + 60
    while not engines_of_the_run() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engines_of_the_run(), "the run never started an engine"
    run.send_signal(signal.SIGINT)
    output, _ = run.communicate(timeout=60)
    assert run.returncode == 130, output
    assert orphans() == []


def test_the_shipped_agent_plays_the_same_episodes_in_a_reused_engine_in_any_order():
    """Engine reuse (the default without bots) is only safe if an episode depends on its seed
    alone: compare a reused engine, in two orders, with a fresh engine per episode."""
    from dataclasses import replace

    from retrofit_doom_arnold.game import Game
    from retrofit_doom_arnold.plugin import load_problem

    problem = load_problem(dict(resolve(DOMAIN, None, {"doom.episode_timeout": 700}).options))
    assert problem.agent.meta["scenario"] == "defend_the_center" and not problem.settings.fresh_game
    seeds = [5, 1_000_003, 17]

    def play(order, fresh):
        with Game(replace(problem.settings, fresh_game=fresh)) as game:
            return {seed: game.play(problem.policy(), seed) for seed in order}

    fresh = play(seeds, True)
    for order in (seeds, seeds[::-1]):
        reused = play(order, False)
        for seed in seeds:
            assert reused[seed].as_dict() == fresh[seed].as_dict() and reused[seed].actions == fresh[seed].actions
    assert sum(r.kills for r in fresh.values()) > 0  # the shipped agent does hit things
