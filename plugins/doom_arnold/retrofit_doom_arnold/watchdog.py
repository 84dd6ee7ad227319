"""Kill a process's ViZDoom engines when that process dies, however it dies.

An engine is a separate process that outlives its owner: after a ``kill -9`` of a pool worker
(a timeout, an out-of-memory kill) it keeps running, and it ignores SIGTERM (DESIGN.md; measured
again here). So the first :class:`game.Game` of each process starts this watchdog, a small child
in its own session (a Ctrl-C to the terminal does not reach it), which waits for the owner to
die, then kills every engine whose command line carries the owner's marker: each engine is
started with ``-config`` inside a temporary directory named ``retrofit_doom_<owner pid>_...``.

    python -m retrofit_doom_arnold.watchdog OWNER_PID

Imports nothing but the standard library: it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

POLL_SECONDS = 0.2
_started_for: int | None = None  # the pid the watchdog was started for (a forked child needs its own)


def marker(owner: int | None = None) -> str:
    """The prefix of the temporary directories of ``owner``'s engines."""
    return f"retrofit_doom_{os.getpid() if owner is None else owner}_"


def engine_processes() -> list[tuple[int, int, bytes]]:
    """Every live ViZDoom engine on this machine: (pid, parent pid, command line)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read()
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields[0] is the state (Z: a zombie, already dead), fields[1] the parent's pid
        if fields[0] != "Z" and os.path.basename(cmd.split(b"\0")[0]) == b"vizdoom":
            found.append((int(entry), int(fields[1]), cmd))
    return found


def engines_of(owner: int) -> list[int]:
    """Live ViZDoom engines started by ``owner``, found by their ``-config`` path."""
    needle = ("/" + marker(owner)).encode()
    return [pid for pid, _, cmd in engine_processes() if needle in cmd]


def sweep(owner: int) -> list[int]:
    """SIGKILL ``owner``'s engines (they ignore SIGTERM); returns their pids."""
    killed = engines_of(owner)
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return killed


def ensure_started() -> None:
    """Start this process's watchdog once (again in a forked child, which has a new pid)."""
    global _started_for
    if _started_for == os.getpid():
        return
    subprocess.Popen([sys.executable, "-m", "retrofit_doom_arnold.watchdog", str(os.getpid())],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True)
    _started_for = os.getpid()


def main(argv: list[str]) -> None:
    owner = int(argv[0])
    while os.getppid() == owner:  # once the owner is gone we are re-parented
        time.sleep(POLL_SECONDS)
    # the owner may have started an engine in its last instants: sweep twice
    sweep(owner)
    time.sleep(POLL_SECONDS)
    sweep(owner)


if __name__ == "__main__":
    main(sys.argv[1:])
