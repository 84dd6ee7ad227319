"""The run directory: everything a run knows, written so that a crash loses nothing finished.

::

    RUN_DIR/
      config.toml        the resolved configuration (what `--resume` reuses)
      history.jsonl      one line per train evaluation, in the order told to the optimiser
      validation.jsonl   one line per validation re-score
      reevaluations.jsonl  extra train evaluations of top candidates (noisy objectives)
      checkpoints.jsonl  best train and validation loss at every checkpoint (the overfitting trace)
      summary.json       key figures; rewritten at every checkpoint and at the end

The optimiser's state is the history itself: on resume the engine rebuilds the optimiser
with the same seed and replays every recorded result, which restores it exactly (even for
optimisers nevergrad cannot dump) and tells it which candidates were still in flight.

Lines are appended with one ``write`` and an ``fsync``; whole files are replaced atomically
(temporary file, ``fsync``, rename). A line cut short by a crash is dropped on reading: that
evaluation had not finished being recorded, so it runs again.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tomli_w

from retrofit.config import Config
from retrofit.errors import UsageError

CONFIG = "config.toml"
HISTORY = "history.jsonl"
VALIDATION = "validation.jsonl"
REEVALUATIONS = "reevaluations.jsonl"
CHECKPOINTS = "checkpoints.jsonl"
SUMMARY = "summary.json"


def atomic_write(path: Path, data: str) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never half."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class RunRecord:
    """Reads and writes one run directory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # -- creating and opening --------------------------------------------------------------
    @classmethod
    def create(cls, config: Config, out: Path | None = None) -> RunRecord:
        """Make a new run directory (``out``, or a fresh one under ``run.runs_dir``)."""
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            parent = Path(config.run.runs_dir)
            out = parent / f"{config.domain}-{stamp}"
            suffix = 1
            while out.exists():
                suffix += 1
                out = parent / f"{config.domain}-{stamp}-{suffix}"
        out = Path(out)
        if out.exists() and any(out.iterdir()):
            raise UsageError(f"run directory {out} already exists and is not empty (use --resume {out} to continue it)")
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as error:
            raise UsageError(f"cannot write run directory {out}: {error.strerror or error}") from None
        record = cls(out)
        atomic_write(record.path / CONFIG, tomli_w.dumps(config.as_toml_dict()))
        return record

    @classmethod
    def open(cls, path: Path) -> RunRecord:
        """An existing run directory, checked to be one."""
        record = cls(Path(path))
        if not (record.path / CONFIG).is_file():
            raise UsageError(f"{path} is not a retrofit run directory (no {CONFIG})")
        return record

    # -- history -------------------------------------------------------------------------
    def append(self, name: str, entry: dict[str, Any]) -> None:
        """Append one JSON line durably."""
        line = json.dumps(entry, separators=(",", ":"), allow_nan=False) + "\n"
        with open(self.path / name, "a", encoding="utf-8") as stream:
            stream.write(line)
            stream.flush()
            os.fsync(stream.fileno())

    def read_lines(self, name: str) -> list[dict[str, Any]]:
        """All complete lines of a JSONL file; a torn last line is dropped with a warning."""
        path = self.path / name
        if not path.exists():
            return []
        entries: list[dict[str, Any]] = []
        raw_lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        for number, raw in enumerate(raw_lines, start=1):
            try:
                if not raw.endswith("\n"):
                    raise ValueError("no newline")
                entries.append(json.loads(raw))
            except ValueError:
                if number == len(raw_lines):  # the crash happened while writing it
                    print(f"retrofit: warning: dropping an incomplete last line of {path}", file=sys.stderr)
                    self._truncate_to(path, entries_bytes=sum(len(r.encode()) for r in raw_lines[:-1]))
                    break
                raise UsageError(f"{path}:{number} is corrupt (not JSON); remove that line and what follows "
                                 f"to resume from the last good evaluation") from None
        return entries

    @staticmethod
    def _truncate_to(path: Path, entries_bytes: int) -> None:
        with open(path, "r+b") as stream:
            stream.truncate(entries_bytes)

    # -- summary -------------------------------------------------------------------------
    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write(self.path / SUMMARY, json.dumps(summary, indent=2, allow_nan=False) + "\n")

    def read_summary(self) -> dict[str, Any] | None:
        path = self.path / SUMMARY
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise UsageError(f"{path} is corrupt (not JSON)") from None
