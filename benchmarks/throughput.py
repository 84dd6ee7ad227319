"""Per-domain evaluation throughput: retrofit's evaluation of a candidate against the raw loop
each pack wraps, on the same data, in the same process, side by side.

One row per domain. The retrofit side is generic: an :class:`~retrofit.evaluator.Evaluator`
scoring the unmodified model on the train split (plugin hooks, knob apply/restore, metric
aggregation included). The raw side is the loop a user would write without retrofit, supplied
per domain by a ``raw_*`` function below. Rows whose pack or raw loop is not built yet are
listed as such; the script runs with the rest.

Extension points (owned by the pack's engineers; each returns ``RawLoop``, see its docstring):

* :func:`raw_depth`   done: TinyMidas forward + MiDaS-protocol metrics on the same images.
* :func:`raw_doom`    done: ViZDoom episodes of the same agent, same seeds (doom_throughput.py).
* :func:`raw_codegen` done: the same LM decodes the same prompts, the pack's judge runs them.

    python benchmarks/throughput.py [--domains depth,doom,codegen] [--repeats 3] [--images 32]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from retrofit.config import Config, resolve
from retrofit.errors import RetrofitError
from retrofit.evaluator import Evaluator, Task
from retrofit.plugins import load


@dataclass
class RawLoop:
    """The raw side of a row: ``run()`` does one pass over the same work one retrofit
    evaluation of the train split does, and returns how many units (images, episodes,
    programs) it processed; ``unit`` names them."""

    run: Callable[[], int]
    unit: str


class NotBuilt(Exception):
    """This domain's row cannot be measured yet (pack or raw loop missing)."""


def not_built(reason: str) -> Callable[[Callable[..., RawLoop]], Callable[..., RawLoop]]:
    """Marks an extension point that is still empty, so that its pack's model is not even loaded.
    Remove the mark when filling the function in."""

    def mark(function: Callable[..., RawLoop]) -> Callable[..., RawLoop]:
        function.not_built = reason  # type: ignore[attr-defined]
        return function

    return mark


# -- extension points ------------------------------------------------------------------------
def raw_depth(config: Config, evaluator: Evaluator) -> RawLoop:
    """TinyMidas (or whatever ``depth.model`` names) forward on each train batch, resized back,
    scored with the pack's MiDaS-protocol metrics: what ``retrofit_evaluate`` wraps."""
    import numpy as np
    import torch
    from retrofit_depth_midas.metrics import depth_metrics
    from retrofit_depth_midas.preprocess import prepare, resize_back

    problem = evaluator.model  # the DepthProblem: same network, dataset and options
    model, options = problem.model, config.options
    batches = evaluator.batches("train")
    samples = {name: problem.dataset.load(name) for batch in batches for name in batch}  # read once, like retrofit
    size = options["input_size"] or model.input_size

    def run() -> int:
        rates = []
        with torch.no_grad():
            for batch in batches:
                pixels = np.stack([prepare(samples[n].rgb, size=size, keep_aspect=model.keep_aspect,
                                           normalization=model.normalization) for n in batch])
                disparity = model.forward(pixels).float().cpu().numpy()
                predictions = [resize_back(d, samples[n].depth.shape) for d, n in zip(disparity, batch)]
                per_image = depth_metrics(predictions, [samples[n].depth for n in batch],
                                          [samples[n].valid for n in batch], threshold=options["threshold"],
                                          depth_cap=options["depth_cap"], alignment=options["alignment"])
                rates.append(np.mean([m["bad_pixel_rate"] for m in per_image]))
        assert len(rates) == len(batches)
        return sum(len(batch) for batch in batches)

    return RawLoop(run=run, unit="images")


def raw_doom(config: Config, evaluator: Evaluator) -> RawLoop:
    """The same agent on the same train seeds with plain vizdoom calls, one engine reused (what
    the domain does without bots): ``bare_loop`` of benchmarks/doom_throughput.py."""
    from doom_throughput import bare_loop  # this script's folder is on sys.path

    problem = evaluator.model  # the DoomAgent: same network and checkpoint metadata
    seeds = [seed for batch in evaluator.batches("train") for seed in batch]

    def run() -> int:
        bare_loop(seeds, fresh=False, agent=problem.agent)
        return len(seeds)

    return RawLoop(run=run, unit="episodes")


