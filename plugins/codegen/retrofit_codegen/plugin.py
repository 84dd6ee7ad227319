"""Hook implementations of the ``codegen`` domain: retrofit a code LM so the correct code it
writes runs faster, without writing less correct code.

The "model" the core sees is a :class:`CodegenProblem`: the language model, its decoding
controls (which the knobs set), the problems, and a judge that runs samples in the sandbox and
times them against the slow and fast references. A batch is a tuple of ``(task_id, seed)``
pairs; a seed fixes the sampling stream of one sample, so every candidate decodes the same
samples with the same random numbers (common random numbers), and a (task, code) pair judged
once is not run again.

Per sample, the score is the log speed-up over the slow reference normalised by the
references' own log ratio (slow reference 0, fast reference 1, clipped to [-0.5, 1.5]);
a failed sample scores ``failure_score``. The loss is minus the mean score. The domain's
default constraint ``pass_rate >= baseline - 0.01`` is the core's: its violations are told to
the optimiser, and the chosen candidate must satisfy it on validation against the unmodified
model's validation pass rate (every candidate decodes the same tasks with the same seeds, so
both pass rates are over the same samples).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrofit import Domain, Knob, Option, UsageError, hookimpl

if (Path(__file__).parent / "commands.py").is_file():  # the pack's `check` command (its hookimpl)
    from .commands import retrofit_register_commands  # noqa: F401
from .report_section import retrofit_report_section  # noqa: F401

NAME = "codegen"
SCORE_RANGE = (-0.5, 1.5)
#: the default constraint: writing faster code must not cost more than 1 pp of pass rate
PASS_RATE_CONSTRAINT = ">= baseline - 0.01"

DOMAIN = Domain(
    name=NAME,
    help="Code language models, judged by the speed of the correct code they write.",
    options=(
        Option("model", "builtin", "builtin (the shipped demo GPT-2), a Hugging Face model directory, or a hub id"),
        Option("problems", "", "HumanEval- or MBPP-style JSONL (.gz) of problems; empty: the pack's task families"),
        Option("train_per_family", 8, "train tasks per family (pack families only)"),
        Option("validation_per_family", 12, "held-out tasks per family (pack families only; at most 12)"),
        Option("validation_share", 0.5, "share of a JSONL's problems held out for validation"),
        Option("samples", 1, "samples per train task (each with its own sampling seed)"),
        Option("validation_samples", 2, "samples per held-out task"),
        Option("batch_size", 22, "samples per batch (decoded together)"),
        Option("sample_seed", 0, "seed of the sampling streams and of the families' tests"),
        Option("temperature", 1.0, "sampling temperature of the unmodified model; 0 decodes greedily"),
        Option("max_new_tokens", 110, "longest completion in tokens"),
        Option("bias_tokens", 12, "number of divergence tokens that get a logit bias (0: no bias knob)"),
        Option("bias_groups", "tokens", "tokens: one bias per divergence token; sides: one for all fast-side and "
                                        "one for all slow-side tokens", choices=("tokens", "sides")),
        Option("bias_strings", [], "extra bias groups: strings whose tokens share one bias", cli=False),
        Option("tune_temperature", True, "expose the sampling temperature as a knob"),
        Option("steering_layer", -1, "transformer layer whose output gets a steering vector; -1: none"),
        Option("failure_score", -1.0, "score of a failed sample (slow reference 0, fast reference 1)"),
        Option("repeats", 3, "timing repeats of each sample and reference"),
        Option("cpu_seconds", 2.0, "CPU-time limit of one sample run in the sandbox"),
        Option("device", "cpu", "torch device"),
    ),
    objective={"score": -1.0},
    run_defaults={"budget": 100, "validate_every": 25, "top_k": 3},
    constraints={"pass_rate": PASS_RATE_CONSTRAINT},
)


@dataclass
class CodegenProblem:
    """Everything an evaluation needs, loaded once per process."""

    lm: Any  # lm.LM
    problems: dict[str, Any]  # task_id -> Problem
    splits: dict[str, list[str]]  # split -> task ids
    options: dict[str, Any]
    controls: Any  # knobs.Controls
    group_names: list[str] = field(default_factory=list)
    judge: Any = None
    results: dict[str, Any] = field(default_factory=dict)  # code hash -> SampleResult

    def completions(self, batch: Sequence[tuple[str, int]]) -> list[str]:
        """Decode one completion per (task, seed) with the current controls."""
        from .knobs import LogitBias

        prompts = [self.problems[task].prompt for task, _ in batch]
        seeds = [seed for _, seed in batch]
        return self.lm.complete(prompts, seeds, temperature=self.controls.temperature,
                                max_new_tokens=self.options["max_new_tokens"],
                                processors=[LogitBias(self.controls)], batch_size=len(batch))

    def judged(self, batch: Sequence[tuple[str, int]], completions: Sequence[str]) -> list[Any]:
        """Judge results of the samples, running only (task, code) pairs not seen before."""
        keys = [_code_key(task, code) for (task, _), code in zip(batch, completions)]
        new = {}
        for key, (task, _), code in zip(keys, batch, completions):
            if key not in self.results and key not in new:
                new[key] = (self.problems[task], code)
        if new:
            for key, result in zip(new, self._judge().judge(list(new.values()))):
                self.results[key] = result
        return [self.results[key] for key in keys]

    def run(self, batch: Sequence[tuple[str, int]]) -> tuple[list[str], list[Any]]:
        """Decode ``batch`` with the current controls and judge it: (completions, results)."""
        completions = self.completions(batch)
        return completions, self.judged(batch, completions)

    def _judge(self) -> Any:
        if self.judge is None:
            from .judge import Judge
            from .sandbox import Limits

            self.judge = Judge(Limits(cpu_seconds=self.options["cpu_seconds"]), repeats=self.options["repeats"])
            atexit.register(self.judge.close)
        return self.judge


def _code_key(task: str, code: str) -> str:
    return hashlib.sha256(f"{task}\0{code}".encode()).hexdigest()


def sample_score(result: Any, failure_score: float) -> float:
    """Normalised log speed-up of one sample: slow reference 0, fast reference 1."""
    if result.status != "passed":
        return failure_score
    if not result.speedup or not result.reference_seconds or not result.fast_reference_seconds:
        return 0.0  # correct but not timed: counts as the slow reference
    span = math.log(result.reference_seconds / result.fast_reference_seconds)
    if span <= 0:
        return 0.0
    low, high = SCORE_RANGE
    return min(high, max(low, math.log(result.speedup) / span))


def batch_metrics(results: Sequence[Any], failure_score: float) -> dict[str, float]:
    """Sums over one batch, reduced to rates by :func:`retrofit_aggregate`."""
    passed = [r for r in results if r.status == "passed"]
    timed = [r for r in passed if r.speedup and r.speedup > 0]
    return {
        "samples": float(len(results)),
        "passed": float(len(passed)),
        "timed": float(len(timed)),
        "fast": float(sum(1 for r in passed if r.fast)),
        "log_speedup_sum": float(sum(math.log(r.speedup) for r in timed)),
        "score_sum": float(sum(sample_score(r, failure_score) for r in results)),
    }


def rates(metrics: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The reported metrics of a candidate from its per-batch sums (rates over all samples,
    not means of per-batch rates: the last batch may be smaller)."""
    total = {key: sum(m.get(key, 0.0) for m in metrics) for key in
             ("samples", "passed", "timed", "fast", "log_speedup_sum", "score_sum")}
    samples = max(total["samples"], 1.0)
    return {
        "pass_rate": total["passed"] / samples,
        "fast_share": total["fast"] / total["passed"] if total["passed"] else 0.0,
        "speedup": math.exp(total["log_speedup_sum"] / total["timed"]) if total["timed"] else 0.0,
        "score": total["score_sum"] / samples,
        "samples": total["samples"],
    }


