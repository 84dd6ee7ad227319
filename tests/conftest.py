"""Shared helpers: run the CLI in a subprocess or in-process, and make toy runs quickly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 240,
        check: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``retrofit ARGS`` as a user would (a separate process); optionally assert its exit code."""
    full_env = {**os.environ, "PYTHONHASHSEED": "0", **(env or {})}
    done = subprocess.run([sys.executable, "-m", "retrofit", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    if check is not None:
        assert done.returncode == check, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done


def history(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture
def toy_run(tmp_path: Path):
    """Run the toy domain through the engine in this process and return (summary, run_dir)."""
    from retrofit import executors
    from retrofit.config import resolve
    from retrofit.engine import Run
    from retrofit.records import RunRecord
    from retrofit.toy import DOMAIN

    counter = iter(range(1000))

    def run(**overrides: Any) -> tuple[dict[str, Any], Path]:
        dotted = {key if "." in key else f"run.{key}": value for key, value in overrides.items()}
        config = resolve(DOMAIN, None, {"run.executor": "serial", **dotted})
        record = RunRecord.create(config, tmp_path / f"run{next(counter)}")
        result = Run(config, DOMAIN, executors.create(config), record).execute()
        return result, record.path

    return run