def raw_codegen(config: Config, evaluator: Evaluator) -> RawLoop:
    """The same model decodes the same train prompts with the same seeds and temperature, and
    the pack's judge runs every program in a warm sandbox with the same limits and timing
    repeats: what ``retrofit_evaluate`` wraps, without hooks, knobs or the domain's cache.

    The domain keeps every judged (task, code) pair for the rest of the process, so retrofit's
    second pass over an unchanged candidate would only decode. A tuning run's candidates write
    new programs, so every retrofit pass here starts with that cache empty: both sides decode,
    check (the judge's own correctness cache is warm on both sides after the warm-up) and time
    every program."""
    import atexit

    from retrofit_codegen.judge import Judge
    from retrofit_codegen.sandbox import Limits

    problem = evaluator.model  # the CodegenProblem: same LM, problems and options
    options = config.options
    batches = evaluator.batches("train")
    judge = Judge(Limits(cpu_seconds=options["cpu_seconds"]), repeats=options["repeats"])
    atexit.register(judge.close)
    evaluate = evaluator.evaluate

    def fresh_evaluate(task: Task) -> Any:
        problem.results.clear()
        return evaluate(task)

    evaluator.evaluate = fresh_evaluate  # type: ignore[method-assign]

    def run() -> int:
        programs = 0
        for batch in batches:
            tasks = [problem.problems[task] for task, _ in batch]
            completions = problem.lm.complete([t.prompt for t in tasks], [seed for _, seed in batch],
                                              temperature=options["temperature"],
                                              max_new_tokens=options["max_new_tokens"], batch_size=len(batch))
            results = judge.judge(list(zip(tasks, completions)))
            programs += len(results)
        return programs

    return RawLoop(run=run, unit="programs")


ROWS: dict[str, Callable[[Config, Evaluator], RawLoop]] = {"depth": raw_depth, "doom": raw_doom,
                                                           "codegen": raw_codegen}
# small, fast settings per domain (the row compares two loops on the same work, not absolute speed)
SETTINGS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    # full forward on both sides: the head cache is a retrofit optimisation, measured in depth_cache.py
    "depth": lambda args: {"depth.demo_images": args.images, "depth.cache_features": False},
    "doom": lambda args: {"doom.train_episodes": 8},
}


# -- measurement -----------------------------------------------------------------------------
def measure(domain: str, args: argparse.Namespace, plugins: Any) -> tuple[str, float, float]:
    """(unit, retrofit units/s, raw units/s), medians of interleaved repeats."""
    if domain not in plugins.domains:
        raise NotBuilt(f"the {domain} pack is not installed or registers no domain")
    if getattr(ROWS[domain], "not_built", None):
        raise NotBuilt(ROWS[domain].not_built)  # type: ignore[attr-defined]
    config = resolve(plugins.domain(domain), None, SETTINGS.get(domain, lambda a: {})(args))
    try:
        evaluator = Evaluator(config, plugins)
        raw = ROWS[domain](config, evaluator)
    except (RetrofitError, NotImplementedError) as error:
        raise NotBuilt(f"the {domain} pack cannot evaluate yet: {error}") from None
    identity = evaluator.space.identity

    def retrofit_pass() -> int:
        outcome = evaluator.evaluate(Task(0, "train", identity))
        if outcome.error:
            raise NotBuilt(f"the {domain} evaluation fails: {outcome.error}")
        return sum(len(batch) if isinstance(batch, (tuple, list)) else 1 for batch in evaluator.batches("train"))

    retrofit_pass(), raw.run()  # warm-up: data read, caches and lazy imports on both sides
    fast, slow = [], []
    for repeat in range(args.repeats):
        order = (retrofit_pass, raw.run) if repeat % 2 == 0 else (raw.run, retrofit_pass)
        for side in order:
            began = time.perf_counter()
            units = side()
            rate = units / (time.perf_counter() - began)
            (fast if side is retrofit_pass else slow).append(rate)
    return raw.unit, statistics.median(fast), statistics.median(slow)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", default=",".join(ROWS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=32, help="depth: demo images (half of them train)")
    args = parser.parse_args()
    import os

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    plugins = load()
    print()
    print("| domain | unit | retrofit units/s | raw loop units/s | retrofit / raw | status |")
    print("|---|---|---:|---:|---:|---|")
    for domain in args.domains.split(","):
        try:
            unit, ours, theirs = measure(domain, args, plugins)
        except NotBuilt as missing:
            print(f"| {domain} | | | | | not yet built: {missing} |")
            continue
        print(f"| {domain} | {unit} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.3f} | measured |")
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