# -- loading ----------------------------------------------------------------------------------

def _problem_splits(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The problems and the task ids of each split."""
    if options["problems"]:
        from .problems import read_jsonl

        problems = read_jsonl(options["problems"])
        if len(problems) < 2:
            raise UsageError(f"{options['problems']}: need at least 2 problems to hold some out")
        ranked = sorted(problems, key=lambda p: hashlib.sha256(f"{options['seed']}:{p.task_id}".encode()).hexdigest())
        cut = min(len(ranked) - 1, max(1, round(len(ranked) * options["validation_share"])))
        splits = {"validation": [p.task_id for p in ranked[:cut]], "train": [p.task_id for p in ranked[cut:]]}
    else:
        from .families import family_problems

        for key in ("train_per_family", "validation_per_family"):
            if options[key] < 1:
                raise UsageError(f"codegen.{key} must be at least 1, got {options[key]}")
        train = family_problems("train", options["train_per_family"], seed=options["sample_seed"])
        held = family_problems("validation", options["validation_per_family"], seed=options["sample_seed"])
        problems = [*train, *held]
        splits = {"train": [p.task_id for p in train], "validation": [p.task_id for p in held]}
    return {p.task_id: p for p in problems}, splits


def load_problem(config: Any) -> CodegenProblem:
    """The LM, the problems and the controls for a resolved config."""
    import torch

    from .knobs import Controls, SteeringHook, token_groups, transformer_layers
    from .lm import load_lm

    options = dict(config.options)
    for key in ("samples", "validation_samples", "batch_size", "max_new_tokens", "repeats"):
        if options[key] < 1:
            raise UsageError(f"codegen.{key} must be at least 1, got {options[key]}")
    if options["temperature"] < 0:
        raise UsageError(f"codegen.temperature must be 0 (greedy) or more, got {options['temperature']}")
    torch.set_num_threads(1)  # decoding a tiny model is overhead-bound: threads only fight the sandbox and peers
    lm = load_lm(options["model"], device=options["device"])
    problems, splits = _problem_splits(options)
    train = [problems[t] for t in splits["train"]]
    groups, names = ([], [])
    if options["bias_tokens"] > 0 or options["bias_strings"]:
        groups, names = token_groups(lm, train, options["bias_tokens"], options["bias_groups"],
                                     [str(s) for s in options["bias_strings"]])
    controls = Controls(groups=groups, vocab_size=lm.vocab_size, temperature=float(options["temperature"]))
    if options["steering_layer"] >= 0:
        layers = transformer_layers(lm.model)
        if options["steering_layer"] >= len(layers):
            raise UsageError(f"codegen.steering_layer {options['steering_layer']}: the model has {len(layers)} layers")
        layers[options["steering_layer"]].register_forward_hook(SteeringHook(controls))
    return CodegenProblem(lm=lm, problems=problems, splits=splits, options=options, controls=controls,
                          group_names=names)


def build_codegen_knobs(problem: CodegenProblem) -> list[Knob]:
    """The knobs the options ask for, bound to the problem's controls."""
    from .knobs import BiasKnob, SteeringKnob, TemperatureKnob, hidden_spread

    options = problem.options
    knobs: list[Knob] = []
    if problem.controls.groups:
        knobs.append(BiasKnob(problem.controls, problem.group_names))
    if options["tune_temperature"] and options["temperature"] > 0:
        knobs.append(TemperatureKnob(problem.controls))
    if options["steering_layer"] >= 0:
        layer = options["steering_layer"]
        width = int(problem.lm.model.get_input_embeddings().weight.shape[1])
        prompts = [problem.problems[t].prompt for t in problem.splits["train"]]
        knobs.append(SteeringKnob(problem.controls, layer, width, sigma=0.1 * hidden_spread(problem.lm, layer, prompts)))
    if not knobs:
        raise UsageError("codegen: no knobs (bias_tokens is 0, no bias_strings, no temperature knob, no steering layer)")
    return knobs


# -- hooks --------------------------------------------------------------------------------------

@hookimpl
def retrofit_register_domains(register: Any) -> None:
    register(DOMAIN)


@hookimpl
def retrofit_load_model(domain: str, config: Any) -> CodegenProblem | None:
    if domain != NAME:
        return None
    return load_problem(config)


@hookimpl
def retrofit_expose_parameters(domain: str, model: Any, config: Any) -> list[Knob] | None:
    if domain != NAME:
        return None
    return build_codegen_knobs(model)


@hookimpl
def retrofit_batches(domain: str, config: Any, split: str) -> list[tuple[tuple[str, int], ...]] | None:
    if domain != NAME:
        return None
    options = config.options
    _, splits = _problem_splits(options)
    samples = options["samples"] if split == "train" else options["validation_samples"]
    # seeds depend on task and sample index only: the same stream for every candidate
    items = [(task, _seed(options["sample_seed"], task, k)) for k in range(samples) for task in splits[split]]
    size = options["batch_size"]
    return [tuple(items[i:i + size]) for i in range(0, len(items), size)]


def _seed(seed: int, task: str, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{task}:{index}".encode()).digest()[:4], "little")


@hookimpl
def retrofit_evaluate(domain: str, model: Any, batch: Sequence[tuple[str, int]], config: Any) -> dict[str, float] | None:
    if domain != NAME:
        return None
    _, results = model.run(batch)
    return batch_metrics(results, model.options["failure_score"])


@hookimpl
def retrofit_aggregate(domain: str, metrics: Sequence[Mapping[str, float]], config: Any) -> Any:
    if domain != NAME:
        return None
    from retrofit.objective import Aggregate
    from retrofit.reductions import weighted_sum

    # the pass-rate constraint is the core's (DOMAIN.constraints): nothing to add to the loss here
    figures = rates(metrics)
    return Aggregate(loss=weighted_sum(figures, config.objective), metrics=figures)


@hookimpl
def retrofit_run_finished(domain: str, config: Any, run_dir: Path, summary: Mapping[str, Any]) -> None:
    """Every held-out sample of the unmodified and the retrofitted model, judged again:
    ``heldout.jsonl`` (what the report section charts), ``samples.md`` and ``samples.jsonl``."""
    if domain != NAME or not summary.get("best", {}).get("values"):
        return
    write_samples(config, summary["best"]["values"], run_dir)


HELDOUT = "heldout.jsonl"  # one line per held-out sample and model, no code
SAMPLES = "samples.jsonl"  # the samples shown in samples.md, with their code
MODELS = ("unmodified", "retrofitted")


def write_samples(config: Any, values: Mapping[str, Any], run_dir: Path, per_family: int = 1) -> Path:
    """Decode and judge every held-out sample before and after: the verdicts go to
    ``heldout.jsonl``; the first sample of ``per_family`` tasks per family (at most 12 tasks)
    to ``samples.jsonl`` and ``samples.md`` with their code. Returns the path of samples.md."""
    from retrofit.knobs import KnobSet

    problem = load_problem(config)
    knobs = KnobSet(build_codegen_knobs(problem))
    # the validation batches themselves: the same samples, decoded in the same batches, as the run scored
    batches = retrofit_batches(domain=NAME, config=config, split="validation")
    outcomes: dict[str, list[tuple[tuple[str, int], str, Any]]] = {model: [] for model in MODELS}
    try:
        for batch in batches:
            outcomes["unmodified"] += zip(batch, *problem.run(batch))
        with knobs.applied(knobs.space.join(values)):
            for batch in batches:
                outcomes["retrofitted"] += zip(batch, *problem.run(batch))
    finally:
        if problem.judge is not None:
            problem.judge.close()
    heldout = [{"task_id": task, "family": problem.problems[task].family, "seed": seed, "model": model,
                "status": result.status, "speedup": result.speedup, "fast": result.fast}
               for model in MODELS for (task, seed), _, result in outcomes[model]]
    (run_dir / HELDOUT).write_text("".join(json.dumps(line) + "\n" for line in heldout))

    picked: list[str] = []
    families: dict[str, int] = {}
    for task in problem.splits["validation"]:
        family = problem.problems[task].family or task
        if families.get(family, 0) < per_family:
            families[family] = families.get(family, 0) + 1
            picked.append(task)
    shown = {(task, _seed(config.options["sample_seed"], task, 0)) for task in picked[:12]}
    first = {model: {item: (code, result) for item, code, result in outcomes[model] if item in shown}
             for model in MODELS}
    lines = ["# Held-out samples: unmodified vs retrofitted", ""]
    records = []
    for task, seed in sorted(shown, key=lambda item: picked.index(item[0])):
        lines += [f"## {task} (seed {seed})", ""]
        for model in MODELS:
            code, result = first[model][(task, seed)]
            speed = f", speed-up {result.speedup:.1f}x" if result.status == "passed" and result.speedup else ""
            lines += [f"{model}: {result.status}{speed}", "", "```python",
                      problem.problems[task].prompt + code, "```", ""]
            records.append({"task_id": task, "seed": seed, "model": model, "completion": code,
                            "prompt": problem.problems[task].prompt, "status": result.status,
                            "speedup": result.speedup, "fast": result.fast})
    (run_dir / SAMPLES).write_text("".join(json.dumps(r) + "\n" for r in records))
    path = run_dir / "samples.md"
    path.write_text("\n".join(lines))
    return path
