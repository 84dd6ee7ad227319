"""The hook specifications every retrofit plugin implements a part of.

A run calls the hooks in one direction::

    register_domains -> load_model -> expose_parameters -> batches
        -> for each candidate: evaluate (per batch) -> aggregate -> optimiser
        -> run_finished -> export          (and report_section, for `retrofit report`)

All hooks are called with keyword arguments. The *owner* hooks are ``firstresult``: the
core asks every plugin in turn and keeps the first answer that is not ``None``. A plugin
therefore returns ``None`` for a domain (or a model spec) it does not handle. That is also
how a third party extends an existing domain without forking it: a plugin that knows a new
model format implements only :func:`retrofit_load_model`, answers for that format, and
returns ``None`` otherwise.

Write implementations with :data:`retrofit.hookimpl` and *no default values* on their
parameters (pluggy 1.6 and 1.7 disagree about them). Ask for only the arguments you need:
pluggy passes the ones your function names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # imported for annotations only: the CLI start-up path stays light
    import click

    from retrofit.config import Config
    from retrofit.domain import Domain
    from retrofit.knobs import Knob, ProbeGroup
    from retrofit.objective import Aggregate
    from retrofit.report import ReportSection

PROJECT = "retrofit"

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def retrofit_register_domains(register: Callable[[Domain], None]) -> None:
    """Declare the domains this plugin provides.

    Call ``register(Domain(...))`` once per domain. Two plugins declaring the same domain
    name is an error that names both. Declaring a domain is cheap: do not import heavy
    libraries (torch, vizdoom) at module level or here, since every ``retrofit`` command,
    ``--help`` included, runs this hook.
    """


@hookspec
def retrofit_register_commands(cli: click.Group) -> None:
    """Add commands to the ``retrofit`` command line.

    ``cli`` is the top-level click group; decorate new commands with ``@cli.command()``.
    Per-domain commands (``tune``, ``evaluate``, ...) are created by the core.
    """


@hookspec(firstresult=True)
def retrofit_load_model(domain: str, config: Config) -> Any | None:
    """Load the model to retrofit for ``domain``, or return ``None`` if it is not yours.

    ``config.options`` holds the domain's resolved options (model path or hub id, device,
    ...). Raise :class:`retrofit.UsageError` with one clear line for a missing or corrupt
    checkpoint. Called once per worker process, never per candidate.
    """


@hookspec(firstresult=True)
def retrofit_expose_parameters(domain: str, model: Any, config: Config) -> Sequence[Knob] | None:
    """Return the knobs (the few parameters to optimise) bound to ``model``.

    Each knob starts at the identity: the values from :meth:`Knob.identity` leave the
    model's behaviour unchanged, which is what candidate 0 of every run evaluates. Knob
    names must be unique; the engine concatenates them into one flat vector.
    """


@hookspec(firstresult=True)
def retrofit_batches(domain: str, config: Config, split: str) -> Sequence[Any] | None:
    """Return the batches (or episode seeds) of ``split``, which is ``"train"`` or ``"validation"``.

    The optimiser only ever sees losses computed on ``"train"``; ``"validation"`` is held
    out and used to re-score the best candidates. Batches are sent to worker processes, so
    keep them small and picklable: file names or seeds rather than tensors.
    """


@hookspec(firstresult=True)
def retrofit_evaluate(domain: str, model: Any, batch: Any, config: Config) -> Mapping[str, float] | None:
    """Evaluate ``model`` (knobs already applied) on one ``batch``: return named metrics.

    Metric names keep their natural meaning and unit (``bad_pixel_rate``, ``kills_per_life``,
    ``speedup``). A NaN or infinite metric, or an exception, makes the whole candidate a
    recorded failure with the worst loss; it is never dropped silently.
    """


@hookspec(firstresult=True)
def retrofit_aggregate(domain: str, metrics: Sequence[Mapping[str, float]], config: Config) -> Aggregate | None:
    """Reduce the metrics of all batches of one candidate to a loss (lower is better).

    The core's default (registered ``trylast``) averages each metric over batches and
    returns the weighted sum with the weights of ``config.objective``. Implement this to
    use another reduction (a quantile, a ratio of sums such as kills per life) or to add
    constraint violations.
    """


@hookspec(firstresult=True)
def retrofit_probe_groups(domain: str, model: Any, config: Config) -> Sequence[ProbeGroup] | None:
    """Offer candidate parameter groups for ``retrofit <domain> probe`` to rank by sensitivity.

    Each :class:`retrofit.knobs.ProbeGroup` is a name and the knobs that would expose it
    (e.g. the channel gains of one layer, or its bias). The probe perturbs each group around
    the identity on a few train batches and ranks groups by how much the loss moves. The core
    answers for torch models (every layer's channel gains, biases and output gains); without
    an answer, each knob from :func:`retrofit_expose_parameters` is probed as its own group.
    """


@hookspec
def retrofit_run_finished(domain: str, config: Config, run_dir: Path, summary: Mapping[str, Any]) -> None:
    """Add the domain's own artefacts to a finished run directory.

    Called by ``retrofit <domain> tune`` after ``summary.json`` is written (status finished
    or stopped early), in the main process. Use it for what only the domain can show: error
    maps of a depth model before and after, recordings of episodes, sample programs. Write
    only inside ``run_dir``. An exception here is reported as a warning naming the plugin:
    the run itself is complete and stays so.
    """


@hookspec
def retrofit_report_section(domain: str, run_dir: Path, summary: Mapping[str, Any],
                            config: Config) -> ReportSection | Sequence[ReportSection] | None:
    """Add the domain's own section(s) to ``retrofit report RUN_DIR``.

    Return a :class:`retrofit.ReportSection` (a title, an HTML fragment, images as bytes),
    a list of them, or ``None`` for a run whose ``domain`` is not yours. Show what only the
    domain can: error maps, episode recordings, sample programs; reuse what your
    ``retrofit_run_finished`` wrote into ``run_dir`` when it is there, and render it otherwise.
    The run may still be going or have been interrupted: ``summary`` is then the latest one
    (status ``running`` or ``interrupted``; derived from ``history.jsonl`` when the run has
    not written ``summary.json`` yet), and ``summary["best"]["values"]`` may be ``None``.
    Never write into ``run_dir`` here. An exception, or a section that would load anything
    from the network, becomes a warning in the page; the rest of the report is kept.
    """


@hookspec(firstresult=True)
def retrofit_export(domain: str, model: Any, knobs: Sequence[Knob], values: Mapping[str, Any], output: Path, config: Config) -> Path | None:
    """Write the retrofitted model (``values`` applied to ``knobs``) to ``output``.

    Return the path written, or ``None`` to leave the job to another plugin. Every run can
    always be exported as a delta file (knob specs and values) by the core; this hook is for
    a model format's own checkpoint.
    """
