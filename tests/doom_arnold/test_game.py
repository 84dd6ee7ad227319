"""Short real ViZDoom episodes (no mocks): metrics, reproducibility and engine clean-up."""

import numpy as np
import pytest

pytest.importorskip("vizdoom")

from retrofit import UsageError
from retrofit_doom_arnold.arnold import ArnoldNet, ArnoldPolicy
from retrofit_doom_arnold.game import Game, GameSettings, engine_pids


def random_policy(seed, n):
    rng = np.random.default_rng(seed)
    return lambda frame, variables: int(rng.integers(n))


def test_play_defend_the_center_metrics_and_frames():
    seen = []

    def spin_and_shoot(frame, variables):
        seen.append((frame.shape, frame.dtype, dict(variables)))
        return 1 if len(seen) % 3 else 2  # turn right, attack every third step

    settings = GameSettings(scenario="defend_the_center", episode_timeout=300, actions="turn_lr+attack",
                            variables=("HEALTH", "AMMO2"))
    with Game(settings) as game:
        r = game.play(spin_and_shoot, seed=3)
    assert seen[0][0] == (120, 160, 3) and seen[0][1] == np.uint8
    assert set(seen[0][2]) == {"HEALTH", "AMMO2"} and seen[0][2]["HEALTH"] == 100
    assert r.steps == len(seen) and 0 < r.tics <= 310 and r.seconds == pytest.approx(r.tics / 35)
    assert r.kills >= 1  # spinning and shooting hits something in 300 tics
    assert r.deaths in (0, 1) and r.suicides == 0 and r.frags == r.kills - r.suicides
    assert r.reward == pytest.approx(r.kills - r.deaths)  # defend_the_center: +1 a kill, -1 for dying
    assert r.survival_tics == r.tics / max(1, r.lives)


@pytest.mark.parametrize("fresh_game", [True, False])
def test_play_is_reproducible_and_deaths_are_per_episode(fresh_game):
    settings = GameSettings(scenario="defend_the_center", episode_timeout=600, actions="move_fb;turn_lr",
                            fresh_game=fresh_game)
    with Game(settings) as game:
        runs = [game.play(random_policy(s, 8), seed=s) for s in (1, 2, 1, 2)]
    assert runs[0].as_dict() == runs[2].as_dict() and runs[0].actions == runs[2].actions
    assert runs[1].as_dict() == runs[3].as_dict()
    # DEATHCOUNT is cumulative in one engine: per-episode deaths must not grow with history
    assert all(r.deaths <= 1 for r in runs)


def test_gray_basic_and_recurrent_policy():
    net = ArnoldNet(3, channels=1)
    with Game(GameSettings(scenario="basic", gray=True, actions="turn_lr+attack", episode_timeout=100,
                           variables=("HEALTH", "SELECTED_WEAPON_AMMO"))) as game:
        r = game.play(ArnoldPolicy(net), seed=0, max_steps=10)
    assert r.steps == 10 and all(0 <= a < 3 for a in r.actions)


def test_engines_are_closed():
    before = engine_pids()
    with Game(GameSettings(scenario="basic", fresh_game=False)) as game:
        game.play(random_policy(0, 3), seed=0, max_steps=5)
        assert len(engine_pids()) == len(before) + 1  # the engine is a child process of ours
    assert engine_pids() == before
    # an exception inside the policy still closes the engine
    def broken(frame, variables):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"), Game(GameSettings(scenario="basic")) as game:
        game.play(broken, seed=0)
    assert engine_pids() == before
    # a policy returning an out-of-range action is a usage error, and the engine is closed too
    with pytest.raises(UsageError, match="outside"), Game(GameSettings(scenario="basic", fresh_game=False)) as game:
        game.play(lambda f, v: 99, seed=0)
    assert engine_pids() == before


def test_bad_settings():
    with pytest.raises(UsageError, match="no_such_map"):
        Game(GameSettings(scenario="no_such_map"))
    with pytest.raises(UsageError, match="HEALTHY"):
        Game(GameSettings(variables=("HEALTHY",)))
    with pytest.raises(UsageError, match="shoot"):
        Game(GameSettings(actions="turn_lr+shoot"))


def test_deathmatch_with_bots_counts_deaths_and_respawns():
    # cig ships ASYNC (real time); the wrapper forces synchronous PLAYER mode, so this is fast
    # (a reused engine is history-dependent with bots, hence fresh_game, the default)
    settings = GameSettings(scenario="cig", bots=3, episode_timeout=35 * 20, frame_skip=4,
                            actions="move_fb+move_lr;turn_lr;attack")
    with Game(settings) as game:
        a, _, c = [game.play(random_policy(s, 29), seed=s) for s in (4, 5, 4)]
    assert a.tics >= 35 * 20 - 4  # the episode runs to its timeout: deaths respawn
    assert a.lives == a.deaths + 1 and a.frags == a.kills - a.suicides
    assert a.deaths >= 1  # a random agent with a rocket launcher dies in 20 s (measured: 3)
    assert a.as_dict() == c.as_dict() and a.actions == c.actions  # same seed, same result (bots included)
