"""Plugins that misbehave: raising in a hook, answering with the wrong type, importing slowly.
Every error names the plugin and the hook; nothing ends in a traceback.

The plugin is a real installed distribution (a ``*.dist-info`` with an entry point, on
``sys.path``), so the command line finds it as it finds any pack. Its hooks misbehave as its
options say, one hook at a time.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from retrofit.plugins import SLOW_ENV, load

from .faults import invoke

SHAKY = '''
import os
import numpy as np
from retrofit import ArrayKnob, Aggregate, Domain, Option, hookimpl

NAME = "shaky"
HOOKS = ("none", "load_model", "expose_parameters", "batches", "evaluate", "aggregate", "export", "run_finished")


class Model:
    def __init__(self):
        self.gains = np.ones(3)


def misbehave(config, hook, wrong):
    """Raise, or return ``wrong``, when this hook is the one the options name."""
    if config.options["hook"] != hook:
        return None
    if config.options["kind"] == "raise":
        raise RuntimeError(f"shaky {hook} broke")
    return wrong


@hookimpl
def retrofit_register_domains(register):
    register(Domain(name=NAME, help="misbehaves on request", objective={"loss": 1.0},
                    run_defaults={"budget": 4, "validate_every": 4, "executor": "serial"},
                    options=(Option("hook", "none", "which hook misbehaves", choices=HOOKS),
                             Option("kind", "raise", "raise or wrong_type", choices=("raise", "wrong_type")),
                             Option("spare_baseline", False, "evaluate the unmodified model normally"))))


@hookimpl
def retrofit_register_commands(cli):
    if os.environ.get("SHAKY_COMMANDS"):
        raise RuntimeError("shaky commands broke")


@hookimpl
def retrofit_load_model(domain, config):
    if domain != NAME:
        return None
    return misbehave(config, "load_model", "not a model") or Model()


@hookimpl
def retrofit_expose_parameters(domain, model, config):
    if domain != NAME:
        return None
    return misbehave(config, "expose_parameters", "gains") or [ArrayKnob("gains", model.gains, sigma=0.1)]


@hookimpl
def retrofit_batches(domain, config, split):
    if domain != NAME:
        return None
    return misbehave(config, "batches", 42) or [0, 1]


@hookimpl
def retrofit_evaluate(domain, model, batch, config):
    if domain != NAME:
        return None
    if config.options["spare_baseline"] and np.allclose(model.gains, 1.0):
        return {"loss": float(np.sum((model.gains - 1.2) ** 2))}
    return misbehave(config, "evaluate", [0.5]) or {"loss": float(np.sum((model.gains - 1.2) ** 2))}


@hookimpl
def retrofit_aggregate(domain, metrics, config):
    if domain != NAME:
        return None
    wrong = misbehave(config, "aggregate", 0.5)
    if wrong is not None:
        return wrong
    return Aggregate(loss=float(np.mean([m["loss"] for m in metrics])), metrics={"loss": 0.0})


@hookimpl
def retrofit_export(domain, model, knobs, values, output, config):
    if domain != NAME:
        return None
    misbehave(config, "export", None)
    return None


@hookimpl
def retrofit_run_finished(domain, config, run_dir, summary):
    if domain == NAME:
        misbehave(config, "run_finished", None)
'''


def _install(root: Path, distribution: str, module: str, source: str) -> None:
    info = root / f"{distribution.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[retrofit]\n{module} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture(scope="module")
def shaky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The misbehaving plugin, installed for this module's tests."""
    root = tmp_path_factory.mktemp("site")
    _install(root, "retrofit-shaky", "shaky", SHAKY)
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    yield root
    sys.path.remove(str(root))
    sys.modules.pop("shaky", None)
    importlib.invalidate_caches()


def _error(err: str) -> str:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("retrofit: error: ")]
    assert len(errors) == 1, err
    return errors[0]


