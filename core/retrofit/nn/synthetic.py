"""A synthetic retrofit problem with a known optimum, for tests and benchmarks.

A small torch MLP (``Linear -> ReLU -> Linear``) ends in a ``Linear`` layer with ``channels``
outputs. The *target* behaviour is the same network with that last layer's output channels (weight
and bias alike) rescaled by a planted vector of log-normal gains. The retrofit knob is an
:class:`~retrofit.nn.knobs.OutputGainKnob` (log-gains) on the last ``Linear``, so the
optimum is known exactly: log-gains = log(planted), where the loss is 0.

The loss is non-differentiable: the share of output elements that are not close to the
target, ``|y - y*| > threshold * |y*| + atol`` (numpy's ``isclose`` with ``rtol=threshold``),
called ``bad_element_rate``. Inputs come at scales spread over decades (a log-normal factor
per sample), so the outputs of a channel do not all fail at once: the share falls gradually
over orders of magnitude of ``|gain / planted - 1|``, and is exactly 0 once every gain is
within ``threshold`` of its planted value.

With ``noise > 0`` the targets of every batch carry additive Gaussian noise (seeded by the
batch, so a batch always gives the same numbers): evaluations on different draws of train
batches then disagree, and the loss stays above 0 at the optimum, which is the noise model
of episodes or mini-batches drawn per evaluation (``run.batches_per_evaluation``). A problem
built with ``noise > 0`` declares its domain ``noisy``. :meth:`RescaleProblem.clean_loss`
scores a candidate without noise on fresh held-out data: the figure benchmarks compare.

Use it as an in-code plugin, through the serial executor (pool workers load plugins afresh
and would not find it)::

    problem = RescaleProblem(spread=0.25)
    summary = problem.tune(run_dir, budget=400, seed=0)        # the engine, optimizer "auto"
    error = summary["best"]["values"][KNOB] - problem.optimum()

or by hand: ``Evaluator(config, retrofit.plugins.load(extra=[problem]))``. One evaluation of
the default size (4 batches) takes under 1 ms with ``torch.set_num_threads(1)``; with the
default thread count on a busy 2-core machine it can be ten times slower.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from retrofit import hookimpl
from retrofit.config import Config
from retrofit.domain import Domain, Option
from retrofit.nn.knobs import OutputGainKnob

METRIC = "bad_element_rate"
#: the knob's name in run records (``summary["best"]["values"][KNOB]``)
KNOB = "output_gain:last"
_SPLIT_WORDS = {"train": 0, "validation": 1, "clean": 2}


class RescaleProblem:
    """An in-code plugin declaring one synthetic domain (``name``) with a planted rescaling.

    Every constructor argument is also a domain option of the same name, so a config file or
    ``--set`` can change it; the planted gains follow ``data_seed``, ``channels`` and ``spread``
    unless ``planted`` (the gains themselves) is given.
    """

    def __init__(self, name: str = "rescale", *, channels: int = 8, inputs: int = 16, hidden: int = 32,
                 samples: int = 128, spread: float = 0.5, threshold: float = 0.1, atol: float = 0.1,
                 input_spread: float = 1.5, train_batches: int = 4,
                 validation_batches: int = 4, noise: float = 0.0, sigma: float = 0.05, data_seed: int = 0,
                 planted: Sequence[float] | None = None) -> None:
        self.name = name
        self.planted = None if planted is None else np.asarray(planted, dtype=float)
        if self.planted is not None and (self.planted.shape != (channels,) or (self.planted <= 0).any()):
            raise ValueError(f"planted must be {channels} positive gains, got {planted!r}")
        options = (
            Option("channels", int(channels), "output channels of the last layer (and knob values)"),
            Option("inputs", int(inputs), "input features"),
            Option("hidden", int(hidden), "hidden units"),
            Option("samples", int(samples), "inputs per batch"),
            Option("spread", float(spread), "log-scale std of the planted gains"),
            Option("threshold", float(threshold), "relative error above which an output element is bad"),
            Option("atol", float(atol), "absolute error an output element may always have"),
            Option("input_spread", float(input_spread), "log-scale std of the per-sample input scale"),
            Option("train_batches", int(train_batches), "batches in the train split"),
            Option("validation_batches", int(validation_batches), "batches in the validation split"),
            Option("noise", float(noise), "std of the additive noise on the targets (0: exact targets)"),
            Option("sigma", float(sigma), "knob step: log-gain change per normalised unit"),
            Option("data_seed", int(data_seed), "seed of the network, the planted gains and the data"),
        )
        self.domain = Domain(
            name=name,
            help="Synthetic: recover a planted per-channel rescaling of a small MLP's last layer.",
            options=options,
            objective={METRIC: 1.0},
            run_defaults={"budget": 300, "validate_every": 50},
            noisy=noise > 0,
        )
        self._cache: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    # -- the problem -----------------------------------------------------------------------
    def options(self, config: Config | None = None) -> dict[str, Any]:
        return dict(config.options) if config is not None else self.domain.defaults()

    def planted_gains(self, options: Mapping[str, Any] | None = None) -> np.ndarray:
        """The planted per-channel gains (the target rescaling)."""
        options = dict(options or self.domain.defaults())
        if self.planted is not None:
            return self.planted.copy()
        rng = np.random.default_rng([options["data_seed"], 7])
        return np.exp(rng.normal(scale=options["spread"], size=options["channels"]))

    def optimum(self, options: Mapping[str, Any] | None = None) -> np.ndarray:
        """The optimal knob values: log of the planted gains."""
        return np.log(self.planted_gains(options))

    def distance(self, log_gains: Sequence[float], options: Mapping[str, Any] | None = None) -> float:
        """RMS distance (log units) from ``log_gains`` to the optimum."""
        diff = np.asarray(log_gains, dtype=float) - self.optimum(options)
        return float(np.sqrt(np.mean(diff**2)))

    def build_model(self, options: Mapping[str, Any] | None = None) -> nn.Sequential:
        """The unmodified network: Linear ("first") -> ReLU -> Linear ("last")."""
        options = dict(options or self.domain.defaults())
        generator = torch.Generator().manual_seed(int(options["data_seed"]))
        inputs, hidden, channels = options["inputs"], options["hidden"], options["channels"]
        first, last = nn.Linear(inputs, hidden), nn.Linear(hidden, channels)
        with torch.no_grad():
            first.weight.copy_(torch.randn(hidden, inputs, generator=generator) / inputs**0.5)
            first.bias.copy_(0.1 * torch.randn(hidden, generator=generator))
            last.weight.copy_(torch.randn(channels, hidden, generator=generator) / hidden**0.5)
            last.bias.copy_(0.1 * torch.randn(channels, generator=generator))
        model = nn.Sequential()
        model.add_module("first", first)
        model.add_module("act", nn.ReLU())
        model.add_module("last", last)
        return model.eval().requires_grad_(False)

    def _data(self, options: dict[str, Any], split: str, index: int, noisy: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and (noisy) targets of one batch, computed once and kept."""
        key = (tuple(sorted(options.items())), split, index, noisy)
        if key not in self._cache:
            rng = np.random.default_rng([options["data_seed"], _SPLIT_WORDS[split], index])
            scale = np.exp(rng.normal(scale=options["input_spread"], size=(options["samples"], 1)))
            x = torch.as_tensor(scale * rng.normal(size=(options["samples"], options["inputs"])), dtype=torch.float32)
            model = self.build_model(options)
            with torch.no_grad():
                target = model(x) * torch.as_tensor(self.planted_gains(options), dtype=torch.float32)
            if noisy and options["noise"] > 0:
                noise = rng.normal(scale=options["noise"], size=tuple(target.shape))
                target = target + torch.as_tensor(noise, dtype=torch.float32)
            self._cache[key] = (x, target)
        return self._cache[key]

    def metrics(self, model: nn.Module, options: dict[str, Any], split: str, index: int,
                noisy: bool = True) -> dict[str, float]:
        x, target = self._data(options, split, index, noisy)
        with torch.no_grad():
            output = model(x)
        error = (output - target).abs()
        bad = error > options["threshold"] * target.abs() + options["atol"]
        return {METRIC: float(bad.float().mean()), "abs_rel": float((error / target.abs().clamp_min(1e-6)).mean())}

    def clean_loss(self, log_gains: Sequence[float], options: Mapping[str, Any] | None = None,
                   batches: int = 8) -> float:
        """Noise-free loss of ``log_gains`` on ``batches`` fresh batches no split uses."""
        options = dict(options or self.domain.defaults())
        model = self.build_model(options)
        knob = OutputGainKnob(KNOB, model.last, options["channels"], channel_dim=-1)
        knob.apply(np.asarray(log_gains, dtype=float))
        try:
            rates = [self.metrics(model, options, "clean", index, noisy=False)[METRIC] for index in range(batches)]
        finally:
            knob.restore()
        return float(np.mean(rates))

    # -- running it ------------------------------------------------------------------------
    def evaluator(self, **overrides: Any) -> Any:
        """An :class:`~retrofit.evaluator.Evaluator` of this domain (``overrides`` as in :meth:`tune`)."""
        from retrofit.evaluator import Evaluator
        from retrofit.plugins import load

        return Evaluator(self.config(**overrides), load(extra=[self]))

    def config(self, **overrides: Any) -> Config:
        """The resolved config; keys without a dot are run settings (``budget=300``),
        ``"rescale.noise"``-style keys set domain options."""
        from retrofit.config import resolve

        dotted = {key if "." in key else f"run.{key}": value for key, value in overrides.items()}
        return resolve(self.domain, None, {"run.executor": "serial", **dotted})

    def tune(self, out: Any, **overrides: Any) -> dict[str, Any]:
        """Run the engine on this domain with the serial executor, writing the record to
        ``out``; return the summary."""
        from pathlib import Path

        from retrofit.engine import Run
        from retrofit.evaluator import Evaluator
        from retrofit.executors import SerialExecutor
        from retrofit.plugins import load
        from retrofit.records import RunRecord

        config = self.config(**overrides)
        executor = SerialExecutor(config, Evaluator(config, load(extra=[self])))
        return Run(config, self.domain, executor, RunRecord.create(config, Path(out))).execute()

    # -- hooks -----------------------------------------------------------------------------
    @hookimpl
    def retrofit_register_domains(self, register: Any) -> None:
        register(self.domain)

    @hookimpl
    def retrofit_load_model(self, domain: str, config: Config) -> nn.Module | None:
        if domain != self.name:
            return None
        return self.build_model(config.options)

    @hookimpl
    def retrofit_expose_parameters(self, domain: str, model: Any, config: Config) -> list[OutputGainKnob] | None:
        if domain != self.name:
            return None
        options = config.options
        return [OutputGainKnob(KNOB, model.last, options["channels"], channel_dim=-1, target="last",
                               sigma=options["sigma"])]

    @hookimpl
    def retrofit_batches(self, domain: str, config: Config, split: str) -> list[tuple[str, int]] | None:
        if domain != self.name:
            return None
        count = config.options["train_batches" if split == "train" else "validation_batches"]
        return [(split, index) for index in range(count)]

    @hookimpl
    def retrofit_evaluate(self, domain: str, model: Any, batch: Any, config: Config) -> dict[str, float] | None:
        if domain != self.name:
            return None
        split, index = batch
        return self.metrics(model, dict(config.options), split, index)
