"""Finding, loading and asking plugins.

Plugins are modules advertised by installed distributions under the entry-point group
``retrofit`` (``[project.entry-points.retrofit] depth = "retrofit_depth_midas.plugin"``), plus
the core's built-ins. Loading is forgiving by default: a plugin that fails to import, or
whose hook raises while declaring domains, costs one warning that names its distribution,
and everything else keeps working.

Environment variables:

* ``RETROFIT_DISABLE_PLUGINS=name,other``: skip these plugins (entry-point or distribution names).
* ``RETROFIT_STRICT_PLUGINS=1``: raise instead of warning (use it in a plugin's own CI).
* ``RETROFIT_SLOW_PLUGIN_SECONDS=2``: warn, naming the plugin, when importing one takes longer
  (every command and every worker process pays for it).

Hook calls made through :meth:`Plugins.call` name the plugin and the hook when an
implementation raises or answers with the wrong type.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from retrofit import hookspecs
from retrofit.domain import Domain
from retrofit.errors import PluginError, RetrofitError, UsageError

ENTRY_POINT_GROUP = "retrofit"
DISABLE_ENV = "RETROFIT_DISABLE_PLUGINS"
STRICT_ENV = "RETROFIT_STRICT_PLUGINS"
SLOW_ENV = "RETROFIT_SLOW_PLUGIN_SECONDS"
# The core's own hook implementations: the default loss, the torch exporter, the toy domain.
BUILTINS = {"objective": "retrofit.objective", "nn": "retrofit.nn.plugin", "toy": "retrofit.toy"}
# A domain is also a config section and a top-level command: these names are taken.
RESERVED_DOMAIN_NAMES = frozenset({"run", "objective", "constraints", "plugins", "optimizers", "report", "runs",
                                   "compare"})


@dataclass
class PluginInfo:
    """One plugin as ``retrofit plugins`` shows it."""

    name: str
    distribution: str
    version: str
    status: str = "loaded"  # loaded | failed | disabled
    error: str = ""
    hooks: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)


class Plugins:
    """The loaded plugins, their domains, and helpers to call hooks with clear errors."""

    def __init__(self, manager: pluggy.PluginManager, infos: list[PluginInfo], domains: dict[str, Domain]) -> None:
        self.manager = manager
        self.infos = infos
        self.domains = domains

    @property
    def hook(self) -> Any:
        return self.manager.hook

    def domain(self, name: str) -> Domain:
        """The domain called ``name``, or a usage error listing the installed ones."""
        try:
            return self.domains[name]
        except KeyError:
            known = ", ".join(sorted(self.domains)) or "none"
            raise UsageError(f"unknown domain {name!r} (installed: {known})") from None

    def owner_of(self, domain: str) -> PluginInfo | None:
        return next((info for info in self.infos if domain in info.domains), None)

    def call(self, hook_name: str, *, returns: type | tuple[type, ...] | None = None, expected: str = "",
             **kwargs: Any) -> Any:
        """Call a ``firstresult`` hook; a ``None`` answer becomes an error saying who is missing.

        An implementation that raises (other than a :class:`RetrofitError`, which is meant for
        the user) or answers with something other than ``returns`` is a :class:`PluginError`
        naming the plugin and the hook.
        """
        result, answered = self.first_answer(hook_name, kwargs)
        if result is not None and returns is not None and not isinstance(result, returns):
            raise PluginError(f"plugin {answered!r} returned {type(result).__name__} from {hook_name}, "
                              f"expected {expected or returns}")
        if result is None:
            domain = kwargs.get("domain", "?")
            owner = self.owner_of(domain)
            who = f" (domain provided by {owner.distribution} {owner.version})" if owner else ""
            raise UsageError(f"no installed plugin implements {hook_name} for domain {domain!r}{who}; "
                             f"that part of the domain is not built yet")
        return result


    def first(self, hook_name: str, **kwargs: Any) -> Any:
        """A ``firstresult`` hook's answer, ``None`` when no plugin answers (e.g. optional
        ``retrofit_export``); an implementation that raises is named, as in :meth:`call`."""
        return self.first_answer(hook_name, kwargs)[0]

    def first_answer(self, hook_name: str, kwargs: dict[str, Any]) -> tuple[Any, str]:
        """pluggy's firstresult call, one implementation at a time so that we know who answered
        (or raised): the answer and the plugin's name. Same order as pluggy: last registered
        and ``tryfirst`` first."""
        caller = getattr(self.manager.hook, hook_name)
        implementations = caller.get_hookimpls()
        if any(impl.hookwrapper or getattr(impl, "wrapper", False) for impl in implementations):
            try:  # wrappers need pluggy's own loop; the culprit is then unknown
                return caller(**kwargs), "?"
            except RetrofitError:
                raise
            except Exception as error:
                raise PluginError(f"a plugin raised in {hook_name}: {type(error).__name__}: {error}") from error
        for impl in reversed(implementations):
            try:
                result = impl.function(*(kwargs[name] for name in impl.argnames))
            except RetrofitError:
                raise
            except Exception as error:
                raise PluginError(f"plugin {impl.plugin_name!r} raised in {hook_name}: "
                                  f"{type(error).__name__}: {error}") from error
            if result is not None:
                return result, impl.plugin_name
        return None, ""


def load(*, extra: Iterable[ModuleType | object] = (), environ: dict[str, str] | None = None) -> Plugins:
    """Discover built-ins and entry points, register them, and collect their domains.

    ``extra`` registers more plugin objects directly (tests, embedding applications).
    """
    env = os.environ if environ is None else environ
    strict = env.get(STRICT_ENV, "") not in ("", "0", "false")
    try:
        slow = float(env.get(SLOW_ENV, "") or 2.0)
    except ValueError:
        raise UsageError(f"{SLOW_ENV} must be a number of seconds, got {env.get(SLOW_ENV)!r}") from None
    disabled = {name.strip() for name in env.get(DISABLE_ENV, "").split(",") if name.strip()}

    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    infos: list[PluginInfo] = []

    def fail(info: PluginInfo, message: str) -> None:
        message = "; ".join(line.strip() for line in message.splitlines() if line.strip())  # one line
        info.status, info.error = "failed", message
        if strict:
            raise PluginError(message)
        if not _in_worker_process():  # the parent process has already said it once
            print(f"retrofit: warning: {message} (disable it with {DISABLE_ENV}={info.name})", file=sys.stderr)

    for name, module_name in BUILTINS.items():
        info = PluginInfo(name=name, distribution="retrofit-core", version=_core_version())
        infos.append(info)
        if name in disabled:
            info.status = "disabled"
            continue
        manager.register(importlib.import_module(module_name), name=name)

    for entry_point in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        dist = entry_point.dist
        info = PluginInfo(name=entry_point.name, distribution=dist.name if dist else "?",
                          version=dist.version if dist else "?")
        infos.append(info)
        if info.name in disabled or info.distribution in disabled:
            info.status = "disabled"
            continue
        if manager.get_plugin(info.name) is not None:
            fail(info, f"plugin name {info.name!r} of {info.distribution} is already taken by another plugin")
            continue
        try:
            started = time.perf_counter()
            plugin = entry_point.load()
            seconds = time.perf_counter() - started
            if seconds > slow and not _in_worker_process():
                print(f"retrofit: warning: plugin {info.name!r} from {info.distribution} took {seconds:.1f} s to "
                      f"import, which every command and worker pays: import heavy modules inside the hooks that "
                      f"need them", file=sys.stderr)
            manager.register(plugin, name=info.name)
        except Exception as error:  # any import-time failure must not take the CLI down
            if manager.get_plugin(info.name) is not None:
                manager.unregister(name=info.name)
            fail(info, f"plugin {info.name!r} from {info.distribution} {info.version} failed to load: "
                       f"{type(error).__name__}: {error}")

    for plugin in extra:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        try:
            manager.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as error:
            raise PluginError(f"cannot register plugin {name!r}: {error}") from None
        infos.append(PluginInfo(name=name, distribution="(registered in code)", version=""))

    try:
        manager.check_pending()  # a misspelled hook name fails loudly
    except pluggy.PluginValidationError as error:
        culprit = next((i for i in infos if i.status == "loaded" and manager.get_plugin(i.name) is error.plugin), None)
        who = (f"plugin {culprit.name!r} from {culprit.distribution} {culprit.version}".rstrip() if culprit
               else "a plugin")
        unknown = str(error).split(" in plugin ")[0]
        raise PluginError(f"{who} implements an {unknown}: no such retrofit hook (misspelled?)") from None

    domains = _collect_domains(manager, {info.name: info for info in infos}, fail)
    for info in infos:
        plugin = manager.get_plugin(info.name) if info.status == "loaded" else None
        if plugin is not None:
            info.hooks = sorted(caller.name for caller in manager.get_hookcallers(plugin) or [])
    return Plugins(manager, infos, domains)


def _collect_domains(manager: pluggy.PluginManager, infos: dict[str, PluginInfo],
                     fail: Callable[[PluginInfo, str], None]) -> dict[str, Domain]:
    """Call each plugin's ``retrofit_register_domains`` separately, to know who declared what."""
    domains: dict[str, Domain] = {}
    for impl in manager.hook.retrofit_register_domains.get_hookimpls():
        info = infos.get(impl.plugin_name) or PluginInfo(impl.plugin_name, "?", "?")

        def register(domain: Domain, _info: PluginInfo = info) -> None:
            if not isinstance(domain, Domain):
                raise PluginError(f"register() expects a retrofit.Domain, got {type(domain).__name__}")
            if domain.name in RESERVED_DOMAIN_NAMES:
                raise PluginError(f"domain name {domain.name!r} is reserved by retrofit itself")
            for problem in domain.problems():
                raise PluginError(f"domain {domain.name!r}: {problem}")
            if domain.name in domains:
                other = next((i for i in infos.values() if domain.name in i.domains), None)
                raise PluginError(f"domain {domain.name!r} is declared twice: by {_info.distribution} and by "
                                  f"{other.distribution if other else 'another plugin'}")
            domains[domain.name] = domain
            _info.domains.append(domain.name)

        try:
            impl.function(register=register)
        except Exception as error:
            # A failed plugin takes no part: drop what it declared and stop asking its hooks,
            # or it could still answer (firstresult) for a domain another plugin owns.
            for name in info.domains:
                domains.pop(name, None)
            info.domains.clear()
            if manager.get_plugin(impl.plugin_name) is not None:
                manager.unregister(name=impl.plugin_name)
            fail(info, f"plugin {info.name!r} from {info.distribution} raised in retrofit_register_domains: "
                       f"{type(error).__name__}: {error}")
    return domains


def _in_worker_process() -> bool:
    """Whether this is a worker process started by ``multiprocessing`` (which reloads plugins)."""
    multiprocessing = sys.modules.get("multiprocessing")
    return multiprocessing is not None and multiprocessing.parent_process() is not None


def _core_version() -> str:
    from retrofit import __version__

    return __version__
