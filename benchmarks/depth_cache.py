"""Depth evaluation throughput: the head cache against a full forward per candidate.

Head-only knob sets (here the default's gains on the input of the last 1x1 conv and output
gamma, without its input statistics) touch only the end of the head, so the plugin caches the head's activations before the first knob once
per image and re-runs only the rest per candidate. This measures candidates per second with
and without that cache, side by side, on the same model, images and candidate values.

    python benchmarks/depth_cache.py [--model builtin] [--images 32] [--candidates 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from retrofit.config import resolve
from retrofit.evaluator import Evaluator, Task
from retrofit_depth_midas.plugin import DOMAIN, HEAD_ONLY_KNOBS


def throughput(evaluator: Evaluator, candidates: list[np.ndarray]) -> float:
    """Candidates per second over the whole train split (first pass, which fills the cache, excluded)."""
    evaluator.evaluate(Task(0, "train", evaluator.space.identity))
    start = time.perf_counter()
    for index, values in enumerate(candidates, start=1):
        outcome = evaluator.evaluate(Task(index, "train", values))
        assert outcome.error is None, outcome.error
    return len(candidates) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--images", type=int, default=32, help="demo images (half of them train)")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    def evaluator(cache: bool) -> Evaluator:
        config = resolve(DOMAIN, None, {"depth.model": args.model, "depth.demo_images": args.images,
                                        "depth.cache_features": cache, "depth.knobs": HEAD_ONLY_KNOBS,
                                        # evaluated here, but with the threads of one of 2 pool workers
                                        "run.executor": "local", "run.workers": 2})
        return Evaluator(config)

    cached, full = evaluator(True), evaluator(False)
    rng = np.random.default_rng(0)
    candidates = [cached.space.to_natural(rng.normal(size=cached.space.size)) for _ in range(args.candidates)]
    ratios, rows = [], []
    for repeat in range(args.repeats):  # interleaved, so machine noise hits both alike
        fast, slow = throughput(cached, candidates), throughput(full, candidates)
        ratios.append(fast / slow)
        rows.append((repeat, fast, slow, fast / slow))
    images = len([n for b in cached.batches("train") for n in b])
    print(f"model {args.model}, {images} train images per candidate, {args.candidates} candidates, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"{'repeat':>6} {'cached cand/s':>14} {'full cand/s':>12} {'ratio':>7}")
    for repeat, fast, slow, ratio in rows:
        print(f"{repeat:>6} {fast:>14.2f} {slow:>12.2f} {ratio:>7.2f}")
    print(f"median ratio (cached / full forward): {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
