"""The built-in ``toy`` domain: a retrofit problem small enough to run anywhere in seconds.

A linear classifier was "trained" on a source domain; on the target domain each input
feature arrives rescaled, so the classifier misclassifies a share of points. The knob is a
per-feature gain on the classifier's weights, and the loss is the misclassification rate:
a step function of the gains, with zero gradient almost everywhere, and a known optimum
(the gains that undo the rescaling). The core's tests, benchmarks and quickstart run on it.

Options ``delay``, ``spin`` and ``fault`` make evaluations slow or faulty on purpose, to exercise
executors, timeouts and failure recording (tests/reliability); ``spin`` is a fixed amount of pure
CPU work per batch that stays in the cache, for scaling benchmarks: ``nan`` and ``raise`` fail the
evaluation, ``exit`` and ``segfault`` kill the process running it, ``oom`` exhausts its memory
under an address-space limit (a ``MemoryError``), ``hang`` never returns.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrofit import hookimpl
from retrofit.config import Config
from retrofit.domain import Domain, Option
from retrofit.knobs import ArrayKnob, Knob

NAME = "toy"
FAULTS = ("none", "nan", "raise", "exit", "segfault", "oom", "hang")
_OOM_HEADROOM = 256 * 2**20  # address space left to the process while it "runs out of memory"

DOMAIN = Domain(
    name=NAME,
    help="Built-in example: per-feature gains of a linear classifier under a feature shift.",
    options=(
        Option("dim", 8, "number of input features (and of knobs)"),
        Option("samples", 400, "points per batch"),
        Option("train_batches", 3, "batches in the train split"),
        Option("validation_batches", 3, "batches in the held-out validation split"),
        Option("shift", 1.0, "spread of the per-feature rescaling on the target domain (log-scale std)"),
        Option("data_seed", 0, "seed of the problem (weights, shift, data)"),
        Option("delay", 0.0, "seconds of sleep per batch, to simulate an expensive evaluation"),
        Option("spin", 0, "iterations of a pure-Python arithmetic loop per batch: fixed CPU work, no memory traffic"),
        Option("fault", "none", "inject failures into evaluations", choices=FAULTS),
        Option("fault_rate", 0.1, "share of candidates hit by the fault (chosen by a hash of their values)"),
    ),
    objective={"error_rate": 1.0},
    run_defaults={"budget": 200, "validate_every": 50},
)


@dataclass
class ToyModel:
    """``predict(x) = sign(x @ (weights * gains))``; ``gains`` is what the knob edits in place."""

    weights: np.ndarray
    gains: np.ndarray

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        return np.sign(inputs @ (self.weights * self.gains))


def problem(options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The true weights and the target domain's per-feature scale for these options."""
    rng = np.random.default_rng(options["data_seed"])
    weights = rng.normal(size=options["dim"])
    scale = np.exp(rng.normal(scale=options["shift"], size=options["dim"]))
    return weights, scale


def optimum(options: dict[str, Any]) -> np.ndarray:
    """Gains that undo the shift exactly (any positive multiple of them is optimal too)."""
    _, scale = problem(options)
    return 1.0 / scale


@hookimpl
def retrofit_register_domains(register: Any) -> None:
    register(DOMAIN)


@hookimpl
def retrofit_load_model(domain: str, config: Config) -> ToyModel | None:
    if domain != NAME:
        return None
    weights, _ = problem(dict(config.options))
    return ToyModel(weights=weights, gains=np.ones_like(weights))


@hookimpl
def retrofit_expose_parameters(domain: str, model: Any) -> list[Knob] | None:
    if domain != NAME:
        return None
    return [ArrayKnob("gains", model.gains, sigma=0.3, lower=0.0, upper=10.0)]


@hookimpl
def retrofit_batches(domain: str, config: Config, split: str) -> list[tuple[str, int]] | None:
    if domain != NAME:
        return None
    count = config.options["train_batches" if split == "train" else "validation_batches"]
    return [(split, index) for index in range(count)]


def _spin(iterations: int) -> int:
    """Burn a fixed amount of CPU in the interpreter (the same work whatever the load)."""
    total = 0
    for i in range(iterations):
        total = (total + i * i) % 1_000_003
    return total


@hookimpl
def retrofit_evaluate(domain: str, model: Any, batch: Any, config: Config) -> dict[str, float] | None:
    if domain != NAME:
        return None
    options = dict(config.options)
    if _hit_by_fault(options, model.gains):
        fault = options["fault"]
        if fault == "nan":
            return {"error_rate": float("nan"), "accuracy": float("nan")}
        if fault == "raise":
            raise RuntimeError("injected fault")
        if fault == "exit":
            os._exit(3)  # a worker dying without a word
        if fault == "segfault":
            ctypes.string_at(0)  # a real SIGSEGV, as a crashing native extension would
        if fault == "oom":
            _exhaust_memory()
        time.sleep(3600)  # "hang"
    if options["delay"]:
        time.sleep(options["delay"])
    _spin(int(options["spin"]))
    split, index = batch
    weights, scale = problem(options)
    rng = np.random.default_rng([options["data_seed"], 0 if split == "train" else 1, index])
    source = rng.normal(size=(options["samples"], options["dim"]))
    labels = np.sign(source @ weights)
    shifted = source * scale  # what the model sees on the target domain
    error_rate = float(np.mean(model.predict(shifted) != labels))
    # how far the retrofit moved the model: a second objective, or a constraint
    deviation = float(np.mean(np.abs(model.gains - 1.0)))
    return {"error_rate": error_rate, "accuracy": 1.0 - error_rate, "deviation": deviation}


def _exhaust_memory() -> None:
    """Allocate far past a temporary address-space limit: a real ``MemoryError``, without
    risking the machine. The limit is lifted again so the process can go on."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:  # first field: virtual size in pages
        used = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (used + _OOM_HEADROOM, hard))
    try:
        np.ones(16 * _OOM_HEADROOM, dtype=np.uint8)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _hit_by_fault(options: dict[str, Any], gains: np.ndarray) -> bool:
    """Deterministic faults: the same candidate fails the same way every time, never the baseline."""
    if options["fault"] == "none" or np.allclose(gains, 1.0):
        return False
    digest = hashlib.sha256(np.round(gains, 12).tobytes()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < options["fault_rate"]
