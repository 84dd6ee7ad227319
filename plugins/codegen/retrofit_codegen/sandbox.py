"""Run untrusted generated code in a contained child process, and classify what happened.

Design: a :class:`Sandbox` owns one warm *zygote*, a small interpreter started with a scrubbed
environment that has already imported the modules samples commonly use (and has no network
namespace where the OS allows). For each job the zygote forks a fresh child, which before
running a single line of the sample:

- starts a new session (its own process group, killed as a whole at the end);
- gets an empty temporary working directory, stdin from /dev/null, stdout and stderr into a
  pipe the zygote reads and caps, and no other open descriptor;
- gets rlimits: CPU time, address space, file size, process count, open files, no core dumps;
- drops to the unprivileged user ``nobody`` when running as root (so RLIMIT_NPROC binds, the
  host's processes cannot be signalled and root's files cannot be written);
- installs an audit hook refusing process creation, threads, signals to other processes,
  sockets, foreign-library calls through ctypes, rlimit changes, and writes, deletions or
  directory changes outside its working directory.

The zygote waits with a wall timeout, then kills the child's whole process group. A fresh
process per sample keeps samples independent (no shared caches, no leftover state); the fork
from a warm zygote keeps interpreter start-up off the critical path.

Jobs of mode ``"instructions"`` count the call's instructions under ``valgrind
--tool=callgrind``. The child is contained exactly as above (session, descriptors, rlimits,
scrubbed environment, empty directory) and then, still trusted code, replaces itself with
``valgrind --tool=callgrind ... python -s -S -P -B -c BOOT`` (the real interpreter binary). On
stdin (a memfd, replaced by /dev/null before the sample runs) come the runner's code (the
harness and audit hook of this file, compiled by the zygote) and the job; the new interpreter
imports those of the zygote's preloaded modules the program imports, drops to ``nobody``,
installs the same audit hook and only then runs the sample. Callgrind writes its profile to a
pipe the zygote reads (never to a file the sample could plant a symlink at, and the 1 MB
file-size limit stays on). The count of the call is the difference of two such runs, one
calling the entry point on ``perf_input`` and one doing everything else identically but not
the call (see :func:`_serve_instructions`).

This file also *is* the zygote: the host runs it as a script (``python -I sandbox.py``), so it
imports nothing from the package and only the standard library at module level.
"""

from __future__ import annotations

import json
import marshal
import os
import selectors
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Self

