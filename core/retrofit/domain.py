"""What a domain is: its name, its options (with defaults and help), its objective and its
default constraints.

A plugin declares domains from :func:`retrofit.hookspecs.retrofit_register_domains`. The
option defaults double as the schema of the domain's config section: a key that is not
declared is rejected, and a value must have the type of its default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Flags of the per-domain commands themselves (tune, evaluate, probe, export): a domain option
# may not reuse these names, or its --flag would shadow retrofit's.
RESERVED_OPTION_NAMES = frozenset({
    "config", "set", "budget", "workers", "executor", "optimizer", "seed", "out", "resume", "params", "split",
    "json", "output", "debug", "help", "perturbations", "scale", "batches", "max_parameters", "repair",
    "scheduler",
})


@dataclass(frozen=True)
class Option:
    """One setting of a domain, read from ``[<domain>]`` in the config file.

    ``cli=True`` also makes it a ``--name`` flag of the domain's commands (underscores
    become dashes). ``choices`` restricts a string option to a fixed set.
    """

    name: str
    default: Any
    help: str
    cli: bool = True
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Domain:
    """A retrofit problem family, e.g. ``depth`` or ``doom``.

    ``objective`` gives the default weight of each metric in the loss (lower loss is better,
    so a metric to maximise gets a negative weight). ``run_defaults`` overrides the core's
    run defaults (budget, workers, ...) for this domain, e.g. a smaller budget for slow
    episodes. ``noisy`` tells the engine that two evaluations of one candidate can differ,
    which changes the default optimiser.

    ``constraints`` are the domain's default ``[constraints]``, metric -> condition, e.g.
    ``{"pass_rate": ">= baseline - 0.01"}``: the engine tells their violations to the
    optimiser and the chosen result must satisfy them on validation. A user's
    ``[constraints]`` section overrides them key by key, and an empty condition
    (``pass_rate = ""``) removes one.
    """

    name: str
    help: str
    options: tuple[Option, ...] = ()
    objective: Mapping[str, float] = field(default_factory=lambda: {"loss": 1.0})
    run_defaults: Mapping[str, Any] = field(default_factory=dict)
    noisy: bool = False
    constraints: Mapping[str, str] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """What is wrong with this declaration (the plugin loader refuses a domain with problems)."""
        found = []
        for option in self.options:
            if option.default is None:
                found.append(f"option {option.name!r} has no default (TOML has no null: give a typed default)")
            if option.cli and option.name in RESERVED_OPTION_NAMES:
                found.append(f"option {option.name!r} clashes with retrofit's own --{option.name.replace('_', '-')} "
                             f"flag (rename it, or declare it with cli=False)")
        found += self._constraint_problems()
        return found

    def _constraint_problems(self) -> list[str]:
        """Default constraints must parse as the config's would (an empty one removes nothing)."""
        from retrofit.errors import ConfigError
        from retrofit.reductions import parse_constraint

        found = []
        for metric, condition in self.constraints.items():
            if not isinstance(condition, str) or not condition.strip():
                found.append(f"constraint on {metric!r} must be a condition like '>= baseline - 0.01', "
                             f"got {condition!r}")
                continue
            try:
                parse_constraint(f"{metric} {condition}", where=f"constraint on {metric!r}")
            except ConfigError as error:
                found.append(str(error))
        return found

    def defaults(self) -> dict[str, Any]:
        """The option values used when neither the config file nor the CLI sets them."""
        return {option.name: option.default for option in self.options}
