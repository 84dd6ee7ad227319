"""The demo dataset: procedurally rendered SHIFTED-domain scenes, made once and cached.

Rendering is deterministic, so the cache key is the settings, count and seed; several worker
processes may ask at once, so each renders into a private folder and the first one to rename
it into place wins.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .scenes import SHIFTED, write_dataset


def cache_root() -> Path:
    """``$RETROFIT_CACHE`` or ``~/.cache/retrofit``."""
    return Path(os.environ.get("RETROFIT_CACHE") or Path.home() / ".cache" / "retrofit")


def demo_dataset(count: int, seed: int) -> Path:
    """The folder of ``count`` SHIFTED scenes rendered from ``seed`` (rendered on first use)."""
    key = hashlib.sha256(f"{SHIFTED!r}|{count}|{seed}".encode()).hexdigest()[:12]
    final = cache_root() / "depth" / f"shifted-{count}-{seed}-{key}"
    if (final / "dataset.toml").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=final.parent, prefix=".rendering-"))
    try:
        write_dataset(scratch / "data", SHIFTED, count=count, seed=seed)
        try:
            os.rename(scratch / "data", final)
        except OSError:  # another process finished first: its copy is identical
            if not (final / "dataset.toml").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final
