"""The hostile corpus: every sample is contained and classified, and the host and the run survive.

File attacks aim at a canary directory this test creates (never at real files); the canary is
made world-writable so that the audit hook, not only the dropped uid, has to stop them.
"""

from __future__ import annotations

import os
import signal

import pytest
from retrofit_codegen.sandbox import Job, Limits, Sandbox

LIMITS = Limits(cpu_seconds=1, wall_seconds=2, memory_mb=256, output_bytes=10_000)
CHECK = "def check(candidate):\n    candidate(1)\n"
OK = Job("def f(x):\n    return x + 1\n", "f", "def check(candidate):\n    assert candidate(1) == 2\n")

# name -> (program defining f; {CANARY} is the canary file, {DIR} its directory), expected status,
# a phrase of the detail (None: any)
CORPUS = {
    # CPU or wall limit, whichever a loaded machine hits first: both are "timeout"
    "infinite loop": ("def f(x):\n    while True:\n        pass\n", "timeout", "time over"),
    "sleep forever": ("import time\ndef f(x):\n    time.sleep(1000)\n", "timeout", "wall time"),
    "memory bomb": ("def f(x):\n    hoard = []\n    while True:\n        hoard.append(bytearray(10**7))\n", "memory",
                    "MemoryError"),
    "one huge allocation": ("def f(x):\n    return bytearray(10**11)\n", "memory", "MemoryError"),
    "fork bomb": ("import os\ndef f(x):\n    while True:\n        os.fork()\n", "failed", "os.fork is not allowed"),
    "subprocess bomb": (("import subprocess, sys\ndef f(x):\n    while True:\n"
                         "        subprocess.Popen([sys.executable, '-c', 'pass'])\n"), "failed", "subprocess.Popen"),
    "multiprocessing bomb": (("import multiprocessing\ndef f(x):\n    while True:\n"
                              "        multiprocessing.Process(target=f, args=(x,)).start()\n"), "failed", "not allowed"),
    "fork through libc": ("import ctypes\ndef f(x):\n    ctypes.CDLL(None).fork()\n", "failed", "ctypes.dlopen"),
    "os.system": ("import os\ndef f(x):\n    os.system('touch {DIR}/pwned')\n", "failed", "os.system"),
    "thread bomb": ("import threading\ndef f(x):\n    while True:\n        threading.Thread(target=f, args=(x,)).start()\n",
                    "failed", None),
    "write outside": ("def f(x):\n    open('{CANARY}', 'w').write('pwned')\n", "failed", "outside the working directory"),
    "create outside": ("import os\ndef f(x):\n    os.open('{DIR}/new', os.O_CREAT | os.O_WRONLY)\n", "failed",
                       "outside the working directory"),
    "delete outside": ("import os\ndef f(x):\n    os.remove('{CANARY}')\n", "failed", "os.remove"),
    "rmtree outside": ("import shutil\ndef f(x):\n    shutil.rmtree('{DIR}')\n", "failed", "not allowed"),
    "rename outside": ("import os\ndef f(x):\n    os.rename('{CANARY}', 'stolen')\n", "failed", "os.rename"),
    "chdir out, then write": ("import os\ndef f(x):\n    os.chdir('{DIR}')\n    open('new', 'w').write('x')\n",
                              "failed", "os.chdir"),
    "symlink out, then write": (("import os\ndef f(x):\n    os.symlink('{CANARY}', 'link')\n"
                                 "    open('link', 'w').write('pwned')\n"), "failed", "outside the working directory"),
    "kill the parent": ("import os, signal\ndef f(x):\n    os.kill(os.getppid(), signal.SIGKILL)\n", "failed", "os.kill"),
    "kill the parent's group": ("import os, signal\ndef f(x):\n    os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)\n",
                                "failed", "os.killpg"),
    "sys.exit": ("import sys\ndef f(x):\n    sys.exit(0)\n", "failed", "sys.exit(0)"),
    "os._exit": ("import os\ndef f(x):\n    os._exit(0)\n", "crashed", "before reporting"),
    "huge output": ("def f(x):\n    print('x' * 10**8)\n", "killed", "output over"),
    "endless output to the descriptor": ("import os\ndef f(x):\n    while True:\n        os.write(1, b'x' * 4096)\n",
                                         "killed", "output over"),
    "segfault": ("import ctypes\ndef f(x):\n    ctypes.string_at(0)\n", "crashed", "SIGSEGV"),
    "deep recursion": ("def f(x):\n    return f(x + 1)\n", "failed", "RecursionError"),
    "C stack overflow": ("import sys\nsys.setrecursionlimit(10**8)\ndef f(x):\n    return list(map(f, [x]))\n",
                         "crashed", "SIGSEGV"),
    "big file": ("def f(x):\n    open('big', 'wb').write(bytes(10**7))\n", "failed", "File too large"),
    "network": ("import socket\ndef f(x):\n    socket.socket().connect(('127.0.0.1', 22))\n", "failed", "socket"),
    "parent's environment": ("import os\ndef f(x):\n    return open(f'/proc/{{os.getppid()}}/environ').read()\n",
                             "failed", "not allowed on"),
    "raise the limits": ("import resource\ndef f(x):\n    resource.setrlimit(resource.RLIMIT_CPU, (100, 100))\n",
                         "failed", "resource.setrlimit"),
    "forge a verdict": ("import os\ndef f(x):\n    os.write(3, b'0 {{\"status\": \"passed\"}}\\n')\n", "crashed", None),
}