STATUSES = ("passed", "failed", "timeout", "memory", "crashed", "killed")
NOBODY = 65534
# Imported by the zygote before forking: a sample's `import` of these costs nothing, and works
# even when the sandbox user cannot read the interpreter's installation (e.g. under /root).
DEFAULT_PRELOAD = (
    "abc", "array", "ast", "base64", "binascii", "bisect", "calendar", "cmath", "collections",
    "collections.abc", "contextlib", "copy", "ctypes", "dataclasses", "datetime", "decimal", "difflib",
    "enum", "faulthandler", "fractions", "functools", "hashlib", "heapq", "io", "itertools", "json", "math",
    "multiprocessing", "multiprocessing.popen_fork", "encodings.idna", "numbers",
    "operator", "pprint", "queue", "random", "re", "statistics", "string", "struct", "textwrap",
    "time", "typing", "unicodedata", "zlib", "socket", "subprocess", "threading", "tempfile", "shutil",
)
# instruction counting: callgrind runs the interpreter ~20-50x slower and needs more address
# space (its own heap and translation cache), so those limits are scaled for "instructions" jobs
CALLGRIND_TIME_FACTOR = 20
CALLGRIND_MEMORY_FACTOR = 4
_CALLGRIND_FD = 4  # where callgrind writes its profile (a pipe to the zygote)
_CALLGRIND_CAP = 1 << 16  # the profile's header, which holds "summary:", is all that is kept
_CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0"}
_RESULT_FD = 3
_SIGNAL_STATUS = {signal.SIGXCPU: "timeout", signal.SIGSEGV: "crashed", signal.SIGBUS: "crashed",
                  signal.SIGILL: "crashed", signal.SIGFPE: "crashed", signal.SIGABRT: "crashed",
                  signal.SIGXFSZ: "killed"}


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sample's process.

    ``processes`` is RLIMIT_NPROC for the sandbox user (binding only for a non-root user, which
    is why the sandbox drops root to ``nobody``); threads count as processes, so 1 means the
    sample's own process only. ``drop_user`` switches that uid change off (root only).
    """

    cpu_seconds: float = 5.0
    memory_mb: int = 512
    wall_seconds: float = 10.0
    output_bytes: int = 64_000
    file_size_mb: int = 1
    processes: int = 1
    open_files: int = 64
    drop_user: bool = True

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "memory_mb", "wall_seconds", "output_bytes", "file_size_mb", "processes",
                     "open_files"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Job:
    """What one sandboxed process does.

    ``mode="check"`` runs the program, then ``test``'s ``check(entry_point)``, then (when
    ``perf_input`` is set) one call on the performance input whose result is digested so the
    caller can compare it with the reference's. ``mode="time"`` runs the program and times one
    call of the entry point on ``perf_input`` with ``time.perf_counter`` (the call only).
    ``mode="instructions"`` counts the instructions of that one call under callgrind
    (:attr:`Outcome.instructions`); run it with :func:`callgrind_limits` of the usual limits.
    """

    program: str
    entry_point: str
    test: str = ""
    perf_input: str = ""
    mode: str = "check"


@dataclass(frozen=True)
class Outcome:
    """What happened to one job; ``status`` is one of :data:`STATUSES`."""

    status: str
    failing_test: str | None = None
    detail: str = ""
    seconds: float | None = None  # the timed call (mode "time")
    digest: str | None = None  # digest of the result on perf_input
    output: str = ""  # the start of what the sample printed
    exit_code: int | None = None
    signal: int | None = None
    cpu_seconds: float | None = None
    wall_seconds: float | None = None
    instructions: int | None = None  # the call's instruction count (mode "instructions")


def valgrind_path() -> str | None:
    """The ``valgrind`` executable on PATH, or None when it is not installed."""
    import shutil

    return shutil.which("valgrind")


def callgrind_limits(limits: Limits) -> Limits:
    """``limits`` for one run under callgrind: CPU and wall time x20, address space x4, the rest
    (file size, output, processes, open files, the uid drop) unchanged."""
    return replace(limits, cpu_seconds=limits.cpu_seconds * CALLGRIND_TIME_FACTOR,
                   wall_seconds=limits.wall_seconds * CALLGRIND_TIME_FACTOR,
                   memory_mb=limits.memory_mb * CALLGRIND_MEMORY_FACTOR)


class SandboxError(RuntimeError):
    """The zygote itself could not be started (not a sample's fault)."""


# -- host side ------------------------------------------------------------------------------
@dataclass
class Sandbox:
    """A warm zygote that runs :class:`Job` s one at a time, each in a fresh contained process.

    Not thread-safe: use one per thread (the judge keeps a pool). A zygote that dies (which no
    sample should be able to cause) is restarted, and the job is reported ``killed``.
    """

    limits: Limits = field(default_factory=Limits)
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    python: str = sys.executable
    isolation: tuple[str, ...] = ()  # what the zygote could set up, e.g. ("rlimits", "audit", "netns", "user")
    valgrind: str | None = None  # for "instructions" jobs; default: valgrind on PATH when the zygote starts

    def __post_init__(self) -> None:
        self._process: Any = None
        self._buffer = b""
        self._base: str | None = None

    def start(self) -> None:
        """Start the zygote (also done by the first :meth:`run`)."""
        import subprocess
        import tempfile

        if self._process is not None:
            return
        self._base = tempfile.mkdtemp(prefix="retrofit-sandbox-")
        os.chmod(self._base, 0o711)  # the sandbox user may enter its own directory, not list others
        self._log = open(os.path.join(self._base, "zygote.log"), "w+b")  # noqa: SIM115 (closed in close())
        self._valgrind = self.valgrind or valgrind_path()
        # the real interpreter (a venv's python is a link, a pyenv shim a script): callgrind must
        # count the interpreter itself, and the zygote's scrubbed PATH could not find it anyway
        config = json.dumps({"base": self._base, "preload": list(self.preload), "valgrind": self._valgrind,
                             "python": os.path.realpath(self.python)})
        self._process = subprocess.Popen(
            [self.python, "-I", "-B", os.path.abspath(__file__), config], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, cwd=self._base, env=dict(_CHILD_ENV), close_fds=True,
            start_new_session=True)
        hello = self._read_line(deadline=time.monotonic() + 60)
        if hello is None:
            self._log.seek(0)
            error = self._log.read().decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
            self.close()
            raise SandboxError(f"the sandbox zygote did not start: {error[0]}")
        self.isolation = tuple(json.loads(hello)["isolation"])

    def run(self, job: Job, limits: Limits | None = None) -> Outcome:
        """Run ``job`` in a fresh contained process under ``limits`` (default: the sandbox's)."""
        limits = limits or self.limits
        self.start()
        if job.mode == "instructions" and not self._valgrind:
            raise SandboxError("counting instructions needs valgrind, which is not installed")
        request = json.dumps({"job": asdict(job), "limits": asdict(limits)}).encode() + b"\n"
        started = time.monotonic()
        runs = 2 if job.mode == "instructions" else 1  # with and without the call, each under the wall limit
        try:
            self._process.stdin.write(request)
            self._process.stdin.flush()
            line = self._read_line(deadline=started + runs * limits.wall_seconds + 30)
        except (BrokenPipeError, OSError):
            line = None
        if line is None:  # the zygote died or hung: not expected, but never take the host down with it
            self._kill()
            return Outcome("killed", detail="the sandbox worker died; restarted",
                           wall_seconds=time.monotonic() - started)
        return Outcome(**json.loads(line))

    def _read_line(self, deadline: float) -> bytes | None:
        stdout = self._process.stdout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with selectors.DefaultSelector() as selector:
                selector.register(stdout, selectors.EVENT_READ)
                if not selector.select(remaining):
                    continue
            chunk = os.read(stdout.fileno(), 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def _kill(self) -> None:
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self._process = None
        self._buffer = b""

    def close(self) -> None:
        """Stop the zygote and remove its directory."""
        import shutil

        if self._process is not None:
            try:
                self._process.stdin.close()  # the zygote exits at end of input
                self._process.wait(timeout=5)
            except Exception:  # noqa: BLE001, S110 (closing must not fail)
                pass
            self._kill()
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 (interpreter shutdown)
            pass


# -- zygote side ----------------------------------------------------------------------------
def _zygote(config: dict[str, Any]) -> None:
    """Serve jobs: one JSON request per line on stdin, one JSON outcome per line on stdout."""
    import importlib

    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)  # stray prints can never corrupt the protocol
    isolation = ["process", "session", "rlimits", "audit", "workdir", "env"]
    for name in ("resource", "tempfile", "traceback", "builtins", "hashlib", "stat", *config["preload"]):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    if os.geteuid() == 0:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(0x40000000) == 0:  # CLONE_NEWNET: the zygote and its children have no network
            isolation.append("netns")
    # hand the sandbox user (nobody) its parent directory; children get their own below it
    proto_out.write(json.dumps({"isolation": isolation + (["user"] if os.geteuid() == 0 else [])}).encode() + b"\n")
    proto_out.flush()
    for line in proto_in:
        request = json.loads(line)
        outcome = _serve(Job(**request["job"]), Limits(**request["limits"]), config)
        proto_out.write(json.dumps(asdict(outcome)).encode() + b"\n")
        proto_out.flush()


def _serve(job: Job, limits: Limits, config: dict[str, Any]) -> Outcome:
    """Run one job; an "instructions" job is two callgrind runs (see :func:`_serve_instructions`)."""
    if job.mode == "instructions":
        return _serve_instructions(job, limits, config)
    return _serve_one(job, limits, config["base"])[0]


def _serve_instructions(job: Job, limits: Limits, config: dict[str, Any]) -> Outcome:
    """The instructions of the call on ``perf_input``: (setup + call) minus (setup alone).

    Both runs execute the same interpreter, preload, harness, program and ``perf_input``
    construction, and leave through ``os._exit`` keeping the result alive (no deallocation or
    finalisation counted); only the call differs, so the difference is the call. Callgrind
    counts are deterministic for a fixed PYTHONHASHSEED (the zygote's environment fixes it).
    ``--toggle-collect`` on a marker function would need one run instead of two, but a sample
    could enter the same C function itself (toggling collection off for its own work), and
    client requests need ctypes, which the audit hook refuses.
    """
    if not config.get("valgrind"):
        return Outcome("crashed", detail="valgrind is not available to the sandbox")
    counts: list[int] = []
    first: Outcome | None = None
    for call in (True, False):  # the measured run first: a sample that fails there costs one run
        outcome, count = _serve_one(job, limits, config["base"], {**config, "call": call, "runner": _runner()})
        if outcome.status != "passed":
            return replace(outcome, detail=f"{outcome.detail} (under callgrind)".strip())
        if count is None:
            return replace(outcome, status="crashed", detail="callgrind reported no instruction count")
        counts.append(count)
        if first is None:
            first = outcome
        else:
            first = replace(first, cpu_seconds=round((first.cpu_seconds or 0) + (outcome.cpu_seconds or 0), 4),
                            wall_seconds=round((first.wall_seconds or 0) + (outcome.wall_seconds or 0), 4))
    assert first is not None
    return replace(first, instructions=max(counts[0] - counts[1], 0))


def _serve_one(job: Job, limits: Limits, base: str, callgrind: dict[str, Any] | None = None,
               ) -> tuple[Outcome, int | None]:
    """Fork one child for ``job``, watch it under the wall timeout, classify the result; with
    ``callgrind`` the child execs the callgrind runner, and the count it reports comes back."""
    import shutil
    import tempfile

    drop = limits.drop_user and os.geteuid() == 0
    workdir = tempfile.mkdtemp(dir=base, prefix="job-")
    if drop:
        os.chown(workdir, NOBODY, NOBODY)
    out_r, out_w = os.pipe()
    res_r, res_w = os.pipe()
    cg_r, cg_w = os.pipe() if callgrind is not None else (-1, -1)
    if drop and cg_w >= 0:  # callgrind reopens it through /proc after the runner drops to nobody
        os.fchown(cg_w, NOBODY, NOBODY)
    nonce = os.urandom(8).hex()
    sys.stdout.flush()
    sys.stderr.flush()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(out_r)
            os.close(res_r)
            if cg_r >= 0:
                os.close(cg_r)
            _child(job, limits, workdir, out_w, res_w, nonce, drop, callgrind, cg_w)
        except BaseException:  # noqa: BLE001 (a harness bug: say so on the captured stderr)
            import traceback

            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except BaseException:  # noqa: BLE001, S110 (a sample may have closed them)
                    pass
            os._exit(70)
    os.close(out_w)
    os.close(res_w)
    if cg_w >= 0:
        os.close(cg_w)
    output, result, why, profile = _watch(pid, out_r, res_r, limits, started, cg_r)
    try:
        os.killpg(pid, signal.SIGKILL)  # anything the sample left behind in its group
    except (ProcessLookupError, PermissionError):
        pass
    if why:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, status, usage = os.wait4(pid, 0)
    wall = time.monotonic() - started
    shutil.rmtree(workdir, ignore_errors=True)
    return _classify(status, usage, output, result, why, nonce, limits, wall), _profile_count(profile)


def _profile_count(profile: bytes) -> int | None:
    """The total ``Ir`` of a callgrind profile: its header's ``summary:`` line (events: Ir only)."""
    events = None
    for line in profile.splitlines():
        if line.startswith(b"events:"):
            events = line.split()[1:]
        elif line.startswith(b"summary:") and events and events[0] == b"Ir":
            fields = line.split()
            return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
    return None


def _watch(pid: int, out_r: int, res_r: int, limits: Limits, started: float,
           cg_r: int = -1) -> tuple[bytes, bytes, str, bytes]:
    """Read the child's output (capped), result and callgrind profile (its head) until they all
    close or a limit is hit."""
    deadline = started + limits.wall_seconds
    output, result, profile, why = bytearray(), bytearray(), bytearray(), ""
    selector = selectors.DefaultSelector()
    selector.register(out_r, selectors.EVENT_READ, "out")
    selector.register(res_r, selectors.EVENT_READ, "res")
    if cg_r >= 0:
        selector.register(cg_r, selectors.EVENT_READ, "cg")
    try:
        pidfd = os.pidfd_open(pid)
        selector.register(pidfd, selectors.EVENT_READ, "exit")
    except (AttributeError, OSError):
        pidfd = -1
    open_pipes, exited, drain_until = 3 if cg_r >= 0 else 2, False, None
    while open_pipes and not why:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            why = "wall"
            break
        events = selector.select(min(remaining, 0.05) if exited else min(remaining, 0.5) if pidfd < 0 else remaining)
        for key, _ in events:
            if key.data == "exit":
                exited = True
                selector.unregister(pidfd)
                continue
            chunk = os.read(key.fd, 1 << 16)
            if not chunk:
                selector.unregister(key.fd)
                open_pipes -= 1
            elif key.data == "out":
                output += chunk
                if len(output) > limits.output_bytes:
                    why = "output"
            elif key.data == "cg":  # keep the header, drain the rest (a profile is a few MB)
                profile += chunk[:max(0, _CALLGRIND_CAP - len(profile))]
            else:
                result += chunk
                if len(result) > 1 << 20:  # a verdict is small: the sample is writing to it
                    why = "output"
        if exited and open_pipes:
            # the child is gone but something keeps a pipe open: drain briefly, then stop reading
            if drain_until is None:
                drain_until = time.monotonic() + 0.2
            elif time.monotonic() > drain_until:
                break
    if not why:  # pipes closed: wait for the exit itself under the same deadline
        while pidfd >= 0 and not exited:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                why = "wall"
                break
            exited = bool(selector.select(remaining))
    selector.close()
    for fd in (out_r, res_r, cg_r, pidfd):
        if fd >= 0:
            os.close(fd)
    return bytes(output), bytes(result), why, bytes(profile)


def _classify(status: int, usage: Any, output: bytes, result: bytes, why: str, nonce: str, limits: Limits,
              wall: float) -> Outcome:
    cpu = usage.ru_utime + usage.ru_stime
    printed = output[:2000].decode("utf-8", errors="replace")
    common: dict[str, Any] = {"output": printed, "cpu_seconds": round(cpu, 4), "wall_seconds": round(wall, 4),
                              "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                              "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}
    if why == "wall":
        return Outcome("timeout", detail=f"wall time over {limits.wall_seconds:g} s", **common)
    if why == "output":
        return Outcome("killed", detail=f"output over {limits.output_bytes} bytes", **common)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        if number == signal.SIGKILL and cpu >= limits.cpu_seconds:  # the hard CPU limit
            return Outcome("timeout", detail=f"CPU time over {limits.cpu_seconds:g} s", **common)
        kind = _SIGNAL_STATUS.get(number, "killed")
        if kind == "timeout":
            return Outcome(kind, detail=f"CPU time over {limits.cpu_seconds:g} s ({name})", **common)
        extra = " (file size limit)" if number == signal.SIGXFSZ else ""
        return Outcome(kind, detail=f"killed by {name}{extra}", **common)
    code = os.WEXITSTATUS(status)
    prefix = nonce.encode() + b" "
    if code == 0 and result.startswith(prefix) and result.count(b"\n") == 1:
        try:
            verdict = json.loads(result[len(prefix):])
        except ValueError:
            verdict = None
        if isinstance(verdict, dict) and verdict.get("status") in STATUSES:
            return Outcome(status=verdict["status"], failing_test=verdict.get("failing_test"),
                           detail=verdict.get("detail", ""), seconds=verdict.get("seconds"),
                           digest=verdict.get("digest"), **common)
    return Outcome("crashed", detail=f"exited with status {code} before reporting a result", **common)


# -- the child ------------------------------------------------------------------------------
def _child(job: Job, limits: Limits, workdir: str, out_w: int, res_w: int, nonce: str, drop: bool,
           callgrind: dict[str, Any] | None = None, cg_w: int = -1) -> None:
    """Contain this process, run the job (or exec the callgrind runner), report on the result
    descriptor, exit."""
    import resource

    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    os.dup2(res_w, _RESULT_FD)
    last = _RESULT_FD
    if cg_w >= 0:
        os.dup2(cg_w, _CALLGRIND_FD)
        last = _CALLGRIND_FD
    os.closerange(last + 1, 1 << 16)  # protocol pipes, the log, everything else
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    os.chdir(workdir)
    cpu = max(1, int(limits.cpu_seconds + 0.999))
    memory = limits.memory_mb << 20
    for which, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_AS, (memory, memory)),
                         (resource.RLIMIT_CORE, (0, 0)), (resource.RLIMIT_NPROC, (limits.processes,) * 2),
                         (resource.RLIMIT_NOFILE, (limits.open_files,) * 2)):
        resource.setrlimit(which, value)
    # the callgrind runner's stdin is a memfd, which the file-size limit would count: written first
    stdin = _callgrind_stdin(job, callgrind, nonce, drop) if callgrind is not None else -1
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_mb << 20,) * 2)
    if callgrind is not None:
        _exec_callgrind(callgrind, workdir, stdin)
    if drop:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    os.environ.clear()
    os.environ.update(_CHILD_ENV)
    os.environ["HOME"] = os.environ["TMPDIR"] = workdir
    import tempfile

    tempfile.tempdir = workdir
    _report(job, nonce)


