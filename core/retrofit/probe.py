"""The sensitivity probe: which parameter groups of a model move the loss, per parameter spent.

``retrofit <domain> probe`` answers the first question of a retrofit, *which knobs?*, by
measurement instead of guesswork. For each candidate :class:`~retrofit.knobs.ProbeGroup` (a
layer's channel gains, its bias, its output gains, ...) it

1. evaluates the unmodified model once on the first few train batches (the *baseline*, shared
   by every group, and evaluated a second time to show the noise floor of the measurement);
2. draws ``perturbations`` random directions in the group's normalised space (the space the
   optimiser searches: natural value = identity + sigma * x), as antithetic pairs ``+x, -x``.
   Each direction is a Gaussian rescaled so that its root mean square coordinate is ``scale``:
   whatever its size, every group moves by ``scale`` optimiser steps per parameter on average,
   which is what the optimiser's first samples look like;
3. applies each perturbation with the group's knobs, evaluates the loss on the same batches,
   and restores the model (bit-identical: :meth:`~retrofit.knobs.Knob.restore`).

A group's **impact** is the mean absolute loss change over its successful perturbations, in
loss units; its **best improvement** is the baseline loss minus the lowest loss seen (negative
when every perturbation made things worse). Groups are ranked by impact, ties broken by best
improvement, then by fewer parameters. A failed perturbation (an exception, or a NaN or
infinite metric or loss) is counted in ``failures`` and left out of the means; a group whose
perturbations all fail ranks last with an impact of NaN. :func:`suggest` picks a knob set
within a parameter budget: the top group, then greedily by **impact per parameter** (impact /
parameters).

Impact measures how much a group *moves* the loss, in either direction; it is a shortlist, not
a promise of improvement (see best improvement for that). With a step-function loss (a share
of pixels over a threshold), small perturbations may cross no threshold at all: groups with
zero impact then say "try a larger ``scale``" rather than "useless".

This module is numpy-only: groups for torch models come from :mod:`retrofit.nn.probe`
through the ``retrofit_probe_groups`` hook.
"""

from __future__ import annotations

import math
import re
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from retrofit.errors import PluginError, RunFailed, UsageError
from retrofit.evaluator import Evaluator, Outcome, Task
from retrofit.knobs import KnobSet, ProbeGroup

if TYPE_CHECKING:
    from rich.table import Table

#: parameters a suggested knob set may hold when no budget is given
DEFAULT_PARAMETER_BUDGET = 64
#: the keys of :meth:`Knob.describe` that are not part of a pasteable spec: the knob's name is
#: derived from kind and target, its size is a check, and sigma/bounds default per kind
_DERIVED_KEYS = ("name", "size", "sigma", "lower", "upper")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


# -- evaluating a model with any knob set ------------------------------------------------------

def evaluate_knobs(evaluator: Evaluator, knobs: KnobSet | None, natural: np.ndarray | None, *, split: str = "train",
                   batches: int | None = None, candidate: int = -1) -> Outcome:
    """Evaluate ``evaluator``'s model with ``knobs`` set to ``natural`` on the first ``batches`` of ``split``.

    ``knobs=None`` evaluates the unmodified model; ``batches=None`` uses the whole split. The
    knobs are restored afterwards. Never raises for a bad candidate: the outcome's ``error``
    says why.
    """
    count = len(evaluator.batches(split))
    subset = None if batches is None else tuple(range(min(count, max(1, int(batches)))))
    if knobs is None:
        return evaluator.evaluate(Task(candidate, split, evaluator.space.identity, subset))
    return evaluator.evaluate(Task(candidate, split, natural, subset), knobs=knobs)

def groups_for(evaluator: Evaluator) -> list[ProbeGroup]:
    """The candidate groups of ``evaluator``'s model.

    Asks ``retrofit_probe_groups`` (for torch models the core answers with every layer's
    channel gains, biases and output gains); without an answer, each knob the domain exposes
    is probed as its own group.
    """
    groups = evaluator.plugins.hook.retrofit_probe_groups(domain=evaluator.domain, model=evaluator.model,
                                                          config=evaluator.config)
    if groups is None:
        return [ProbeGroup(name=knob.name, knobs=(knob,)) for knob in evaluator.knobs.knobs]
    groups = list(groups)
    for group in groups:
        if not isinstance(group, ProbeGroup):
            raise PluginError(f"retrofit_probe_groups returned {type(group).__name__}, not retrofit.ProbeGroup")
    if not groups:
        raise UsageError(f"domain {evaluator.domain!r} offered no parameter groups to probe")
    return groups


