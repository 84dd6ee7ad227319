"""The ``retrofit`` command line.

``retrofit <domain> tune | evaluate | export`` exist for every installed domain; plugins add
top-level commands through ``retrofit_register_commands``. Exit codes: 0 done, 1 run failed,
2 bad usage or input (one line, no traceback unless ``--debug``), 130 interrupted.
"""

from __future__ import annotations

import json
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from retrofit import __version__
from retrofit.config import EXECUTORS, RUN_HELP, parse_assignment, resolve
from retrofit.domain import Domain, Option
from retrofit.errors import PluginError, RunFailed, UsageError
from retrofit.plugins import Plugins, load

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
SPLIT_CHOICES = ("train", "validation", "both")


def _run_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Flags shared by the commands that take a configuration."""
    decorators = [
        click.option("--config", "config_file", type=click.Path(path_type=Path), help="TOML config file."),
        click.option("--set", "assignments", multiple=True, metavar="SECTION.KEY=VALUE",
                     help="Override any config key, e.g. --set run.top_k=5 (repeatable)."),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def _search_options(command: Callable[..., Any]) -> Callable[..., Any]:
    decorators = [
        click.option("--budget", type=int, help=RUN_HELP["budget"]),
        click.option("--workers", type=int, help=RUN_HELP["workers"]),
        click.option("--executor", type=click.Choice(EXECUTORS), help=RUN_HELP["executor"]),
        click.option("--scheduler", metavar="ADDR", help=RUN_HELP["scheduler"]),
        click.option("--optimizer", help=RUN_HELP["optimizer"]),
        click.option("--seed", type=int, help=RUN_HELP["seed"]),
        click.option("--out", type=click.Path(path_type=Path), help="Run directory to create (default: a new one "
                     "under run.runs_dir)."),
        click.option("--resume", type=click.Path(path_type=Path), help="Continue the interrupted run in this "
                     "directory, with its recorded settings."),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def _domain_options(domain: Domain) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One ``--flag`` per domain option declared with ``cli=True``."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed([o for o in domain.options if o.cli]):
            command = click.option(*_flag(option), **_flag_kwargs(option))(command)
        return command

    return decorate


def _flag(option: Option) -> tuple[str, ...]:
    dashed = option.name.replace("_", "-")
    if isinstance(option.default, bool):
        return (f"--{dashed}/--no-{dashed}", f"opt_{option.name}")
    return (f"--{dashed}", f"opt_{option.name}")


def _flag_kwargs(option: Option) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"default": None, "help": f"{option.help} [default: {option.default!r}]"}
    if option.choices:
        kwargs["type"] = click.Choice(option.choices)
    elif isinstance(option.default, (int, float, str)) and not isinstance(option.default, bool):
        kwargs["type"] = type(option.default)
    return kwargs


def _overrides(domain: Domain, assignments: tuple[str, ...], flags: dict[str, Any]) -> dict[str, Any]:
    overrides: dict[str, Any] = dict(parse_assignment(text) for text in assignments)
    for key, value in flags.items():
        if value is None:
            continue
        if key.startswith("opt_"):
            overrides[f"{domain.name}.{key[4:]}"] = value
        else:
            overrides[f"run.{key}"] = value
    return overrides


# -- per-domain commands ------------------------------------------------------------------
def _domain_group(plugins: Plugins, domain: Domain) -> click.Group:
    group = click.Group(name=domain.name, help=domain.help)

    @group.command(help=f"Retrofit the {domain.name} model: optimise its knobs on train, report validation.")
    @_run_options
    @_search_options
    @click.option("--repair", is_flag=True, help="With --resume: cut each record file at its first corrupt line "
                  "(the original is kept as FILE.corrupt) and re-run what was cut; drop a corrupt summary.json.")
    @_domain_options(domain)
    def tune(config_file: Path | None, assignments: tuple[str, ...], out: Path | None, resume: Path | None,
             repair: bool, **flags: Any) -> None:
        from retrofit import executors
        from retrofit.display import ProgressBar, print_summary
        from retrofit.engine import Run
        from retrofit.records import CONFIG, HISTORY, SUMMARY, VALIDATION, RunRecord

        overrides = _overrides(domain, assignments, flags)
        created = False
        if resume is not None:
            if overrides or config_file or out:
                raise UsageError("--resume continues a run with its recorded settings: drop the other options")
            record = RunRecord.open(resume, repair=repair)
            config = resolve(domain, record.path / CONFIG)
        else:
            if repair:
                raise UsageError("--repair only applies to --resume DIR")
            config = resolve(domain, config_file, overrides)
            existed = out is not None and out.exists()
            record = RunRecord.create(config, out)
            created = True
        bar = ProgressBar(f"{domain.name} tune")
        callbacks = bar.callbacks()
        begin = callbacks.on_start

        def announce(total: int, done: int) -> None:
            # said once the model is loaded: a run that fails to start leaves no directory to point at
            bar.message(f"run directory: {record.path}")
            begin(total, done)

        callbacks.on_start = announce
        try:
            summary = Run(config, domain, executors.create(config), record, callbacks).execute()
        except Exception:
            if created and not any((record.path / name).exists() for name in (HISTORY, VALIDATION, SUMMARY)):
                _discard(record.path, keep_directory=existed)  # failed before recording anything
            raise
        finally:
            bar.stop()
        _run_finished(plugins, domain, config, record.path, summary)
        print_summary(summary, str(record.path))

    @group.command(help="Evaluate the unmodified model, or given knob values, on a split.")
    @click.option("--params", type=click.Path(path_type=Path),
                  help="Knob values: a delta file, a run directory or its summary.json.")
    @click.option("--split", type=click.Choice(SPLIT_CHOICES), default="both", show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @_run_options
    @_domain_options(domain)
    def evaluate(params: Path | None, split: str, as_json: bool, config_file: Path | None,
                 assignments: tuple[str, ...], **flags: Any) -> None:
        from retrofit.delta import read_values
        from retrofit.evaluator import Evaluator, Task

        config = resolve(domain, config_file, _overrides(domain, assignments, flags))
        evaluator = Evaluator(config, plugins)
        values = evaluator.space.identity if params is None else evaluator.space.join(read_values(params))
        splits = ("train", "validation") if split == "both" else (split,)
        results = {}
        for name in splits:
            outcome = evaluator.evaluate(Task(-1, name, values))
            if outcome.error:
                raise RunFailed(f"evaluation on {name} failed: {outcome.error}")
            results[name] = {"loss": outcome.loss, "metrics": outcome.metrics, "seconds": round(outcome.seconds, 3)}
        if as_json:
            click.echo(json.dumps(results, indent=2))
        else:
            from retrofit.display import metrics_table, out

            label = "unmodified model" if params is None else str(params)
            out.print(metrics_table(f"{domain.name}: {label}", results))

    @group.command(help="Rank the model's parameter groups by how much perturbing each moves the train loss, "
                        "and suggest a knob set within a parameter budget.")
    @click.option("--perturbations", type=click.IntRange(1), default=4, show_default=True,
                  help="Perturbations per group (antithetic pairs).")
    @click.option("--scale", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
                  help="Size of a perturbation in optimiser steps (sigmas) per parameter; raise it when a "
                       "step-function loss does not move.")
    @click.option("--batches", type=click.IntRange(0), default=2, show_default=True,
                  help="Train batches to evaluate on (0: all).")
    @click.option("--max-parameters", type=click.IntRange(1), default=64, show_default=True,
                  help="Parameter budget of the suggested knob set.")
    @click.option("--seed", type=int, default=0, show_default=True, help="Seed of the perturbations.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table and a TOML snippet.")
    @_run_options
    @_domain_options(domain)
    def probe(perturbations: int, scale: float, batches: int, max_parameters: int, seed: int, as_json: bool,
              config_file: Path | None, assignments: tuple[str, ...], **flags: Any) -> None:
        from retrofit import probe as probing
        from retrofit.display import console, out
        from retrofit.evaluator import Evaluator

        config = resolve(domain, config_file, _overrides(domain, assignments, flags))
        evaluator = Evaluator(config, plugins)

        def progress(done: int, total: int, name: str) -> None:
            if not as_json:
                console.print(f"[dim]probed {done}/{total}: {name}[/dim]", highlight=False)

        report = probing.probe(evaluator, probing.groups_for(evaluator), perturbations=perturbations, scale=scale,
                               batches=batches or None, seed=seed, progress=progress)
        specs = report.suggest(max_parameters)
        if as_json:
            click.echo(json.dumps({**report.to_dict(), "suggested": specs}, indent=2))
            return
        out.print(probing.format_table(report, parameter_budget=max_parameters))
        if "knobs" not in domain.defaults():
            click.echo(f"\nDomain {domain.name} has no `knobs` option: its plugin fixes the knobs it exposes.")
        elif specs:
            click.echo("\nSuggested knobs, to paste into a config file:\n")
            click.echo(probing.toml_snippet(domain.name, specs), nl=False)
        else:
            click.echo("\nNo group moved the loss on these batches: try a larger --scale or more --batches.")

    @group.command(help="Write the chosen result of RUN_DIR: a delta file, and the model's own checkpoint "
                        "where the domain's plugin knows how.")
    @click.argument("run_dir", type=click.Path(path_type=Path))
    @click.option("--output", type=click.Path(path_type=Path), required=True,
                  help="Checkpoint to write (a delta file is written beside it as OUTPUT.delta.json).")
    def export(run_dir: Path, output: Path) -> None:
        from retrofit.delta import delta_path, read_values, write_delta
        from retrofit.evaluator import Evaluator
        from retrofit.records import CONFIG, RunRecord

        record = RunRecord.open(run_dir)
        config = resolve(domain, record.path / CONFIG)
        evaluator = Evaluator(config, plugins)
        values = read_values(record.path)
        evaluator.space.join(values)  # checks they fit the model
        output.parent.mkdir(parents=True, exist_ok=True)
        delta = write_delta(delta_path(output), evaluator.space.specs, values, domain.name)
        written = plugins.first("retrofit_export", domain=domain.name, model=evaluator.model,
                                knobs=evaluator.knobs.knobs, values=values, output=output, config=config)
        click.echo(f"wrote {delta}")
        if written is not None:
            click.echo(f"wrote {written}")
        else:
            click.echo(f"no plugin writes {domain.name} checkpoints: the delta file is the export")

    return group


def _run_finished(plugins: Plugins, domain: Domain, config: Any, run_dir: Path, summary: dict[str, Any]) -> None:
    """Let plugins add their artefacts; a failure there is a warning, the run stays complete."""
    for implementation in plugins.hook.retrofit_run_finished.get_hookimpls():
        try:
            implementation.function(**{name: value for name, value in
                                       {"domain": domain.name, "config": config, "run_dir": run_dir,
                                        "summary": summary}.items() if name in implementation.argnames})
        except Exception as error:
            click.echo(f"retrofit: warning: plugin {implementation.plugin_name!r} failed in retrofit_run_finished: "
                       f"{type(error).__name__}: {error}", err=True)


# -- top-level commands -------------------------------------------------------------------
def build(plugins: Plugins) -> click.Group:
    """The ``retrofit`` click group for these plugins."""

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="retrofit")
    @click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
    def cli(debug: bool) -> None:
        """Retrofit trained models on metrics gradients cannot reach, with nevergrad."""

    @cli.command(name="plugins")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def plugins_command(as_json: bool) -> None:
        """List installed plugins, their versions, domains and hooks."""
        rows = [{"name": i.name, "distribution": i.distribution, "version": i.version, "status": i.status,
                 "domains": i.domains, "hooks": i.hooks, "error": i.error} for i in plugins.infos]
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        from rich.table import Table

        from retrofit.display import out

        table = Table(title="retrofit plugins")
        for column in ("plugin", "distribution", "version", "status", "domains", "hooks"):
            table.add_column(column)
        for row in rows:
            status = row["status"] if not row["error"] else f"{row['status']}: {row['error']}"
            table.add_row(row["name"], row["distribution"], row["version"], status, ", ".join(row["domains"]),
                          ", ".join(h.removeprefix("retrofit_") for h in row["hooks"]))
        out.print(table)

    @cli.command(name="optimizers")
    def optimizers_command() -> None:
        """List the optimizer names --optimizer accepts."""
        from retrofit.optimizers import available

        click.echo("\n".join(available()))

    @cli.command(name="report")
    @click.argument("run_dir", type=click.Path(path_type=Path))
    @click.option("-o", "--output", type=click.Path(path_type=Path), help="HTML file (default RUN_DIR/report.html).")
    def report_command(run_dir: Path, output: Path | None) -> None:
        """Write a self-contained HTML report of a run (finished, running or interrupted)."""
        from retrofit.report import write_report

        written, view = write_report(run_dir, output, plugins)
        if not view.complete:
            click.echo(f"retrofit: note: {view.path} is not finished (status {view.status}): {view.status_note}",
                       err=True)
        click.echo(f"wrote {written}")

    @cli.command(name="runs")
    @click.argument("directory", type=click.Path(path_type=Path), required=False)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def runs_command(directory: Path | None, as_json: bool) -> None:
        """List the runs under DIRECTORY (default: run.runs_dir, ./runs) with their key figures."""
        from retrofit.config import RunSettings
        from retrofit.runs import format_improvement, format_value, list_runs

        views = list_runs(directory if directory is not None else Path(RunSettings().runs_dir))
        if as_json:
            click.echo(json.dumps([{"path": str(v.path), **v.figures()} for v in views], indent=2))
            return
        from rich import box
        from rich.markup import escape
        from rich.table import Table

        from retrofit.display import out

        table = Table(title=f"retrofit runs ({len(views)})", box=box.SIMPLE_HEAD, pad_edge=False,
                      caption="baseline and chosen: validation loss; gain: its relative improvement")
        for column in ("run", "domain", "status", "evals", "baseline", "chosen", "gain", "started"):
            # figures never wrap; on a narrow terminal the start time goes to two lines, a long name folds
            table.add_column(column, justify="left" if column in ("run", "domain", "status", "started") else "right",
                             no_wrap=column not in ("run", "started"), overflow="fold",
                             min_width=min(max((len(v.path.name) for v in views), default=3), 28)
                             if column == "run" else None)
        for view in views:
            f = view.figures()
            table.add_row(escape(f["run"]), escape(f["domain"]), f["status"], f"{f['evaluations']}/{format_value(f['budget'])}",
                          format_value(f["baseline_validation_loss"]), format_value(f["chosen_validation_loss"]),
                          format_improvement(f["improvement"]), format_value(f["started"]))
        out.print(table)

    @cli.command(name="compare")
    @click.argument("run_a", type=click.Path(path_type=Path))
    @click.argument("run_b", type=click.Path(path_type=Path))
    @click.option("--html", "html_file", type=click.Path(path_type=Path), help="Also write the comparison as HTML.")
    def compare_command(run_a: Path, run_b: Path, html_file: Path | None) -> None:
        """Put two runs side by side: key figures and the chosen result's validation metrics."""
        from rich.markup import escape
        from rich.table import Table

        from retrofit.display import out
        from retrofit.runs import compare, format_improvement, format_value, read_run

        first, second = read_run(run_a), read_run(run_b)
        rows = compare(first, second)
        table = Table(title="retrofit compare")
        for column in ("figure", escape(str(run_a)), escape(str(run_b))):
            table.add_column(column, justify="left" if column == "figure" else "right")
        for label, a, b in rows:
            show = format_improvement if label == "relative improvement" else format_value
            table.add_row(escape(label), escape(show(a)), escape(show(b)))
        out.print(table)
        if html_file is not None:
            from retrofit.report import write_comparison

            click.echo(f"wrote {write_comparison(first, second, rows, html_file)}")

    for domain in plugins.domains.values():
        cli.add_command(_domain_group(plugins, domain))
    for implementation in plugins.hook.retrofit_register_commands.get_hookimpls():
        before = dict(cli.commands)
        try:
            implementation.function(cli=cli)
        except Exception as error:
            raise PluginError(f"plugin {implementation.plugin_name!r} raised in retrofit_register_commands: "
                              f"{type(error).__name__}: {error}") from error
        replaced = sorted(name for name, command in before.items() if cli.commands.get(name) is not command)
        if replaced:
            raise PluginError(f"plugin {implementation.plugin_name!r} adds command(s) {', '.join(replaced)}, "
                              f"which already exist")
    return cli


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``retrofit`` script; returns the exit code."""
    from retrofit.engine import Interrupted

    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args
    code = EXIT_OK
    try:
        build(load()).main(args=args, prog_name="retrofit", standalone_mode=False)
    except click.exceptions.Exit as done:  # --help, --version
        code = done.exit_code
    except click.ClickException as error:  # click's own usage errors exit 2, on one line like ours
        context = getattr(error, "ctx", None)
        hint = f" (see '{context.command_path} --help')" if context is not None else ""
        click.echo(f"retrofit: error: {error.format_message()}{hint}", err=True)
        code = EXIT_USAGE
    except Interrupted as stopped:
        if (stopped.record.path / "config.toml").is_file():
            click.echo(f"\ninterrupted; everything finished is recorded. Resume with:\n"
                       f"  retrofit {_domain_of(args)} tune --resume {stopped.record.path}", err=True)
        else:  # stopped before anything was recorded: nothing to resume
            click.echo("\ninterrupted before the run started", err=True)
        code = EXIT_INTERRUPTED
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("\ninterrupted", err=True)
        code = EXIT_INTERRUPTED
    except UsageError as error:
        _report(error, debug)
        code = EXIT_USAGE
    except (RunFailed, PluginError) as error:
        _report(error, debug)
        code = EXIT_FAILED
    return code


def _report(error: Exception, debug: bool) -> None:
    if debug:
        traceback.print_exception(error)
    click.echo(f"retrofit: error: {error}", err=True)


def _discard(run_dir: Path, keep_directory: bool) -> None:
    """Remove a run directory this command created, when the run failed before recording anything."""
    from retrofit.records import CONFIG

    (run_dir / CONFIG).unlink(missing_ok=True)
    if not keep_directory:
        try:
            run_dir.rmdir()  # only if nothing else is in it
        except OSError:
            pass


def _domain_of(args: list[str]) -> str:
    return next((a for a in args if not a.startswith("-")), "<domain>")


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s code, even if an optimiser left threads."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        import os

        os._exit(code)  # e.g. SciPy-backed nevergrad optimisers that never return (DESIGN.md)
    sys.exit(code)