def _callgrind_stdin(job: Job, callgrind: dict[str, Any], nonce: str, drop: bool) -> int:
    """A memfd holding the runner's code and the job (what the runner reads on stdin)."""
    preload = set(callgrind["preload"])
    payload = marshal.dumps({"job": asdict(job), "nonce": nonce, "drop": drop, "call": callgrind["call"],
                             "preload": [name for name in _imported_modules(job.program) if name in preload]})
    stdin = os.memfd_create("retrofit-job", 0)
    data = len(callgrind["runner"]).to_bytes(8, "little") + callgrind["runner"] + payload
    written = 0
    while written < len(data):
        written += os.write(stdin, data[written:])
    os.lseek(stdin, 0, os.SEEK_SET)
    return stdin


def _exec_callgrind(callgrind: dict[str, Any], workdir: str, stdin: int) -> None:
    """Replace this contained child by the callgrind runner (never returns).

    Runs before any sample code, with every limit already set and the environment given
    explicitly (scrubbed; HOME is the empty working directory, so no .valgrindrc is read). The
    uid drop happens in the runner, after its imports: the interpreter may live where only
    root can read (e.g. under /root), exactly as for the zygote.
    """
    os.dup2(stdin, 0)
    os.close(stdin)
    import ctypes

    # the client's addresses under valgrind follow the randomised initial stack; id()-based
    # hashes (abc caches, sets of objects) then probe differently and move counts a little
    if ctypes.CDLL(None, use_errno=True).personality(0x0040000) == -1:  # ADDR_NO_RANDOMIZE
        raise OSError(ctypes.get_errno(), "personality(ADDR_NO_RANDOMIZE) failed")
    env = {**_CHILD_ENV, "HOME": workdir, "TMPDIR": workdir}
    argv = [callgrind["valgrind"], "--tool=callgrind", "-q", "--vgdb=no", "--trace-children=no",
            f"--callgrind-out-file=/proc/self/fd/{_CALLGRIND_FD}",
            # not -I: it implies -E, which ignores PYTHONHASHSEED, and random string hashes moved
            # a call's count by up to 8 %; the environment is ours, so -s -S -P -B isolate as well
            callgrind["python"], "-s", "-S", "-P", "-B", "-c", _BOOT]
    os.execve(callgrind["valgrind"], argv, env)