def knob_spec(description: Mapping[str, Any]) -> dict[str, Any]:
    """The pasteable spec of a knob from its :meth:`~retrofit.knobs.Knob.describe`.

    A knob whose description carries a ``spec`` (a domain's own knob kinds) gives exactly that.
    Knobs with a ``target`` (the torch knobs of :mod:`retrofit.nn`) keep ``kind``, ``target``
    and their kind's own arguments, which is what :func:`retrofit.nn.build_knobs` takes; sigma
    and bounds are left to the kind's defaults, which the probe used. Other knobs are named.
    """
    if isinstance(description.get("spec"), Mapping):
        return dict(description["spec"])
    if "target" not in description:
        return {"name": description.get("name", "?")}
    spec = {"kind": description.get("kind"), "target": description["target"]}
    spec.update({key: value for key, value in description.items()
                 if key not in spec and key not in _DERIVED_KEYS and value is not None})
    return spec


# -- the report ------------------------------------------------------------------------------

@dataclass
class ProbeRow:
    """One probed group. ``impact`` is the mean |loss change| over successful perturbations."""

    name: str
    parameters: int
    impact: float
    best_improvement: float
    failures: int
    evaluations: int
    specs: list[dict[str, Any]]
    losses: list[float | None] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""

    @property
    def impact_per_parameter(self) -> float:
        return self.impact / self.parameters if self.parameters else math.nan

    @property
    def spec(self) -> list[dict[str, Any]]:
        """The group's knob specs (a group may hold several knobs)."""
        return self.specs

    def usable(self) -> bool:
        """Whether the group moved the loss at all (and not only by failing)."""
        return math.isfinite(self.impact) and self.impact > 0


@dataclass
class ProbeReport:
    """The ranked outcome of :func:`probe`: most impactful group first."""

    domain: str
    baseline: float
    noise: float
    batches: int
    perturbations: int
    scale: float
    seed: int
    rows: list[ProbeRow] = field(default_factory=list)
    seconds: float = 0.0

    def suggest(self, parameter_budget: int = DEFAULT_PARAMETER_BUDGET) -> list[dict[str, Any]]:
        """See :func:`suggest`."""
        return suggest(self, parameter_budget)

    def to_toml_snippet(self, domain: str | None = None, *, parameter_budget: int = DEFAULT_PARAMETER_BUDGET,
                        key: str = "knobs") -> str:
        """The suggested knob set as a ``[<domain>]`` section to paste into a config file."""
        return toml_snippet(domain or self.domain, suggest(self, parameter_budget), key=key)

    def to_dict(self) -> dict[str, Any]:
        """Strict JSON-able: the settings and the rows with their impact per parameter; NaN becomes None."""
        out = asdict(self)
        for row, plain in zip(self.rows, out["rows"]):
            plain["impact_per_parameter"] = row.impact_per_parameter
        return _finite_or_none(out)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(item) for item in value]
    return value


def _rank_key(row: ProbeRow) -> tuple[Any, ...]:
    failed = not math.isfinite(row.impact)
    improvement = row.best_improvement if math.isfinite(row.best_improvement) else -math.inf
    return (failed, -row.impact if not failed else 0.0, -improvement, row.parameters, row.name)


