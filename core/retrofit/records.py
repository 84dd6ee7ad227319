"""The run directory: everything a run knows, written so that a crash loses nothing finished.

::

    RUN_DIR/
      config.toml        the resolved configuration (what `--resume` reuses)
      history.jsonl      one line per train evaluation, in the order told to the optimiser;
                         ``attempts`` > 1 on a line means workers died running it and the
                         executor (dask) ran it again elsewhere (older lines lack it: read as 1)
      validation.jsonl   one line per validation re-score
      reevaluations.jsonl  extra train evaluations of top candidates (noisy objectives)
      checkpoints.jsonl  best train and validation loss at every checkpoint (the overfitting trace)
      summary.json       key figures; rewritten at every checkpoint and at the end

The optimiser's state is the history itself: on resume the engine rebuilds the optimiser
with the same seed and replays every recorded result, which restores it exactly (even for
optimisers nevergrad cannot dump) and tells it which candidates were still in flight.

Each line is handed to the operating system with one ``write`` before the optimiser hears of
it, so a crash of the process (``kill -9``, a segfault, an out-of-memory kill) loses nothing
recorded. Surviving a crash of the *machine* also needs an ``fsync``; at 1.5-7 ms a call on
these VMs it cost more than the rest of the framework per evaluation, so a background thread
fsyncs appended files in batches, and every summary written (checkpoints, the end of a run)
waits for it. Whole files are replaced atomically (temporary file, ``fsync``, rename). A line cut short by a crash is dropped on reading: that
evaluation had not finished being recorded, so it runs again. A corrupt line before the last
one is refused on resume; ``--resume DIR --repair`` cuts the file there (keeping the original
as ``FILE.corrupt``) and the evaluations cut are run again. A write that fails (disk full, a
directory made read-only) stops the run with :class:`RunFailed`; what was written before stays
valid, so the run resumes once the disk has room (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import tomli_w

from retrofit.config import Config, read_toml
from retrofit.errors import RunFailed, UsageError

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


class _BackgroundSync:
    """fsyncs files in a daemon thread, batching requests that arrive while it works.

    ``fsync`` acts on the file, whichever descriptor wrote it, so the thread opens its own. The
    first error is kept and raised by :meth:`wait` (and by the next append), naming the file.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._pending: set[Path] = set()
        self._busy = False
        self._thread: threading.Thread | None = None
        self.error: tuple[Path, OSError] | None = None

    def request(self, path: Path) -> None:
        with self._condition:
            self._pending.add(path)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="retrofit-fsync", daemon=True)
                self._thread.start()
            self._condition.notify_all()

    def wait(self) -> None:
        """Return once every file requested so far is on disk."""
        with self._condition:
            while self._pending or self._busy:
                self._condition.wait()

    def _work(self) -> None:
        while True:
            with self._condition:
                while not self._pending:
                    self._condition.wait()
                batch, self._pending, self._busy = self._pending, set(), True
            for path in batch:
                try:
                    descriptor = os.open(path, os.O_RDONLY)
                    try:
                        os.fsync(descriptor)
                    finally:
                        os.close(descriptor)
                except OSError as error:
                    self.error = self.error or (path, error)
            with self._condition:
                self._busy = False
                self._condition.notify_all()


