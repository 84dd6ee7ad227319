"""The codegen pack's extra command: ``retrofit codegen check`` (imported by plugin.py)."""

from __future__ import annotations

from typing import Any

from retrofit import hookimpl


@hookimpl
def retrofit_register_commands(cli: Any) -> None:
    """Add ``check`` to the ``codegen`` group the core created for the domain."""
    from .check import check_command  # click only; the sandbox loads when the command runs

    group = cli.commands.get("codegen")
    if group is None:  # the domain is disabled: nothing to attach to
        return
    group.add_command(check_command)