def _directions(size: int, count: int, scale: float, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` directions as antithetic pairs, each with RMS coordinate ``scale``; duplicates dropped."""
    out: list[np.ndarray] = []
    seen: set[bytes] = set()
    while len(out) < count:
        z = rng.standard_normal(size)
        norm = float(np.linalg.norm(z))
        if norm == 0:
            continue
        z *= scale * math.sqrt(size) / norm
        for x in (z, -z):
            if len(out) < count and x.tobytes() not in seen:
                seen.add(x.tobytes())
                out.append(x)
        if size == 1 and len(out) == 2:  # +scale and -scale are the only directions there are
            break
    return out


def probe(evaluator: Evaluator, groups: Sequence[ProbeGroup], *, perturbations: int = 4, scale: float = 1.0,
          batches: int | None = 2, seed: int = 0,
          progress: Callable[[int, int, str], None] | None = None) -> ProbeReport:
    """Rank ``groups`` by how much perturbing each moves the train loss of ``evaluator``'s model.

    ``batches`` train batches are used (``None``: all), ``perturbations`` evaluations per group
    of size ``scale`` (in optimiser steps, RMS per parameter), seeded by ``seed`` and the
    group's name (adding a group does not change the others' directions). ``progress`` is
    called after each group with ``(done, total, group name)``. The model is restored after
    every evaluation. Raises :class:`~retrofit.errors.RunFailed` if the unmodified model
    itself cannot be evaluated.
    """
    if perturbations < 1:
        raise UsageError(f"perturbations must be at least 1, got {perturbations}")
    if not (scale > 0 and math.isfinite(scale)):
        raise UsageError(f"scale must be a positive number, got {scale}")
    if batches is not None and batches < 1:
        raise UsageError(f"batches must be at least 1 (or None for all), got {batches}")
    names = [group.name for group in groups]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise PluginError(f"probe group names must be unique, repeated: {', '.join(duplicates)}")
    start = time.perf_counter()
    available = len(evaluator.batches("train"))
    used = available if batches is None else min(batches, available)
    first = evaluate_knobs(evaluator, None, None, batches=used)
    if first.loss is None:
        raise RunFailed(f"the unmodified model fails on the train batches: {first.error}")
    again = evaluate_knobs(evaluator, None, None, batches=used)
    baseline = first.loss
    noise = abs(again.loss - baseline) if again.loss is not None else math.nan

    rows = []
    for done, group in enumerate(groups, 1):
        rows.append(_probe_group(evaluator, group, baseline, perturbations=perturbations, scale=scale,
                                 batches=used, seed=seed))
        if progress is not None:
            progress(done, len(groups), group.name)
    rows.sort(key=_rank_key)
    return ProbeReport(domain=evaluator.domain, baseline=baseline, noise=noise, batches=used,
                       perturbations=perturbations, scale=scale, seed=seed, rows=rows,
                       seconds=time.perf_counter() - start)


def _probe_group(evaluator: Evaluator, group: ProbeGroup, baseline: float, *, perturbations: int, scale: float,
                 batches: int, seed: int) -> ProbeRow:
    start = time.perf_counter()
    row = ProbeRow(name=group.name, parameters=group.size, impact=math.nan, best_improvement=math.nan,
                   failures=0, evaluations=0, specs=[])
    try:
        knobs = KnobSet(group.knobs)
    except Exception as error:  # a group that cannot even be set up is reported, not fatal
        row.error = f"{type(error).__name__}: {error}"
        row.seconds = time.perf_counter() - start
        return row
    row.specs = [knob_spec(description) for description in knobs.space.specs]
    rng = np.random.default_rng([seed, zlib.crc32(group.name.encode())])
    losses = []
    for x in _directions(knobs.space.size, perturbations, scale, rng):
        outcome = evaluate_knobs(evaluator, knobs, knobs.space.to_natural(x), batches=batches)
        row.evaluations += 1
        row.losses.append(outcome.loss)
        if outcome.loss is None:
            row.failures += 1
            row.error = row.error or (outcome.error or "failed")
        else:
            losses.append(outcome.loss)
    if losses:
        row.impact = float(np.mean(np.abs(np.asarray(losses) - baseline)))
        row.best_improvement = float(baseline - min(losses))
    row.seconds = time.perf_counter() - start
    return row


# -- suggestions and output ------------------------------------------------------------------

def _gain_layer(spec: Mapping[str, Any]) -> str | None:
    """The layer a torch gain knob scales: channel gains on ``X.weight`` and output gains on ``X``."""
    target = spec.get("target")
    if not isinstance(target, str):
        return None
    if spec.get("kind") == "output_gain":
        return target
    if spec.get("kind") == "channel_gain" and (target == "weight" or target.endswith(".weight")):
        return target[:-len("weight")].rstrip(".")
    return None


def suggested_rows(report: ProbeReport, parameter_budget: int = DEFAULT_PARAMETER_BUDGET) -> list[ProbeRow]:
    """The groups :func:`suggest` picks, in report order.

    The top-ranked group comes first if it fits the budget; the remaining budget is filled
    greedily by impact per parameter. Groups that did not move the loss, or only failed, are
    never picked, and neither is a second gain on one layer (channel gains on ``X.weight`` and
    output gains on ``X`` differ only in whether the bias is scaled too).
    """
    if parameter_budget < 1:
        raise UsageError(f"the parameter budget must be at least 1, got {parameter_budget}")
    candidates = [row for row in report.rows if row.usable() and row.specs]
    top = candidates[:1] if candidates and candidates[0] is report.rows[0] else []
    rest = sorted(candidates[len(top):], key=lambda r: (-r.impact_per_parameter, r.parameters, r.name))
    chosen: dict[int, ProbeRow] = {}
    layers: set[str] = set()
    left = parameter_budget
    for row in top + rest:
        gains = {layer for spec in row.specs if (layer := _gain_layer(spec)) is not None}
        if row.parameters <= left and not gains & layers:
            chosen[id(row)] = row
            layers |= gains
            left -= row.parameters
    return [row for row in report.rows if id(row) in chosen]


def suggest(report: ProbeReport, parameter_budget: int = DEFAULT_PARAMETER_BUDGET) -> list[dict[str, Any]]:
    """Knob specs of the suggested groups (see :func:`suggested_rows`), within ``parameter_budget``."""
    return [spec for row in suggested_rows(report, parameter_budget) for spec in row.specs]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(_toml_char(c) for c in value) + '"'
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise UsageError(f"cannot write {type(value).__name__} {value!r} to TOML")


def _toml_char(char: str) -> str:
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    if char in escapes:
        return escapes[char]
    return char if char.isprintable() else f"\\u{ord(char):04x}"


def _toml_key(key: Any) -> str:
    key = str(key)
    return key if _BARE_KEY.match(key) else _toml_value(key)


def toml_snippet(domain: str, specs: Sequence[Mapping[str, Any]], *, key: str = "knobs") -> str:
    """``[<domain>]`` with ``key = [ ...one inline table per spec... ]``, valid TOML."""
    lines = [f"[{_toml_key(domain)}]", f"{_toml_key(key)} = ["]
    lines += [f"  {_toml_value(dict(spec))}," for spec in specs]
    lines.append("]")
    return "\n".join(lines) + "\n"


def _fmt(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.4g}"


def flat_groups(report: ProbeReport) -> list[ProbeRow]:
    """Groups whose perturbations all left the loss exactly unchanged."""
    return [row for row in report.rows if row.impact == 0]


def format_table(report: ProbeReport, parameter_budget: int | None = DEFAULT_PARAMETER_BUDGET) -> Table:
    """A rich table of the ranking; the groups :func:`suggest` picks within the budget are marked.

    The caption gives the baseline, its noise floor (two evaluations of the unmodified model)
    and, when groups did not move the loss at all, a hint that the perturbations may be too
    small to cross the thresholds of a step-function loss.
    """
    from rich.table import Table

    picked = {id(row) for row in suggested_rows(report, parameter_budget)} if parameter_budget else set()
    plural = "es" if report.batches != 1 else ""
    caption = [f"baseline loss {_fmt(report.baseline)} on {report.batches} train batch{plural} "
               f"(noise {_fmt(report.noise)}); {report.perturbations} perturbations of {report.scale:g} "
               f"step{'s' if report.scale != 1 else ''} per parameter; impact = mean |loss change|"]
    if parameter_budget:
        caption.append(f"pick: the suggested knob set within {parameter_budget} parameters")
    flat = flat_groups(report)
    if flat:
        hint = (f": a step-function loss may need larger perturbations (scale {2 * report.scale:g}?)"
                if 2 * len(flat) >= len(report.rows) else "")
        caption.append(f"{len(flat)} of {len(report.rows)} groups did not move the loss{hint}")
    broken = [row for row in report.rows if row.error and not math.isfinite(row.impact)]
    caption += [f"{row.name}: {row.error}" for row in broken[:3]]
    if len(broken) > 3:
        caption.append(f"... and {len(broken) - 3} more groups failed every perturbation")
    table = Table(title=f"{report.domain}: sensitivity of {len(report.rows)} parameter groups",
                  caption="\n".join(caption))
    for header in ("#", "group", "params", "impact", "per param", "best gain", "fails"):
        table.add_column(header, justify="left" if header == "group" else "right")
    if parameter_budget:
        table.add_column("pick", justify="center")
    for rank, row in enumerate(report.rows, 1):
        failures = f"{row.failures}/{row.evaluations}" if row.failures or not row.evaluations else "0"
        cells = [str(rank), row.name, str(row.parameters), _fmt(row.impact), _fmt(row.impact_per_parameter),
                 _fmt(row.best_improvement), failures]
        if parameter_budget:
            cells.append("yes" if id(row) in picked else "")
        table.add_row(*cells)
    return table