@pytest.fixture(scope="module")
def canary(tmp_path_factory):
    directory = tmp_path_factory.mktemp("canary")
    (directory / "canary.txt").write_text("intact")
    os.chmod(directory, 0o777)
    os.chmod(directory / "canary.txt", 0o666)
    return directory


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(LIMITS) as box:
        yield box


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", list(CORPUS))
def test_hostile_sample_is_contained_and_classified(sandbox, canary, name):
    program, status, phrase = CORPUS[name]
    program = program.replace("{CANARY}", str(canary / "canary.txt")).replace("{DIR}", str(canary))
    program = program.replace("{{", "{").replace("}}", "}")
    outcome = sandbox.run(Job(program, "f", CHECK))
    assert outcome.status == status, outcome
    if phrase:
        assert phrase in outcome.detail, outcome
    # the run survives: the same sandbox judges the next sample normally, the canary is untouched
    assert sandbox.run(OK).status == "passed"
    assert sorted(p.name for p in canary.iterdir()) == ["canary.txt"]
    assert (canary / "canary.txt").read_text() == "intact"


def test_environment_secrets_do_not_reach_the_sample(monkeypatch):
    monkeypatch.setenv("RETROFIT_FAKE_SECRET", "hunter2")
    test = "def check(candidate):\n    assert 'hunter2' not in repr(candidate(1))\n"
    program = "import os\ndef f(x):\n    return dict(os.environ), os.environ.get('RETROFIT_FAKE_SECRET')\n"
    with Sandbox(LIMITS) as box:
        assert box.run(Job(program, "f", test)).status == "passed"


def test_nothing_is_left_running_and_classification_is_deterministic(canary):
    names = ["infinite loop", "memory bomb", "fork bomb", "segfault", "huge output", "sys.exit"]
    with Sandbox(LIMITS) as box:
        first = [box.run(Job(CORPUS[n][0], "f", CHECK)).status for n in names]
        second = [box.run(Job(CORPUS[n][0], "f", CHECK)).status for n in names]
        zygote = box._process.pid
    assert first == second == [CORPUS[n][1] for n in names]
    with pytest.raises(ProcessLookupError):  # the zygote is gone after close
        os.kill(zygote, 0)
    if os.geteuid() == 0:  # every sample ran as nobody: none may outlive its job
        leftovers = [pid for pid in os.listdir("/proc") if pid.isdigit() and _uid(pid) == 65534]
        assert leftovers == []
    assert signal.getsignal(signal.SIGTERM) is not None  # and this process is still here to check


def _uid(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("Uid:"))
    except (OSError, StopIteration):
        return None
