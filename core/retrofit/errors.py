"""The exceptions that map to retrofit's exit codes.

The CLI turns a :class:`UsageError` into one line on stderr and exit code 2, and a
:class:`RunFailed` into exit code 1. Anything else is a bug and shows a traceback.
"""

from __future__ import annotations


class RetrofitError(Exception):
    """Base class of every error retrofit raises on purpose."""


class UsageError(RetrofitError):
    """Bad input from the user: a config key, a path, an option, a plugin name. Exit code 2."""


class ConfigError(UsageError):
    """A configuration value is missing, unknown or of the wrong type; the message names the key."""


class PluginError(RetrofitError):
    """A plugin failed to load, or a hook returned something the core cannot use."""


class RunFailed(RetrofitError):
    """A run could not finish (not the user's input). Exit code 1."""