HOOKS = ["load_model", "expose_parameters", "batches", "evaluate", "aggregate"]


@pytest.mark.parametrize("hook", HOOKS)
def test_a_hook_that_raises_is_named_with_its_plugin(shaky: Path, tmp_path: Path, hook: str) -> None:
    code, err = invoke(["shaky", "tune", "--out", str(tmp_path / "run"), "--set", f'shaky.hook="{hook}"'])
    assert code == 1
    line = _error(err)
    assert f"plugin 'shaky' raised in retrofit_{hook}: RuntimeError: shaky {hook} broke" in line


@pytest.mark.parametrize(("hook", "wrong"), [("expose_parameters", "str"), ("batches", "int"),
                                             ("evaluate", "list"), ("aggregate", "float")])
def test_a_hook_answering_the_wrong_type_is_named_with_its_plugin(shaky: Path, tmp_path: Path, hook: str,
                                                                  wrong: str) -> None:
    code, err = invoke(["shaky", "tune", "--out", str(tmp_path / "run"), "--set", f'shaky.hook="{hook}"',
                        "--set", 'shaky.kind="wrong_type"'])
    assert code == 1
    assert f"plugin 'shaky' returned {wrong} from retrofit_{hook}" in _error(err)


def test_a_failing_candidate_records_the_plugin_hook_and_line(shaky: Path, tmp_path: Path) -> None:
    """In the history, the failure also says where in the plugin it happened."""
    import json

    code, err = invoke(["shaky", "tune", "--out", str(tmp_path / "run"), "--set", 'shaky.hook="evaluate"',
                        "--set", "shaky.spare_baseline=true"])
    assert code == 0, err  # every candidate but the baseline fails: recorded, the run finishes
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    errors = [entry["error"] for entry in history[1:]]
    assert len(errors) == 3 and all(e.startswith("PluginError: plugin 'shaky' raised in retrofit_evaluate: "
                                                 "RuntimeError: shaky evaluate broke (at shaky.py:") for e in errors)


def test_export_and_run_finished_that_raise(shaky: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code, err = invoke(["shaky", "tune", "--out", str(run_dir), "--set", 'shaky.hook="run_finished"'])
    assert code == 0  # the run is complete; its plugin's extra artefact is a warning
    assert "plugin 'shaky' failed in retrofit_run_finished: RuntimeError: shaky run_finished broke" in err
    (run_dir / "config.toml").write_text((run_dir / "config.toml").read_text().replace(
        'hook = "run_finished"', 'hook = "export"'))
    code, err = invoke(["shaky", "export", str(run_dir), "--output", str(tmp_path / "model.bin")])
    assert code == 1
    assert "plugin 'shaky' raised in retrofit_export: RuntimeError: shaky export broke" in _error(err)


def test_register_commands_that_raises(shaky: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHAKY_COMMANDS", "1")
    code, err = invoke(["plugins"])
    assert code == 1
    assert "plugin 'shaky' raised in retrofit_register_commands: RuntimeError: shaky commands broke" in _error(err)


def test_a_slow_import_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _install(tmp_path, "retrofit-sluggish", "sluggish_plugin", "import time\ntime.sleep(0.5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    try:
        plugins = load(environ={SLOW_ENV: "0.2"})
    finally:
        sys.modules.pop("sluggish_plugin", None)
    warning = [line for line in capsys.readouterr().err.splitlines() if "sluggish_plugin" in line]
    assert len(warning) == 1 and "from retrofit-sluggish took" in warning[0] and "to import" in warning[0]
    assert plugins.domain("toy")  # everything else works
    assert {i.name: i.status for i in plugins.infos}["sluggish_plugin"] == "loaded"


def test_a_bad_slow_threshold_is_bad_input() -> None:
    from retrofit.errors import UsageError

    with pytest.raises(UsageError, match=SLOW_ENV):
        load(environ={SLOW_ENV: "soon"})
