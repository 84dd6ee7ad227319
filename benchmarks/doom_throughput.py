"""Doom episode throughput: retrofit's evaluation against a bare ViZDoom loop running the same
network on the same seeds, and the speed-up of the local pool with 2 workers over 1.

    python benchmarks/doom_throughput.py [--episodes 24] [--repeats 3]

Rows, measured interleaved in one run (this machine is noisy; ratios, not absolute times):

* bare, one engine   -- a DoomGame reused across episodes (new_episode), the agent's forward per
                        step: the loop a hand-written script would use, and what retrofit does
                        on single-player scenarios;
* bare, fresh engine -- the same with a new engine per episode, what retrofit does with bots
                        (where a reused engine made scores depend on earlier episodes);
* retrofit evaluate  -- ``Evaluator.evaluate`` of one candidate on those seeds (knobs applied,
                        metrics aggregated), in this process;
* local pool x1, x2  -- the same episodes as tasks of 4 seeds through the local pool.

Goal (issue 5): retrofit within 20 % of the bare loop running the same network; speed-up with
2 workers reported. The agent is the shipped demo agent (greedy).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def bare_loop(seeds: list[int], fresh: bool, agent: Any = None) -> int:
    """Play the seeds with plain vizdoom calls and the agent's network (default: the demo agent);
    returns the steps played. Also the raw Doom loop of benchmarks/throughput.py."""
    import torch
    import vizdoom
    from retrofit_doom_arnold.actions import ActionSpace
    from retrofit_doom_arnold.agents import load_agent
    from retrofit_doom_arnold.arnold import preprocess

    agent = agent or load_agent("builtin")
    net = agent.net
    space = ActionSpace(agent.meta["actions"])

    def start(seed: int) -> vizdoom.DoomGame:
        game = vizdoom.DoomGame()
        game.load_config(os.path.join(vizdoom.scenarios_path, agent.meta["scenario"] + ".cfg"))
        game.set_window_visible(False)
        game.set_sound_enabled(False)
        game.set_screen_resolution(vizdoom.ScreenResolution.RES_160X120)
        game.set_screen_format(vizdoom.ScreenFormat.RGB24)
        game.set_available_buttons(space.vizdoom_buttons())
        game.set_available_game_variables([vizdoom.GameVariable.HEALTH, vizdoom.GameVariable.SELECTED_WEAPON_AMMO])
        game.set_seed(seed)
        game.init()
        return game

    steps = 0
    game = None if fresh else start(seeds[0])
    with torch.no_grad():
        for seed in seeds:
            if fresh:
                game = start(seed)
            game.set_seed(seed)
            game.new_episode()
            while not game.is_episode_finished():
                state = game.get_state()
                screen = torch.from_numpy(preprocess(state.screen_buffer)).unsqueeze(0)
                variables = torch.tensor([list(state.game_variables)], dtype=torch.float32)
                q, _, _ = net(screen, variables)
                game.make_action(space.actions[int(q.argmax())], agent.meta["frame_skip"])
                steps += 1
            if fresh:
                game.close()
    if not fresh:
        game.close()
    return steps


def retrofit_evaluate(seeds: list[int]) -> float:
    """Seconds of ``Evaluator.evaluate`` on the seeds (the evaluator is built before the clock
    starts, as a pool worker builds it once; the engine starts inside, as in the bare loop)."""
    from retrofit.config import resolve
    from retrofit.evaluator import Evaluator, Task
    from retrofit_doom_arnold.plugin import DOMAIN

    evaluator = Evaluator(resolve(DOMAIN, None, {"run.executor": "serial"}))
    started = time.perf_counter()
    outcome = evaluator.evaluate(Task(0, "train", evaluator.space.identity, tuple(range(len(seeds)))))
    seconds = time.perf_counter() - started
    assert outcome.error is None, outcome.error
    return seconds


def pool(seeds: list[int], workers: int) -> float:
    """Seconds to play the seeds as tasks of 4 episodes through the local pool (after start-up)."""
    from retrofit import executors
    from retrofit.config import resolve
    from retrofit.evaluator import Task
    from retrofit_doom_arnold.plugin import DOMAIN

    config = resolve(DOMAIN, None, {"run.executor": "local", "run.workers": workers})
    executor = executors.create(config)
    setup = executor.start()
    try:
        identity = setup.space.identity
        chunks = [tuple(range(i, min(i + 4, len(seeds)))) for i in range(0, len(seeds), 4)]
        started = time.perf_counter()
        for index, chunk in enumerate(chunks):
            executor.submit(Task(index, "train", identity, chunk))
        done = 0
        while done < len(chunks):
            for outcome in executor.wait():
                assert outcome.error is None, outcome.error
                done += 1
        return time.perf_counter() - started
    finally:
        executor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    seeds = list(range(args.episodes))  # the domain's train seeds 0..N-1, as retrofit_evaluate plays them
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    times: dict[str, list[float]] = {k: [] for k in ("bare, one engine", "bare, fresh engine", "retrofit evaluate",
                                                     "local pool x1", "local pool x2")}
    steps = 0
    for _ in range(args.repeats):  # interleaved, so load drifts hit every row alike
        t = time.perf_counter()
        steps = bare_loop(seeds, fresh=False)
        times["bare, one engine"].append(time.perf_counter() - t)
        t = time.perf_counter()
        bare_loop(seeds, fresh=True)
        times["bare, fresh engine"].append(time.perf_counter() - t)
        times["retrofit evaluate"].append(retrofit_evaluate(seeds))
        times["local pool x1"].append(pool(seeds, 1))
        times["local pool x2"].append(pool(seeds, 2))
    median = {k: statistics.median(v) for k, v in times.items()}
    base = median["bare, one engine"]
    print(f"\n{args.episodes} episodes ({steps} steps with the bare loop), median of {args.repeats}")
    print(f"{'row':<22}{'seconds':>9}{'episodes/s':>12}{'vs bare':>10}")
    for name, seconds in median.items():
        print(f"{name:<22}{seconds:>9.2f}{args.episodes / seconds:>12.1f}{seconds / base:>9.2f}x")
    print(f"\nretrofit evaluate / bare fresh engine: {median['retrofit evaluate'] / median['bare, fresh engine']:.2f}x")
    print(f"retrofit evaluate / bare one engine:   {median['retrofit evaluate'] / base:.2f}x  (goal <= 1.20)")
    print(f"local pool speed-up, 2 workers vs 1:   {median['local pool x1'] / median['local pool x2']:.2f}x")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    np.seterr(all="ignore")
    main()
