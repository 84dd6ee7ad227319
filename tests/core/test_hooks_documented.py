"""Every hook is documented in docs/hooks.md and exercised by a test (after datasette's meta-tests)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from retrofit import hookspecs

ROOT = Path(__file__).resolve().parents[2]
HOOKS_DOC = ROOT / "docs" / "hooks.md"
TESTS = ROOT / "tests"


def _specs() -> dict[str, inspect.Signature]:
    marker = f"{hookspecs.PROJECT}_spec"  # pluggy's attribute on functions marked @hookspec
    return {name: inspect.signature(function) for name, function in vars(hookspecs).items()
            if name.startswith("retrofit_") and callable(function) and hasattr(function, marker)}


def _options(name: str) -> dict:
    return getattr(getattr(hookspecs, name), f"{hookspecs.PROJECT}_spec")


SPECS = _specs()


def _sections() -> dict[str, str]:
    """Heading -> text up to the next heading of the same or a higher level."""
    lines = HOOKS_DOC.read_text(encoding="utf-8").splitlines()
    sections: dict[str, str] = {}
    in_code = False
    headings: list[tuple[int, int, str]] = []  # line, level, text
    for number, line in enumerate(lines):
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"(#+)\s+(.*)", line)):
            headings.append((number, len(match.group(1)), match.group(2)))
    for index, (number, level, text) in enumerate(headings):
        end = next((n for n, lvl, _ in headings[index + 1:] if lvl <= level), len(lines))
        sections[text] = "\n".join(lines[number:end])
    return sections


def _section_of(hook: str) -> str:
    found = [text for heading, text in _sections().items() if re.search(rf"\b{hook}\b", heading)]
    assert len(found) == 1, f"docs/hooks.md needs exactly one heading naming {hook}, found {len(found)}"
    return found[0]


def test_the_spec_module_is_read():
    assert len(SPECS) >= 8 and "retrofit_load_model" in SPECS and "retrofit_register_domains" in SPECS


@pytest.mark.parametrize("hook", sorted(SPECS))
def test_hook_is_documented_with_every_argument(hook):
    section = _section_of(hook)
    for parameter in SPECS[hook].parameters:
        assert re.search(rf"`[^`]*\b{parameter}\b[^`]*`", section), f"{hook}: argument {parameter} not documented"
    heading = section.splitlines()[0]
    assert f"{hook}({', '.join(SPECS[hook].parameters)})" in heading, f"{hook}: heading must show the signature"
    kind = re.search(r"\*\*Kind:\*\*\s*([^\n]*)", section)
    assert kind, f"{hook}: no **Kind:** line"
    assert ("firstresult" in kind.group(1)) == bool(_options(hook).get("firstresult")), f"{hook}: wrong kind"
    assert "**Called:**" in section and "**Return:**" in section
    assert "@hookimpl" in section, f"{hook}: needs an example implementation"
    assert re.search(rf"def {hook}\(", section), f"{hook}: the example must implement it"


@pytest.mark.parametrize("hook", sorted(SPECS))
def test_hook_examples_use_only_arguments_of_the_spec_and_no_defaults(hook):
    for match in re.finditer(rf"def {hook}\(([^)]*)\)", _section_of(hook)):
        arguments = [a.strip() for a in match.group(1).split(",") if a.strip()]
        assert arguments and set(arguments) <= set(SPECS[hook].parameters), (hook, arguments)
        assert not any("=" in a for a in arguments), f"{hook}: hookimpl parameters take no defaults"


def test_no_documented_hook_is_missing_from_the_specs():
    documented = set(re.findall(r"^#+ .*?\b(retrofit_[a-z_]+)\b", HOOKS_DOC.read_text(encoding="utf-8"), re.MULTILINE))
    assert documented == set(SPECS)


def test_the_summary_table_lists_every_hook():
    table = _sections()["Rules for every hook"]
    for hook, signature in SPECS.items():
        assert f"`{hook}({', '.join(signature.parameters)})`" in table, hook


@pytest.mark.parametrize("hook", sorted(SPECS))
def test_hook_is_exercised_by_a_test(hook):
    this = Path(__file__).resolve()
    users = [path for path in TESTS.rglob("test_*.py")
             if path.resolve() != this and re.search(rf"\b{hook}\b", path.read_text(encoding="utf-8"))]
    assert users, f"no test other than {this.name} mentions {hook}"
