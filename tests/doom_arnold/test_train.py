"""The demo agent's training script, run small: DAgger rounds on real episodes, a checkpoint the
domain loads, and a student that learnt something from the expert."""

from __future__ import annotations

import torch
from retrofit_doom_arnold.agents import load_agent
from retrofit_doom_arnold.arnold import ArnoldPolicy
from retrofit_doom_arnold.game import Game
from retrofit_doom_arnold.scripted import Expert
from retrofit_doom_arnold.train import demo_settings, train


def test_the_expert_beats_spinning_and_a_short_dagger_run_saves_a_loadable_agent(tmp_path):
    from retrofit_doom_arnold.scripted import SpinAndShoot

    with Game(demo_settings()) as game:
        expert = Expert(game.action_space, width=160, tolerance=9)
        spin = SpinAndShoot(game.action_space)
        seeds = range(200_000, 200_004)
        assert sum(game.play(expert, s).kills for s in seeds) > sum(game.play(spin, s).kills for s in seeds)

    meta = train(tmp_path / "agent.pt", rounds=2, episodes=2, epochs=1, hidden=16, seed=3)
    assert [entry["round"] for entry in meta["log"]] == [0, 1]
    assert meta["log"][1]["states"] > meta["log"][0]["states"] > 0  # round 1 added the student's states
    agent = load_agent(str(tmp_path / "agent.pt"))
    assert agent.meta["actions"] == "turn_lr+attack" and agent.net.proj_action_scores.in_features == 16
    state = torch.load(tmp_path / "agent.pt", weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())  # shipped small
    with Game(demo_settings()) as game:
        result = game.play(ArnoldPolicy(agent.net), seed=1, max_steps=50)
    assert result.steps == 50
