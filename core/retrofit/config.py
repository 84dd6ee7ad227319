"""Run configuration: defaults, a TOML file and command-line overrides, validated.

Four sections, lowest precedence first: built-in defaults (the core's, then the domain's),
the ``--config`` file, then command-line flags and ``--set section.key=value``::

    [run]            # how to search: budget, workers, optimizer, seed, ...
    [objective]      # metric weights of the loss, e.g. bad_pixel_rate = 1.0
    [constraints]    # metric = condition, e.g. pass_rate = ">= baseline - 0.01"
    [<domain>]       # the domain's own options, e.g. [depth] threshold = 1.25

A domain's default constraints (``Domain.constraints``) are overridden key by key; an empty
condition, ``pass_rate = ""``, removes one (and is written to ``config.toml`` so that a
resumed run does not get it back).

Every error names the offending key, with a suggestion when it looks like a typo.
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from retrofit.domain import Domain
from retrofit.errors import ConfigError

EXECUTORS = ("serial", "local", "dask")
SELECTIONS = ("validation", "train")
TELL_ORDERS = ("ask", "completion")


@dataclass(frozen=True)
class RunSettings:
    """How a run searches; :data:`RUN_HELP` explains each field (and is the CLI flags' help)."""

    budget: int = 100
    workers: int = 0
    executor: str = "local"
    scheduler: str = ""
    optimizer: str = "auto"
    seed: int = 0
    runs_dir: str = "runs"
    validate_every: int = 50
    top_k: int = 3
    selection: str = "validation"
    tell_order: str = "ask"
    eval_timeout: float = 0.0
    batches_per_evaluation: int = 0
    round_size: int = 8
    reevaluations: int = 0
    patience: int = 0
    multiobjective: bool = False
    tensorboard: str = ""

    def resolved_workers(self) -> int:
        if self.executor == "serial":
            return 1
        return self.workers or os.cpu_count() or 1


RUN_HELP = {
    "budget": "train evaluations, candidate 0 (the unmodified model) included",
    "workers": "evaluations in parallel; 0 means one per CPU core",
    "executor": "serial (in this process), local (a process pool) or dask (a Dask cluster, see --scheduler)",
    "scheduler": "dask scheduler address (tcp://host:8786); empty starts a local cluster of run.workers "
                 "processes",
    "optimizer": "a nevergrad optimizer name, or auto",
    "seed": "seed of the optimizer; same seed, workers and budget give the same run",
    "runs_dir": "parent directory of new run directories (--out names one exactly)",
    "validate_every": "re-score the top candidates on validation every N evaluations",
    "top_k": "how many top train candidates are re-scored on validation",
    "selection": "pick the result by validation loss among the top k, or by train loss",
    "tell_order": "ask: tell results in ask order (reproducible); completion: as they finish",
    "eval_timeout": "seconds before a hanging evaluation is killed and recorded failed; 0 disables",
    "batches_per_evaluation": "train batches (or episodes) drawn per evaluation; 0 uses them all, every time",
    "round_size": "consecutive candidates that share the same drawn batches (common random numbers)",
    "reevaluations": "extra train evaluations of each top candidate at every checkpoint, averaged with the first",
    "patience": "stop after this many checkpoints without a better validation loss; 0 never stops early",
    "multiobjective": "give the optimiser each weighted metric as its own objective and keep the Pareto front",
    "tensorboard": "also log loss curves for TensorBoard under this directory (one subdirectory per run); "
                   "empty: off; needs the tensorboard extra",
}
_CHOICES = {"executor": EXECUTORS, "selection": SELECTIONS, "tell_order": TELL_ORDERS}


@dataclass(frozen=True)
class Config:
    """The resolved configuration handed to every hook (picklable plain data)."""

    domain: str
    run: RunSettings = field(default_factory=RunSettings)
    objective: Mapping[str, float] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    constraints: Mapping[str, str] = field(default_factory=dict)
    #: the domain's default constraints that the user removed (``metric = ""``)
    removed_constraints: tuple[str, ...] = ()

    def as_toml_dict(self) -> dict[str, Any]:
        """The sections, as written to a run directory's ``config.toml``."""
        # a removal is kept as such: resolving this file again must not bring the default back
        constraints = {**{metric: "" for metric in self.removed_constraints}, **self.constraints}
        return {"run": asdict(self.run), "objective": dict(self.objective), "constraints": constraints,
                self.domain: dict(self.options)}


def resolve(domain: Domain, file: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Merge defaults, ``file`` and dotted ``overrides`` (``"run.budget"``) into a :class:`Config`."""
    sections: dict[str, dict[str, Any]] = {
        "run": asdict(RunSettings()),
        "objective": dict(domain.objective),
        "constraints": {},
        domain.name: domain.defaults(),
    }
    removed: set[str] = set()
    # checked like the user's settings: a plugin's typo must not end in a TypeError
    _merge(sections, {"run": dict(domain.run_defaults)}, domain, source=f"run_defaults of domain {domain.name}")
    for metric, condition in domain.constraints.items():
        if not isinstance(condition, str) or not condition.strip():  # a default cannot remove anything
            raise ConfigError(f"constraints of domain {domain.name}: constraints.{_printable(metric)} must be a "
                              f"condition like '>= baseline - 0.01', got {condition!r}")
    _merge(sections, {"constraints": dict(domain.constraints)}, domain,
           source=f"constraints of domain {domain.name}", removed=removed)
    if file is not None:
        _merge(sections, read_toml(file), domain, source=str(file), removed=removed)
    nested: dict[str, dict[str, Any]] = {}
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"override {dotted!r} must look like section.key (e.g. run.budget)")
        nested.setdefault(section, {})[key] = value
    _merge(sections, nested, domain, source="command line", removed=removed)
    run = RunSettings(**sections["run"])
    _check_run(run)
    _check_choices(domain, sections[domain.name])
    return Config(domain=domain.name, run=run, objective=sections["objective"], options=sections[domain.name],
                  constraints=sections["constraints"],
                  removed_constraints=tuple(sorted(m for m in removed if m in domain.constraints)))


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, turning every failure into a one-line :class:`ConfigError`."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse ``--set section.key=value``; the value is read as TOML, else kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def _merge(sections: dict[str, dict[str, Any]], incoming: Mapping[str, Any], domain: Domain, source: str,
           removed: set[str] | None = None) -> None:
    """Merge ``incoming`` into ``sections``, checking every key; ``removed`` collects the
    constraints an empty condition took away."""
    for section, table in incoming.items():
        if section not in sections:
            hint = _did_you_mean(section, sections)
            raise ConfigError(f"{source}: unknown section [{_printable(section)}] for domain {domain.name}{hint}")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}: [{section}] must be a table, got {type(table).__name__}")
        for key, value in table.items():
            name = f"{section}.{_printable(key)}"
            if section == "constraints":  # any metric may be constrained
                _merge_constraint(sections[section], key, value, source, removed if removed is not None else set())
                continue
            if section == "objective":  # any metric name may carry a weight
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
                    raise ConfigError(f"{source}: {name} must be a finite number (a metric weight), got {value!r}")
                sections[section][key] = float(value)
                continue
            if key not in sections[section]:
                raise ConfigError(f"{source}: unknown key {name}{_did_you_mean(key, sections[section])}")
            sections[section][key] = _typed(name, value, sections[section][key], source)


def _merge_constraint(constraints: dict[str, str], metric: str, condition: Any, source: str,
                      removed: set[str]) -> None:
    """Set one constraint, or remove it when the condition is empty."""
    from retrofit.reductions import parse_constraint

    name = f"constraints.{_printable(metric)}"
    if isinstance(condition, str) and not condition.strip():
        # removing what nothing declared is most likely a misspelt metric: say so
        if metric not in constraints and metric not in removed:
            declared = ", ".join(_printable(m) for m in constraints) or "none"
            raise ConfigError(f"{source}: {name} = \"\" removes a constraint, but there is none on that metric "
                              f"(constraints: {declared})")
        constraints.pop(metric, None)
        removed.add(metric)
        return
    parse_constraint(f"{metric} {condition}" if isinstance(condition, str) else condition, where=f"{source}: {name}")
    constraints[metric] = condition
    removed.discard(metric)  # set again after a removal: a constraint like any other


def _typed(name: str, value: Any, default: Any, source: str) -> Any:
    """Check ``value`` against the type of its default (ints are accepted for floats)."""
    expected = type(default)
    if default is None or expected is type(value):
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool) and _finite(value):
        return float(value)
    if expected is tuple and isinstance(value, list):
        return tuple(value)
    got = "a boolean" if isinstance(value, bool) else _type_name(type(value))
    hint = ""
    if expected is str and source == "command line":  # --set read it as TOML: nan, inf, true, 12 ...
        hint = f" (quote it to pass a string: --set '{name}=\"{_shown(value)}\"')"
    raise ConfigError(f"{source}: {name} must be {_type_name(expected)}, got {got} {_shown(value)}{hint}")


def _finite(number: int | float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:  # an int too large for a float
        return False


def _shown(value: Any) -> str:
    """A value as the user wrote it in TOML (``true``, not ``True``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _check_run(run: RunSettings) -> None:
    for key, choices in _CHOICES.items():
        if getattr(run, key) not in choices:
            raise ConfigError(f"run.{key} must be one of {', '.join(choices)}, got {getattr(run, key)!r}")
    positive = {"budget": run.budget, "validate_every": run.validate_every, "top_k": run.top_k,
                "round_size": run.round_size}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"run.{key} must be at least 1, got {value}")
    if run.workers < 0:
        raise ConfigError(f"run.workers must be 0 (one per core) or more, got {run.workers}")
    for key in ("batches_per_evaluation", "reevaluations", "patience"):
        if getattr(run, key) < 0:
            raise ConfigError(f"run.{key} must be 0 or more, got {getattr(run, key)}")
    if not run.eval_timeout >= 0:  # also rejects nan
        raise ConfigError(f"run.eval_timeout must be 0 (none) or positive, got {run.eval_timeout}")


def _check_choices(domain: Domain, options: Mapping[str, Any]) -> None:
    """Reject an option value outside its declared choices."""
    for option in domain.options:
        if option.choices and options.get(option.name) not in option.choices:
            raise ConfigError(f"{domain.name}.{option.name} must be one of {', '.join(option.choices)}, "
                              f"got {options.get(option.name)!r}")


def _printable(name: str) -> str:
    """A name as it can be shown on one line (TOML allows any character in a quoted key)."""
    return name if name.isprintable() else repr(name)


def _did_you_mean(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _type_name(kind: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            list: "a list", tuple: "a list", dict: "a table"}.get(kind, kind.__name__)


RUN_FIELDS = tuple(f.name for f in fields(RunSettings))
