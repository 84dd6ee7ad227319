"""The Doom pack's extra command: ``retrofit doom record RUN_DIR`` (imported by plugin.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from retrofit import UsageError, hookimpl


@click.command(help="Record a held-out episode of the baseline and of RUN_DIR's retrofitted agent, side by "
                    "side, as episode.mp4 and episode.gif in RUN_DIR (a finished run records one already).")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=None, help="Episode seed (default: the first held-out seed).")
def record_command(run_dir: Path, seed: int | None) -> None:
    from retrofit.config import resolve
    from retrofit.delta import read_values
    from retrofit.records import CONFIG, RunRecord

    from .finish import record_comparison
    from .plugin import DOMAIN

    record = RunRecord.open(run_dir)
    config = resolve(DOMAIN, record.path / CONFIG)
    values = read_values(record.path)  # from summary.json: a clear error when there is none yet
    if not values:
        raise UsageError(f"{run_dir}: no chosen candidate to record yet")
    for path in record_comparison(dict(config.options), config, record.path, {"best": {"values": values}},
                                  seed=seed):
        click.echo(f"wrote {path}")


@hookimpl
def retrofit_register_commands(cli: Any) -> None:
    """Add ``record`` to the ``doom`` group the core created for the domain."""
    group = cli.commands.get("doom")
    if group is not None:  # None: the domain is disabled
        group.add_command(record_command, name="record")
