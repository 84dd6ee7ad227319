"""Plugin loading: built-ins and installed packs, broken plugins, disabling, strict mode, conflicts.

Fake third-party plugins are real distributions: a ``*.dist-info`` folder with an
``entry_points.txt`` and a module, in a temporary folder put on ``sys.path``, so
``importlib.metadata`` finds them exactly as it finds an installed package.
"""

from __future__ import annotations

import importlib
import itertools
import json
import re
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT, cli, summary
from retrofit import hookimpl
from retrofit.cli import build
from retrofit.config import resolve
from retrofit.domain import Domain, Option
from retrofit.errors import PluginError, UsageError
from retrofit.evaluator import Evaluator, Task
from retrofit.knobs import ArrayKnob, ProbeGroup
from retrofit.objective import Aggregate
from retrofit.plugins import BUILTINS, load
from retrofit.toy import DOMAIN as TOY
from retrofit.toy import ToyModel

PACKS = {"toy": "retrofit-core", "depth": "retrofit-depth-midas", "doom": "retrofit-doom-arnold",
         "codegen": "retrofit-codegen", "curve": "retrofit-example-curve"}
_unique = itertools.count()


@pytest.fixture
def site(tmp_path, monkeypatch):
    """Make fake installed distributions: ``site(dist, {entry point: module}, {module: source})``."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    modules: list[str] = []

    def make(distribution: str, entry_points: dict[str, str], sources: dict[str, str], version: str = "1.2") -> Path:
        info = root / f"{distribution.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(
            "[retrofit]\n" + "".join(f"{name} = {target}\n" for name, target in entry_points.items()))
        for module, source in sources.items():
            (root / f"{module}.py").write_text(textwrap.dedent(source))
            modules.append(module)
        importlib.invalidate_caches()
        return root

    yield make
    for module in modules:
        sys.modules.pop(module, None)


def unique(prefix: str) -> str:
    """A module / entry-point name no other test uses (modules are cached per process)."""
    return f"{prefix}_{next(_unique)}_{id(unique) % 9973}"


def warnings_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("retrofit: warning:")]


BROKEN_SOURCE = "raise ImportError('libfoo.so: cannot open shared object file')\n"


# -- what is installed --------------------------------------------------------------------
def test_builtins_and_installed_packs_are_loaded_and_attributed():
    plugins = load(environ={})
    assert set(PACKS) <= set(plugins.domains)
    for domain, distribution in PACKS.items():
        owner = plugins.owner_of(domain)
        assert owner is not None and owner.distribution == distribution, domain
        assert owner.status == "loaded" and owner.version == metadata.version(distribution)
        assert "retrofit_register_domains" in owner.hooks
    infos = {info.name: info for info in plugins.infos}
    assert set(BUILTINS) <= set(infos)
    assert infos["objective"].hooks == ["retrofit_aggregate"] and "retrofit_export" in infos["nn"].hooks
    assert all(info.status == "loaded" and not info.error for info in plugins.infos)
    assert plugins.domain("toy") is TOY


def test_an_unknown_domain_lists_the_installed_ones():
    with pytest.raises(UsageError, match=r"unknown domain 'nope' \(installed: .*codegen.*toy"):
        load(environ={}).domain("nope")


# -- broken plugins -----------------------------------------------------------------------
def test_a_plugin_that_fails_to_import_costs_one_warning_and_nothing_else(site, capsys):
    name = unique("broken")
    site("retrofit-broken", {name: name}, {name: BROKEN_SOURCE})
    plugins = load(environ={})
    lines = warnings_in(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert f"'{name}'" in lines[0] and "retrofit-broken 1.2" in lines[0] and "libfoo.so" in lines[0]
    assert f"RETROFIT_DISABLE_PLUGINS={name}" in lines[0]
    info = next(i for i in plugins.infos if i.name == name)
    assert (info.status, info.distribution) == ("failed", "retrofit-broken") and "ImportError" in info.error
    # every other domain keeps working, end to end
    assert set(PACKS) <= set(plugins.domains)
    evaluator = Evaluator(resolve(TOY), plugins)
    assert evaluator.evaluate(Task(0, "train", evaluator.space.identity)).error is None


def test_a_broken_plugin_warns_once_per_command_not_once_per_worker(site, tmp_path):
    name = unique("broken")
    root = site("retrofit-broken", {name: name}, {name: BROKEN_SOURCE})
    done = cli("toy", "tune", "--budget", "4", "--workers", "2", "--out", str(tmp_path / "run"), cwd=tmp_path,
               env={"PYTHONPATH": str(root)}, check=0)
    lines = warnings_in(done.stderr)
    assert len(lines) == 1 and "retrofit-broken" in lines[0], done.stderr


def test_disable_by_entry_point_or_distribution_name(site, capsys):
    name = unique("broken")
    site("retrofit-broken", {name: name}, {name: BROKEN_SOURCE})
    for value in (name, "retrofit-broken", f" depth , {name} "):
        plugins = load(environ={"RETROFIT_DISABLE_PLUGINS": value})
        assert warnings_in(capsys.readouterr().err) == []
        assert next(i for i in plugins.infos if i.name == name).status == "disabled"
    assert "depth" not in plugins.domains and "doom" in plugins.domains  # by entry-point name
    plugins = load(environ={"RETROFIT_DISABLE_PLUGINS": f"retrofit-doom-arnold,{name}"})
    assert "doom" not in plugins.domains and "depth" in plugins.domains  # by distribution name
    assert {i.name: i.status for i in plugins.infos}["doom"] == "disabled"
    plugins = load(environ={"RETROFIT_DISABLE_PLUGINS": f"toy,{name}"})  # built-ins too
    assert "toy" not in plugins.domains and "toy" not in build(plugins).commands


@pytest.mark.parametrize("value", ["1", "yes", "true"])
def test_strict_mode_raises_instead_of_warning(site, value):
    name = unique("broken")
    site("retrofit-broken", {name: name}, {name: BROKEN_SOURCE})
    with pytest.raises(PluginError, match=f"'{name}' from retrofit-broken 1.2 failed to load: ImportError"):
        load(environ={"RETROFIT_STRICT_PLUGINS": value})


@pytest.mark.parametrize("value", ["", "0", "false"])
def test_strict_mode_off_values(site, value, capsys):
    name = unique("broken")
    site("retrofit-broken", {name: name}, {name: BROKEN_SOURCE})
    load(environ={"RETROFIT_STRICT_PLUGINS": value})
    assert len(warnings_in(capsys.readouterr().err)) == 1


def test_a_misspelled_hook_fails_loudly_naming_the_plugin(site):
    name = unique("typo")
    site("retrofit-typo", {name: name}, {name: """
        from retrofit import hookimpl

        @hookimpl
        def retrofit_evalute(domain, model, batch, config):
            return None
    """})
    for environ in ({}, {"RETROFIT_STRICT_PLUGINS": "1"}):  # loud even when not strict
        with pytest.raises(PluginError) as caught:
            load(environ=environ)
        assert "retrofit_evalute" in str(caught.value) and "retrofit-typo" in str(caught.value)
        assert f"'{name}'" in str(caught.value)
    assert load(environ={"RETROFIT_DISABLE_PLUGINS": name}).domains  # disabling it is the way out


def test_a_misspelled_hook_registered_in_code_fails_too():
    class Typo:
        @hookimpl
        def retrofit_load_modle(self, domain, config):
            return None

    with pytest.raises(PluginError, match="retrofit_load_modle"):
        load(extra=[Typo()], environ={})


def test_a_hook_asking_for_an_argument_the_spec_lacks_is_a_plugin_error(site, capsys):
    name = unique("badargs")
    site("retrofit-badargs", {name: name}, {name: """
        from retrofit import hookimpl

        @hookimpl
        def retrofit_load_model(domain, config, device):
            return None
    """})
    plugins = load(environ={})
    err = capsys.readouterr().err
    line, = warnings_in(err)
    assert "retrofit-badargs" in line and "device" in line  # pluggy's multi-line message, on one line
    assert err.count("\n") == 1
    assert next(i for i in plugins.infos if i.name == name).status == "failed"


# -- domain declarations ------------------------------------------------------------------
def test_two_plugins_declaring_one_domain_is_an_error_naming_both(site, capsys):
    first, second = unique("twin"), unique("twin")
    source = """
        from retrofit import Domain, hookimpl

        @hookimpl
        def retrofit_register_domains(register):
            register(Domain(name="twin", help="one of two"))
    """
    site("retrofit-twin-one", {first: first}, {first: source})
    site("retrofit-twin-two", {second: second}, {second: source})
    with pytest.raises(PluginError) as caught:
        load(environ={"RETROFIT_STRICT_PLUGINS": "1"})
    message = str(caught.value)
    assert "'twin' is declared twice" in message
    assert "retrofit-twin-one" in message and "retrofit-twin-two" in message
    # not strict: a warning naming both; the first keeps the domain, the second is out entirely
    plugins = load(environ={})
    line, = warnings_in(capsys.readouterr().err)
    assert "retrofit-twin-one" in line and "retrofit-twin-two" in line
    assert plugins.owner_of("twin").distribution == "retrofit-twin-one"
    assert {i.name: i.status for i in plugins.infos}[second] == "failed"


def test_a_plugin_that_loses_a_domain_is_never_asked_about_it(capsys):
    """An impostor declaring ``toy`` is dropped: its (firstresult) hooks must not answer for toy."""

    class Impostor:
        @hookimpl
        def retrofit_register_domains(self, register):
            register(Domain(name="impostor-extra", help="declared before the clash"))
            register(Domain(name="toy", help="not the real toy"))

        @hookimpl
        def retrofit_load_model(self, domain, config):
            raise AssertionError("the impostor was asked to load a model")

    plugins = load(extra=[Impostor()], environ={})
    line, = warnings_in(capsys.readouterr().err)
    assert "retrofit_register_domains" in line and "(registered in code)" in line and "retrofit-core" in line
    assert plugins.domain("toy") is TOY and "impostor-extra" not in plugins.domains
    assert plugins.call("retrofit_load_model", domain="toy", config=resolve(TOY)) is not None


def test_a_plugin_raising_in_register_domains_is_named_with_the_hook(site, capsys):
    name = unique("raiser")
    site("retrofit-raiser", {name: name}, {name: """
        from retrofit import hookimpl

        @hookimpl
        def retrofit_register_domains(register):
            raise RuntimeError("no licence file")
    """})
    plugins = load(environ={})
    line, = warnings_in(capsys.readouterr().err)
    assert f"'{name}' from retrofit-raiser raised in retrofit_register_domains" in line
    assert "RuntimeError: no licence file" in line
    assert set(PACKS) <= set(plugins.domains)
    with pytest.raises(PluginError, match="no licence file"):
        load(environ={"RETROFIT_STRICT_PLUGINS": "1"})


@pytest.mark.parametrize("bad", ["run", "objective", "plugins", "report", "optimizers"])
def test_reserved_domain_names_are_refused(bad, capsys):
    class Greedy:
        @hookimpl
        def retrofit_register_domains(self, register):
            register(Domain(name=bad, help="clashes with a config section or a command"))

    plugins = load(extra=[Greedy()], environ={})
    assert bad not in plugins.domains
    assert f"{bad!r} is reserved" in capsys.readouterr().err


def test_register_must_be_given_a_domain(capsys):
    class Sloppy:
        @hookimpl
        def retrofit_register_domains(self, register):
            register("sloppy")

    load(extra=[Sloppy()], environ={})
    assert "expects a retrofit.Domain, got str" in capsys.readouterr().err


# -- calling hooks ------------------------------------------------------------------------
def test_a_hook_nobody_answers_says_which_hook_is_missing_for_which_domain():
    plugins = load(environ={})
    doom = plugins.domain("doom")
    with pytest.raises(UsageError) as caught:  # the doom pack offers no probe groups, and None is no torch model
        plugins.call("retrofit_probe_groups", domain="doom", model=None, config=resolve(doom))
    message = str(caught.value)
    assert "retrofit_probe_groups" in message and "'doom'" in message and "retrofit-doom-arnold" in message


def test_a_third_party_loader_extends_an_existing_domain():
    """Owner hooks are firstresult: a plugin answering only for its own model spec extends toy."""

    class Loader:
        @hookimpl
        def retrofit_load_model(self, domain, config):
            if domain != "toy" or config.options["data_seed"] != 7:
                return None  # not ours: the toy plugin answers
            return ToyModel(weights=np.ones(config.options["dim"]), gains=np.ones(config.options["dim"]))

    plugins = load(extra=[Loader()], environ={})
    special = plugins.call("retrofit_load_model", domain="toy", config=resolve(TOY, None, {"toy.data_seed": 7}))
    assert np.array_equal(special.weights, np.ones(8))
    usual = plugins.call("retrofit_load_model", domain="toy", config=resolve(TOY))
    assert not np.array_equal(usual.weights, np.ones(8))
    # the rest of the toy domain works with the extended loader
    evaluator = Evaluator(resolve(TOY, None, {"toy.data_seed": 7}), plugins)
    assert evaluator.evaluate(Task(0, "validation", evaluator.space.identity)).error is None


class Mini:
    """A complete plugin in code: every hook, a domain ``mini`` and a command ``mini-info``."""

    def __init__(self) -> None:
        self.exported: list[Path] = []

    @hookimpl
    def retrofit_register_domains(self, register):
        register(Domain(name="mini", help="a two-knob test domain", options=(Option("target", 2.0, "optimum"),),
                        objective={"distance": 1.0}))

    @hookimpl
    def retrofit_register_commands(self, cli):
        @cli.command(name="mini-info")
        def mini_info() -> None:
            click.echo("mini is here")

    @hookimpl
    def retrofit_load_model(self, domain, config):
        return {"weights": np.zeros(2)} if domain == "mini" else None

    @hookimpl
    def retrofit_expose_parameters(self, domain, model):
        return [ArrayKnob("weights", model["weights"], sigma=1.0)] if domain == "mini" else None

    @hookimpl
    def retrofit_batches(self, domain, split):
        if domain != "mini":
            return None
        return [1.0, 3.0] if split == "train" else [5.0]

    @hookimpl
    def retrofit_evaluate(self, domain, model, batch, config):
        if domain != "mini":
            return None
        return {"distance": float(np.abs(model["weights"] - config.options["target"]).sum() * batch)}

    @hookimpl
    def retrofit_aggregate(self, domain, metrics):
        if domain != "mini":
            return None
        worst = max(m["distance"] for m in metrics)
        return Aggregate(loss=worst, metrics={"worst_distance": worst}, violations=[0.0])

    @hookimpl
    def retrofit_probe_groups(self, domain, model):
        if domain != "mini":
            return None
        return [ProbeGroup(f"weight {i}", (ArrayKnob(f"w{i}", model["weights"][i:i + 1], sigma=1.0),))
                for i in range(2)]

    @hookimpl
    def retrofit_export(self, domain, values, output):
        if domain != "mini":
            return None
        output.write_text(json.dumps(values))
        self.exported.append(output)
        return output


def test_a_complete_plugin_in_code_drives_every_hook(tmp_path):
    mini = Mini()
    plugins = load(extra=[mini], environ={})
    info = next(i for i in plugins.infos if i.name == "Mini")
    assert info.distribution == "(registered in code)" and info.domains == ["mini"]
    assert len(info.hooks) == 9
    config = resolve(plugins.domain("mini"))
    evaluator = Evaluator(config, plugins)
    baseline = evaluator.evaluate(Task(0, "train", evaluator.space.identity))
    assert baseline.error is None and baseline.loss == 2 * 2.0 * 3.0  # worst batch, the plugin's own reduction
    assert baseline.metrics == {"worst_distance": 12.0} and baseline.violations == [0.0]
    best = evaluator.evaluate(Task(1, "validation", np.array([2.0, 2.0])))
    assert best.loss == 0.0
    assert np.array_equal(evaluator.model["weights"], np.zeros(2))  # knobs restored after evaluation
    # the core's default aggregate still serves the other domains (trylast)
    toy = Evaluator(resolve(TOY), plugins)
    assert {"error_rate", "accuracy"} <= set(toy.evaluate(Task(0, "train", toy.space.identity)).metrics)
    groups = plugins.hook.retrofit_probe_groups(domain="mini", model=evaluator.model, config=config)
    assert [g.name for g in groups] == ["weight 0", "weight 1"] and [g.size for g in groups] == [1, 1]
    # the export hook and the extra command
    out = tmp_path / "mini.json"
    written = plugins.hook.retrofit_export(domain="mini", model=evaluator.model, knobs=evaluator.knobs.knobs,
                                           values={"weights": [2.0, 2.0]}, output=out, config=config)
    assert written == out and json.loads(out.read_text()) == {"weights": [2.0, 2.0]}
    assert plugins.hook.retrofit_export(domain="toy", model=None, knobs=[], values={}, output=out,
                                        config=resolve(TOY)) is None
    result = CliRunner().invoke(build(plugins), ["mini-info"])
    assert result.exit_code == 0 and "mini is here" in result.output
    assert "mini" in build(plugins).commands


def test_a_command_may_not_replace_an_existing_one():
    class Clobber:
        @hookimpl
        def retrofit_register_commands(self, cli):
            @cli.command(name="toy")
            def toy() -> None:
                pass

    with pytest.raises(PluginError, match="'Clobber' adds command.s. toy, which already exist"):
        build(load(extra=[Clobber()], environ={}))


def test_a_plugin_raising_in_register_commands_is_named():
    class Raiser:
        @hookimpl
        def retrofit_register_commands(self, cli):
            raise KeyError("oops")

    with pytest.raises(PluginError, match="'Raiser' raised in retrofit_register_commands: KeyError"):
        build(load(extra=[Raiser()], environ={}))


@pytest.mark.parametrize("tryfirst", [True, False])
def test_an_extension_marked_tryfirst_is_asked_before_the_owner_whatever_its_name(site, tryfirst):
    owner, extension = unique("zzz_owner"), unique("aaa_extension")  # the extension registers first
    site("retrofit-owner", {owner: owner}, {owner: """
        from retrofit import Domain, Option, hookimpl

        @hookimpl
        def retrofit_register_domains(register):
            register(Domain(name="owned", help="", options=(Option("model", "usual.bin", "model file"),)))

        @hookimpl
        def retrofit_load_model(domain, config):
            return "owner's model" if domain == "owned" else None
    """})
    site("retrofit-extension", {extension: extension}, {extension: f"""
        from retrofit import hookimpl

        @hookimpl(tryfirst={tryfirst})
        def retrofit_load_model(domain, config):
            if domain != "owned" or not config.options["model"].endswith(".onnx"):
                return None
            return "extension's model"
    """})
    plugins = load(environ={"RETROFIT_STRICT_PLUGINS": "1"})
    owned = plugins.domain("owned")
    assert plugins.call("retrofit_load_model", domain="owned", config=resolve(owned)) == "owner's model"
    onnx = resolve(owned, None, {"owned.model": "x.onnx"})
    special = plugins.call("retrofit_load_model", domain="owned", config=onnx)
    assert special == ("extension's model" if tryfirst else "owner's model")


def _doc_block(text: str, language: str, first_line: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)
    found = [block for block in blocks if block.splitlines()[0] == first_line]
    assert len(found) == 1, f"docs/plugins.md: no single {language} block starting {first_line!r}"
    return found[0]


def test_the_walk_through_plugin_of_the_docs_works_end_to_end(site, tmp_path):
    """docs/plugins.md builds a plugin from nothing: its files, installed, give `retrofit mydomain tune`."""
    doc = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    pyproject = tomllib.loads(_doc_block(doc, "toml", "# pyproject.toml"))
    module = _doc_block(doc, "python", "# retrofit_mydomain/__init__.py")
    entry_points = pyproject["project"]["entry-points"]["retrofit"]
    assert entry_points == {"mydomain": "retrofit_mydomain"}
    root = site(pyproject["project"]["name"], entry_points, {}, version=pyproject["project"]["version"])
    (root / "retrofit_mydomain").mkdir()
    (root / "retrofit_mydomain" / "__init__.py").write_text(module)
    env = {"PYTHONPATH": str(root), "RETROFIT_STRICT_PLUGINS": "1"}
    rows = json.loads(cli("plugins", "--json", cwd=tmp_path, env=env, check=0).stdout)
    row, = [r for r in rows if r["name"] == "mydomain"]
    assert row["distribution"] == "retrofit-mydomain" and row["domains"] == ["mydomain"]
    cli("mydomain", "tune", "--budget", "60", "--workers", "1", "--out", "R", cwd=tmp_path, env=env, check=0)
    result = summary(tmp_path / "R")
    assert result["evaluations"] == 60 and result["parameters"]["count"] == 4
    assert result["best"]["validation"]["loss"] < result["baseline"]["validation"]["loss"]
    assert set(result["best"]["validation"]["metrics"]) == {"miss_rate", "mean_abs_error"}
    done = cli("mydomain", "tune", "--tolerance", "0.05", "--set", "run.seed=3", "--budget", "3", "--workers", "1",
               "--out", "R2", cwd=tmp_path, env=env, check=0)
    assert tomllib.loads((tmp_path / "R2" / "config.toml").read_text())["mydomain"]["tolerance"] == 0.05, done.stderr
    sys.modules.pop("retrofit_mydomain", None)


def test_the_docs_name_every_reserved_flag_and_domain_name():
    from retrofit.domain import RESERVED_OPTION_NAMES
    from retrofit.plugins import RESERVED_DOMAIN_NAMES

    doc = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    missing = sorted(f for f in RESERVED_OPTION_NAMES if f"`{f}`" not in doc)
    assert not missing, missing
    assert all(f"`{name}`" in doc for name in RESERVED_DOMAIN_NAMES)


def test_an_option_clashing_with_a_core_flag_is_refused():
    class Clash:
        @hookimpl
        def retrofit_register_domains(self, register):
            register(Domain(name="clash", help="", options=(Option("budget", 3, "clashes with --budget"),)))

    with pytest.raises(PluginError, match="'clash': option 'budget' clashes with retrofit's own --budget"):
        load(extra=[Clash()], environ={"RETROFIT_STRICT_PLUGINS": "1"})
    plugins = load(extra=[Clash()], environ={})  # not strict: refused with a warning, the rest works
    assert "clash" not in plugins.domains and "toy" in build(plugins).commands
    # not a flag: no clash
    class Quiet:
        @hookimpl
        def retrofit_register_domains(self, register):
            register(Domain(name="quiet", help="", options=(Option("budget", 3, "config only", cli=False),)))

    assert "quiet" in build(load(extra=[Quiet()], environ={})).commands