class RunRecord:
    """Reads and writes one run directory."""

    def __init__(self, path: Path, repair: bool = False) -> None:
        self.path = Path(path)
        self.repair = repair  # cut corrupt record files at their first bad line instead of refusing
        self._sync = _BackgroundSync()

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
        if out.exists() and not out.is_dir():
            raise UsageError(f"cannot write run directory {out}: it is a file, not a directory")
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
        try:
            atomic_write(record.path / CONFIG, tomli_w.dumps(config.as_toml_dict()))
        except OSError as error:  # e.g. a disk already full: nothing has run yet
            raise UsageError(f"cannot write run directory {out}: {error.strerror or error}") from None
        return record

    @classmethod
    def open(cls, path: Path, repair: bool = False) -> RunRecord:
        """An existing run directory, checked to be one (``repair``: see :meth:`read_lines`)."""
        record = cls(Path(path), repair=repair)
        if not (record.path / CONFIG).is_file():
            raise UsageError(f"{path} is not a retrofit run directory (no {CONFIG})")
        # a cut-short config would resolve to defaults and replay the history under other settings
        table = read_toml(record.path / CONFIG)  # unreadable or not TOML: a ConfigError naming it
        run = table.get("run")
        missing = ("[run]" if not isinstance(run, dict) else
                   next((f"run.{key}" for key in ("budget", "seed", "optimizer") if key not in run), None)
                   or (None if set(table) - {"run", "objective", "constraints"} else "the domain's section"))
        if missing:
            raise UsageError(f"{record.path / CONFIG} is incomplete (no {missing}): restore the settings the run "
                             f"was started with to resume it")
        return record

    # -- history -------------------------------------------------------------------------
    def append(self, name: str, entry: dict[str, Any]) -> None:
        """Append one JSON line: with the operating system when this returns, on disk soon after
        (see :meth:`sync`)."""
        self._raise_sync_error()
        line = json.dumps(entry, separators=(",", ":"), allow_nan=False) + "\n"
        try:
            with open(self.path / name, "a", encoding="utf-8") as stream:
                stream.write(line)
        except OSError as error:  # a part-written line reads as a torn last line: dropped, re-run
            raise self._write_failed(self.path / name, error) from None
        self._sync.request(self.path / name)

    def sync(self) -> None:
        """Wait until every line appended so far is on disk (machine-crash safe)."""
        self._sync.wait()
        self._raise_sync_error()

    def _raise_sync_error(self) -> None:
        if self._sync.error is not None:
            path, error = self._sync.error
            raise self._write_failed(path, error)

    def _write_failed(self, path: Path, error: OSError) -> RunFailed:
        return RunFailed(f"cannot write {path}: {error.strerror or error}; everything recorded before is intact: "
                         f"free space (or fix the directory) and continue with --resume {self.path}")

    def read_lines(self, name: str, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """All complete lines of a JSONL file; a torn last line is dropped with a warning. A line
        that is not a JSON object holding the ``required`` keys is corrupt."""
        path = self.path / name
        if not path.exists():
            return []
        entries: list[dict[str, Any]] = []
        # bytes: invalid UTF-8 is a corrupt line, not a crash (and a stray \r splits one: corrupt too)
        raw_lines = path.read_bytes().splitlines(keepends=True)
        for number, raw in enumerate(raw_lines, start=1):
            try:
                if not raw.endswith(b"\n"):
                    raise ValueError("no newline")
                entry = json.loads(raw)
                if not isinstance(entry, dict) or any(key not in entry for key in required):
                    raise ValueError("not a record")
                entries.append(entry)
            except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
                good_bytes = sum(len(r) for r in raw_lines[:number - 1])
                if number == len(raw_lines):  # the crash happened while writing it
                    print(f"retrofit: warning: dropping an incomplete last line of {path}", file=sys.stderr)
                    self._truncate_to(path, entries_bytes=good_bytes)
                    break
                if self.repair:
                    self._cut(path, number, good_bytes, len(raw_lines) - number + 1)
                    break
                raise UsageError(f"{path}:{number} is corrupt (not a JSON record); resume with --repair to cut the "
                                 f"file there (the original is kept as {path.name}.corrupt) and re-run the "
                                 f"{len(raw_lines) - number + 1} line(s) cut") from None
        return entries

    @staticmethod
    def _cut(path: Path, number: int, good_bytes: int, dropped: int) -> None:
        """Keep the lines before line ``number``; the whole original goes to ``FILE.corrupt``."""
        backup = path.with_name(path.name + ".corrupt")
        shutil.copyfile(path, backup)
        RunRecord._truncate_to(path, entries_bytes=good_bytes)
        print(f"retrofit: warning: {path}:{number} is corrupt: cut {dropped} line(s) from there on "
              f"(original kept as {backup.name}); they run again", file=sys.stderr)

    @staticmethod
    def _truncate_to(path: Path, entries_bytes: int) -> None:
        with open(path, "r+b") as stream:
            stream.truncate(entries_bytes)

    # -- summary -------------------------------------------------------------------------
    def write_summary(self, summary: dict[str, Any]) -> None:
        self.sync()  # a summary on disk never describes lines that are not
        try:
            atomic_write(self.path / SUMMARY, json.dumps(summary, indent=2, allow_nan=False) + "\n")
        except OSError as error:  # the previous summary.json is still whole (atomic replace)
            raise self._write_failed(self.path / SUMMARY, error) from None

    def read_summary(self) -> dict[str, Any] | None:
        """The summary, or ``None`` when there is none yet. It is derived from the other files,
        so ``repair`` moves a corrupt one aside (the engine rewrites it)."""
        path = self.path / SUMMARY
        if not path.exists():
            return None
        try:
            summary = json.loads(path.read_bytes())
            if not isinstance(summary, dict):
                raise ValueError("not a JSON object")
            return summary
        except (ValueError, RecursionError):
            if self.repair:
                path.replace(path.with_name(path.name + ".corrupt"))
                print(f"retrofit: warning: {path} is corrupt: moved to {path.name}.corrupt (rebuilt from the history)",
                      file=sys.stderr)
                return None
            raise UsageError(f"{path} is corrupt (not a JSON object); resume with --repair to rebuild it from the "
                             f"history") from None