def _imported_modules(program: str) -> list[str]:
    """Modules ``program`` imports (statically, with their parent packages), in order."""
    import ast

    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []  # the sample fails in its own run
    names: list[str] = []
    for node in ast.walk(tree):
        found = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
        for name in found:
            parts = name.split(".")
            names.extend(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return list(dict.fromkeys(names))


# The runner's code: the parts of this file the callgrind run needs (not the dataclasses, typing
# or selectors, whose imports would cost every run ~100 M instructions), compiled by the zygote.
_RUNNER_PARTS = ("NOBODY", "_RESULT_FD", "_CHILD_ENV", "_KEEP", "_callgrind_runner", "_report", "_dumps", "_harness",
                 "_audit_hook", "_exception_verdict", "_test_line", "_canonical", "_digest")
# -c program of the callgrind run: stdin = 8-byte length, marshalled runner code, marshalled job
_BOOT = ("import marshal, os\nchunks = []\nwhile chunk := os.read(0, 1 << 20):\n    chunks.append(chunk)\n"
         "data = b''.join(chunks)\nsize = int.from_bytes(data[:8], 'little')\n"
         "namespace = {'__name__': 'retrofit_sandbox_runner'}\nexec(marshal.loads(data[8:8 + size]), namespace)\n"
         "del chunks, chunk\nnamespace['_callgrind_runner'](data[8 + size:])\n")


def _runner_code() -> bytes:
    """Marshalled code of :data:`_RUNNER_PARTS` (plus the modules they use)."""
    import ast

    with open(os.path.abspath(__file__), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    body: list[ast.stmt] = [*ast.parse("from __future__ import annotations\nimport marshal, os, sys, time\n").body]
    for node in tree.body:
        name = (node.name if isinstance(node, ast.FunctionDef) else node.target.id
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                else node.targets[0].id if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                else None)
        if name in _RUNNER_PARTS:
            body.append(node)
    return marshal.dumps(compile(ast.Module(body=body, type_ignores=[]), os.path.abspath(__file__), "exec"))


_RUNNER: list[bytes] = []


def _runner() -> bytes:
    """:func:`_runner_code`, compiled once per zygote."""
    if not _RUNNER:
        _RUNNER.append(_runner_code())
    return _RUNNER[0]


def _callgrind_runner(data: bytes) -> None:
    """The callgrind run's entry point (trusted): contain like :func:`_child`'s end, then report."""
    import importlib
    import types

    payload = marshal.loads(data)  # written by the contained child before the exec, not by the sample
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # the job description is gone before the sample runs
    os.close(null)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    for name in payload["preload"]:  # what the zygote preloaded and the program imports
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    if payload["drop"]:
        import ctypes

        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        # a uid change makes the process non-dumpable, which hides /proc/self/fd from it, and
        # callgrind writes its profile there at exit; no core dumps either way (RLIMIT_CORE 0)
        if ctypes.CDLL(None, use_errno=True).prctl(4, 1, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")
    workdir = os.getcwd()
    os.environ.clear()  # valgrind adds LD_PRELOAD and friends: show the sample the usual environment
    os.environ.update(_CHILD_ENV)
    os.environ["HOME"] = os.environ["TMPDIR"] = workdir
    if "tempfile" in sys.modules:  # otherwise TMPDIR tells it
        sys.modules["tempfile"].tempdir = workdir
    _report(types.SimpleNamespace(**payload["job"]), payload["nonce"], call=payload["call"], dumps=_dumps)


def _dumps(value: Any) -> str:
    """``json.dumps`` for a verdict (a dict of strings, numbers and None), without importing
    json, and with it re: ~35 M instructions in every callgrind run."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        import math  # an extension module: no Python code to run

        if not math.isfinite(value):
            raise ValueError("not representable in JSON")
        return repr(float(value))
    if isinstance(value, str):
        out = []
        for char in str(value):
            code = ord(char)
            if 0x20 <= code < 0x7F and char not in '"\\':
                out.append(char)
            elif code > 0xFFFF:  # a surrogate pair, as JSON spells it
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
            else:
                out.append(f"\\u{code:04x}")
        return '"' + "".join(out) + '"'
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return "{" + ", ".join(f"{_dumps(key)}: {_dumps(item)}" for key, item in value.items()) + "}"
    raise TypeError(f"not JSON: {type(value).__name__}")


def _report(job: Job, nonce: str, call: bool = True, dumps: Any = None) -> None:
    """Run the job under the audit hook, write the verdict on the result descriptor, exit."""
    write = os.write  # bound before the sample runs: it may rebind module attributes
    dumps = dumps or json.dumps
    verdict = _harness(job, call)
    try:
        data = dumps(verdict)
    except (TypeError, ValueError):
        data = dumps({"status": "crashed", "detail": "unreportable result"})
    write(_RESULT_FD, f"{nonce} {data}\n".encode())
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001, S110 (the sample may have closed them)
            pass
    os._exit(0)


def _audit_hook(workdir: str) -> Any:
    """An audit hook refusing what a sample never needs (defence in depth under the rlimits)."""
    import stat as _stat  # noqa: F401 (loaded before the hook so path checks never import)

    denied = {"os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system", "os.startfile",
              "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill", "_thread.start_new_thread",
              "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.call_function",
              "resource.setrlimit", "resource.prlimit", "urllib.Request", "webbrowser.open", "os.setxattr",
              "os.removexattr", "fcntl.ioctl"}
    # event -> positions of its dir_fd arguments (a path relative to a descriptor escapes the check)
    path_events = {"os.remove": (1,), "os.rmdir": (1,), "os.rename": (2, 3), "os.mkdir": (2,), "os.chmod": (2,),
                   "os.chown": (3,), "os.truncate": (), "os.link": (2, 3), "os.symlink": (2,), "os.utime": (3,),
                   "os.chdir": (), "os.chflags": (), "os.lchflags": (), "shutil.rmtree": (1,), "shutil.copyfile": (),
                   "shutil.copytree": (), "shutil.move": (), "os.mkfifo": (2,), "os.mknod": (3,)}
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    root = os.path.realpath(workdir)
    own_proc = (f"/proc/{os.getpid()}", "/proc/self", "/proc/thread-self")
    realpath, fspath, fsdecode = os.path.realpath, os.fspath, os.fsdecode
    busy = [False]

    def inside(path: Any) -> bool:
        full = realpath(fsdecode(fspath(path)))
        return full == root or full.startswith(root + "/")

    def refuse(event: str, why: str = "") -> None:
        raise PermissionError(f"sandbox: {event} is not allowed{why}")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if busy[0]:
            return
        if event in denied or event.startswith(("socket.", "ftplib.", "http.", "smtplib.", "poplib.", "imaplib.",
                                                "nntplib.", "telnetlib.", "os.posix_spawn")):
            refuse(event)
        if event == "open":
            path, mode, flags = args
            if path is None or isinstance(path, int):
                if isinstance(path, int):
                    refuse(event, " on a descriptor")
                return
            busy[0] = True
            try:
                writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & write_flags)
                if writing and not inside(path):
                    refuse(event, f" for writing outside the working directory: {path!r}")
                text = fsdecode(fspath(path))
                if text.startswith("/proc/") and not text.startswith(own_proc):
                    full = realpath(text)
                    if not full.startswith(own_proc):
                        refuse(event, f" on {path!r}")
            finally:
                busy[0] = False
        elif event in path_events:
            busy[0] = True
            try:
                for index, value in enumerate(args):
                    if index in path_events[event]:
                        if value is not None and value != -1:
                            refuse(event, " relative to a directory descriptor")
                    elif index == 0 and isinstance(value, int):
                        refuse(event, " on a descriptor")
                    elif (isinstance(value, (str, bytes, os.PathLike)) and not (event == "os.symlink" and index == 0)
                          and not inside(value)):  # a link's target is checked when the link is used
                        refuse(event, f" outside the working directory: {value!r}")
            finally:
                busy[0] = False

    return hook


_KEEP: list[Any] = []  # the counted call's result: freeing it would be counted too


def _harness(job: Job, call: bool = True) -> dict[str, Any]:
    """Run the sample under the audit hook; return the verdict (never raises). ``call=False``
    (mode "instructions" only) does everything but the call on ``perf_input``."""
    import builtins

    perf = time.perf_counter  # bound before the sample runs
    sys.addaudithook(_audit_hook(os.getcwd()))
    try:
        args: tuple[Any, ...] | None = None
        if job.perf_input:  # built before the sample runs, so it cannot tamper with the input
            args = eval(compile(job.perf_input, "<perf_input>", "eval"), {"__builtins__": builtins})
            if not isinstance(args, tuple):
                return {"status": "failed", "failing_test": "perf_input", "detail": "perf_input is not a tuple"}
        try:
            code = compile(job.program, "<sample>", "exec")
        except (SyntaxError, ValueError) as error:
            return {"status": "failed", "failing_test": None, "detail": f"SyntaxError: {error}"}
        namespace: dict[str, Any] = {"__name__": "__sandbox__", "__builtins__": builtins}
        try:
            exec(code, namespace)  # noqa: S102 (this is the sandbox)
        except BaseException as error:  # noqa: BLE001
            return _exception_verdict(error, None, "while defining the sample")
        candidate = namespace.get(job.entry_point)
        if not callable(candidate):
            return {"status": "failed", "failing_test": None, "detail": f"no function {job.entry_point!r} defined"}
        if job.mode == "time":
            if args is None:
                return {"status": "failed", "failing_test": None, "detail": "no perf_input to time"}
            try:
                start = perf()
                value = candidate(*args)
                seconds = perf() - start
            except BaseException as error:  # noqa: BLE001
                return _exception_verdict(error, "perf_input", "on perf_input")
            return {"status": "passed", "seconds": seconds, "digest": _digest(value)}
        if job.mode == "instructions":
            if args is None:
                return {"status": "failed", "failing_test": None, "detail": "no perf_input to count"}
            if call:
                try:
                    _KEEP.append(candidate(*args))
                except BaseException as error:  # noqa: BLE001
                    return _exception_verdict(error, "perf_input", "on perf_input")
            return {"status": "passed"}
        try:
            exec(compile(job.test, "<test>", "exec"), namespace)  # noqa: S102
            check = namespace["check"]
        except BaseException as error:  # noqa: BLE001
            return {"status": "failed", "failing_test": None, "detail": f"the tests do not load: {error!r}"[:500]}
        try:
            check(candidate)
        except BaseException as error:  # noqa: BLE001
            import traceback  # preloaded by the zygote (the callgrind runner never checks)

            return _exception_verdict(error, _test_line(error, job.test, traceback), "in the tests")
        digest = None
        if args is not None:
            try:
                digest = _digest(candidate(*args))
            except BaseException as error:  # noqa: BLE001
                return _exception_verdict(error, "perf_input", "on perf_input")
        return {"status": "passed", "digest": digest}
    except BaseException as error:  # noqa: BLE001 (e.g. a MemoryError building perf_input)
        return _exception_verdict(error, None, "in the harness")


def _exception_verdict(error: BaseException, failing_test: str | None, where: str) -> dict[str, Any]:
    if isinstance(error, MemoryError):
        return {"status": "memory", "failing_test": failing_test, "detail": f"MemoryError {where}"}
    if isinstance(error, SystemExit):
        return {"status": "failed", "failing_test": failing_test, "detail": f"called sys.exit({error.code!r}) {where}"}
    try:
        message = str(error)
    except BaseException:  # noqa: BLE001 (a hostile __str__)
        message = ""
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return {"status": "failed", "failing_test": failing_test, "detail": f"{text[:400]} {where}"}


def _test_line(error: BaseException, test: str, traceback: Any) -> str | None:
    """The source line of the innermost test frame: the assert that failed."""
    lines = test.splitlines()
    found = None
    for frame, number in traceback.walk_tb(error.__traceback__):
        if frame.f_code.co_filename == "<test>" and 0 < number <= len(lines):
            found = lines[number - 1].strip()
    return found[:500] if found else None


def _canonical(value: Any, depth: int = 0) -> Any:
    """A form of ``value`` whose repr is the same for equal values (set order, float noise)."""
    if depth > 50:
        return repr(value)
    if isinstance(value, float):
        return float(f"{value:.10g}")
    if isinstance(value, (set, frozenset)):
        return ("set", sorted(repr(_canonical(v, depth + 1)) for v in value))
    if isinstance(value, dict):
        return ("dict", sorted((repr(_canonical(k, depth + 1)), repr(_canonical(v, depth + 1)))
                               for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_canonical(v, depth + 1) for v in value])
    return value


def _digest(value: Any) -> str:
    import hashlib

    return hashlib.sha256(repr(_canonical(value)).encode("utf-8", "replace")).hexdigest()[:16]


if __name__ == "__main__":
    _zygote(json.loads(sys.argv[1]))
