"""Pick parameters or submodules of an ``nn.Module`` by exact name or glob.

Patterns use :func:`fnmatch.fnmatchcase`, so ``*`` also crosses dots: ``head.*.weight``
matches ``head.4.weight`` and ``head.block.0.weight``. A name that exists exactly is taken
as is, even if it contains glob characters.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

from torch import Tensor, nn

from retrofit.errors import UsageError

_GLOB_CHARS = frozenset("*?[")


def _patterns(patterns: str | Sequence[str]) -> list[str]:
    if isinstance(patterns, str):
        return [patterns]
    patterns = list(patterns)
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise UsageError(f"expected a name pattern or a list of them, got {patterns!r}")
    return patterns


def _no_match(pattern: str, what: str, names: Sequence[str]) -> UsageError:
    close = difflib.get_close_matches(pattern, names, n=5, cutoff=0.5)
    if close:
        hint = f"close names: {', '.join(close)}"
    elif names:
        hint = f"names start with: {', '.join(names[:5])}"
    else:
        hint = f"the model has no {what}s"
    return UsageError(f"no {what} matches {pattern!r}; {hint}")


def _select(items: Iterable[tuple[str, object]], patterns: str | Sequence[str], what: str) -> list[tuple[str, object]]:
    # remove_duplicate=False listings give tied/shared objects under every alias, so any alias
    # selects them; each object is returned once, under the first name that matched.
    items = list(items)
    names = [name for name, _ in items]
    seen: set[int] = set()
    out: list[tuple[str, object]] = []
    for pattern in _patterns(patterns):
        if pattern in names:
            matches = [(n, o) for n, o in items if n == pattern]
        elif _GLOB_CHARS & set(pattern):
            # the root module is named "": never let a glob pick it up by accident
            matches = [(n, o) for n, o in items if n and fnmatchcase(n, pattern)]
        else:
            matches = []
        if not matches:
            raise _no_match(pattern, what, [n for n in names if n])
        for name, obj in matches:
            if id(obj) not in seen:
                seen.add(id(obj))
                out.append((name, obj))
    return out


def select_parameters(model: nn.Module, patterns: str | Sequence[str]) -> list[tuple[str, Tensor]]:
    """Parameters of ``model`` matching any of ``patterns`` as ``(name, parameter)`` pairs.

    Matches come in pattern order, then model order, each parameter once. A pattern that
    matches nothing raises :class:`~retrofit.errors.UsageError` naming it and close names.
    """
    return _select(model.named_parameters(remove_duplicate=False), patterns, "parameter")  # type: ignore[return-value]


def select_modules(model: nn.Module, patterns: str | Sequence[str]) -> list[tuple[str, nn.Module]]:
    """Submodules of ``model`` matching any of ``patterns`` as ``(name, module)`` pairs.

    Same rules as :func:`select_parameters`; the root module (name ``""``) is only selected
    by the exact pattern ``""``.
    """
    return _select(model.named_modules(remove_duplicate=False), patterns, "module")  # type: ignore[return-value]
