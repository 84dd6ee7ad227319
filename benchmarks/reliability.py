"""The full fault-injection campaign behind docs/reliability.md.

Injects every fault kind into real runs of the toy domain, many times, and counts runs that
completed and finished evaluations that were lost (the goal is 0). The CI suite
(tests/reliability) runs a few cases of each; this runs many, with the same helpers and the
same definition of "nothing lost" (tests/reliability/faults.py: ``problems``).

    nice .venv/bin/python benchmarks/reliability.py                 # the recorded campaign
    nice .venv/bin/python benchmarks/reliability.py --kills 6 --repeats 1   # a quick look

Faults: SIGKILL of the main process at seeded random points then ``--resume`` (serial and
process-pool runs); a worker segfaulting, running out of memory, exiting, killed by SIGKILL or
SIGTERM from outside; a hanging evaluation (``run.eval_timeout``); the disk filling up at the
N-th record write then ``--resume``; corrupt record files then ``--resume [--repair]``; every
bad-input case of tests/reliability/test_bad_input.py.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the fault-injection helpers the CI suite uses

from reliability.faults import (
    FullDisk,
    Toy,
    entries,
    invoke,
    kill_main,
    kill_points,
    lines,
    problems,
)


@dataclass
class Row:
    """One line of the table: a fault kind and what came of injecting it."""

    fault: str
    injected: int = 0
    completed: int = 0
    lost: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, found: list[str], lost: int = 0) -> None:
        self.injected += 1
        self.completed += not found
        self.lost += lost
        if found and len(self.notes) < 3:
            self.notes.append("; ".join(found))


def _lost(before: list[dict[str, Any]], run_dir: Path) -> int:
    """Finished evaluations recorded before the fault that are missing or changed after it."""
    after = {entry["id"]: entry for entry in entries(run_dir)}
    keys = ("id", "values", "loss", "told", "error")
    return sum(1 for entry in before if {k: after.get(entry["id"], {}).get(k) for k in keys}
               != {k: entry.get(k) for k in keys})


def campaign_kills(work: Path, kills: int, seed: int) -> list[Row]:
    """SIGKILL of the main process at ``kills`` seeded points, half serial, half a 2-worker pool."""
    rows = []
    for offset, toy in enumerate((Toy(budget=60, workers=1, seed=seed, delay=0.01, validate_every=10, executor="serial"),
                Toy(budget=60, workers=2, seed=seed, delay=0.01, validate_every=10, executor="local"))):
        row = Row(f"kill -9 main process, then --resume ({toy.executor}"
                  f"{', 2 workers' if toy.workers > 1 else ''})")
        reference = work / f"reference-{toy.executor}"
        code, err = invoke([*toy.args(), "--out", str(reference)])
        assert code == 0, err
        count = kills // 2
        for index, (point, jitter) in enumerate(kill_points(seed + offset, count, toy.budget)):
            run_dir = work / f"kill-{toy.executor}-{index}"
            before = kill_main([*toy.args(), "--out", str(run_dir)], run_dir, work, point, jitter)
            code, err = invoke(["toy", "tune", "--resume", str(run_dir)])
            found = [] if code == 0 else [f"resume exit {code}: {err.strip()[-200:]}"]
            # a pool run's results depend on nothing but the seed too (tell_order = ask)
            found += problems(run_dir, toy.budget, before=before, reference=reference)
            row.add(found, _lost(before, run_dir))
            print(f"  {row.fault}: kill at {point}+{jitter}s -> {'ok' if not found else found}", flush=True)
        rows.append(row)
    return rows


def _toy_run(run_dir: Path, **settings: Any) -> tuple[int, str]:
    args = ["toy", "tune", "--out", str(run_dir)]
    for key, value in settings.items():
        args += ["--set", f"{key if '.' in key else 'run.' + key}={value}"]
    return invoke(args)


def _all_errors(run_dir: Path) -> list[str]:
    return [e["error"] for name in ("history.jsonl", "validation.jsonl")
            for e in entries(run_dir, name) if e["error"]]


def campaign_workers(work: Path, repeats: int, seed: int) -> list[Row]:
    """Worker deaths from inside (segfault, out of memory, exit) and outside (SIGKILL,
    SIGTERM), and hanging evaluations; every run must finish with every candidate recorded."""
    rows = []
    budget = 20
    common = {"executor": '"local"', "workers": 2, "budget": budget, "validate_every": 10}
    for fault, reason in (("segfault", "killed by SIGSEGV"), ("oom", "MemoryError"), ("exit", "exit code 3")):
        row = Row(f"worker fault inside an evaluation: {fault}")
        hit = 0
        for repeat in range(repeats):
            run_dir = work / f"worker-{fault}-{repeat}"
            code, err = _toy_run(run_dir, **common, seed=seed + repeat, **{"toy.fault": f'"{fault}"',
                                                                           "toy.fault_rate": 0.25})
            found = [] if code == 0 else [f"exit {code}: {err.strip()[-200:]}"]
            found += problems(run_dir, budget)
            errors = _all_errors(run_dir)
            hit += len(errors)
            if not errors or not all(reason in e for e in errors):
                found.append(f"unexpected failure reasons {errors[:3]}")
            row.add(found)
        row.notes.append(f"{hit} evaluations hit, each recorded failed")
        rows.append(row)

    for name, sig in (("SIGKILL", signal.SIGKILL), ("SIGTERM", signal.SIGTERM)):
        row = Row(f"worker killed from outside mid-evaluation: {name}")
        rng = random.Random(seed)
        for repeat in range(repeats):
            run_dir = work / f"outside-{name}-{repeat}"
            after = rng.randrange(2, budget - 4)
            sent: list[int] = []

            def killer(run_dir: Path = run_dir, after: int = after, sent: list[int] = sent,
                       rng: random.Random = rng, sig: signal.Signals = sig) -> None:
                deadline = time.monotonic() + 120
                while not sent and time.monotonic() < deadline:
                    workers = multiprocessing.active_children()
                    if len(lines(run_dir / "history.jsonl")) >= after and workers:
                        time.sleep(rng.uniform(0.01, 0.08))
                        victim = rng.choice(workers)
                        os.kill(victim.pid, sig)
                        sent.append(victim.pid)
                    time.sleep(0.005)

            thread = threading.Thread(target=killer, daemon=True)
            thread.start()
            code, err = _toy_run(run_dir, **common, seed=seed + repeat, **{"toy.delay": 0.05})
            thread.join()
            found = [] if code == 0 else [f"exit {code}: {err.strip()[-200:]}"]
            found += problems(run_dir, budget)
            errors = _all_errors(run_dir)
            if not sent:
                found.append("no worker was killed")
            elif len(errors) > 1 or any(f"killed by {name}" not in e for e in errors):
                found.append(f"unexpected failures {errors}")
            row.add(found)
        rows.append(row)

    row = Row("hanging evaluation (run.eval_timeout = 1 s)")
    for repeat in range(repeats):
        run_dir = work / f"hang-{repeat}"
        code, err = _toy_run(run_dir, **{**common, "budget": 12}, seed=seed + repeat, eval_timeout=1.0,
                             **{"toy.fault": '"hang"', "toy.fault_rate": 0.2})
        found = [] if code == 0 else [f"exit {code}: {err.strip()[-200:]}"]
        found += problems(run_dir, 12)
        if any(e != "timed out after 1 s" for e in _all_errors(run_dir)):
            found.append(f"unexpected failures {_all_errors(run_dir)[:3]}")
        row.add(found)
    rows.append(row)
    return rows


def campaign_disk(work: Path, points: int, seed: int) -> list[Row]:
    """The disk fills at the N-th record write (any file: a history line, a checkpoint, the
    summary); then space returns and the run is resumed."""
    toy = Toy(budget=40, workers=1, seed=seed, delay=0.0, validate_every=10, executor="serial")
    reference = work / "reference-disk"
    code, err = invoke([*toy.args(), "--out", str(reference)])
    assert code == 0, err
    row = Row("disk full at the N-th record write, then --resume")
    for fail_at in sorted(random.Random(seed).sample(range(2, 50), points)):  # a run makes ~60 writes
        run_dir = work / f"disk-{fail_at}"
        with FullDisk(fail_at).installed():
            code, err = invoke([*toy.args(), "--out", str(run_dir)])
        found = [] if code == 1 and "No space left on device" in err else [f"exit {code}: {err.strip()[-200:]}"]
        before = entries(run_dir) if (run_dir / "history.jsonl").exists() else []
        if not (run_dir / "config.toml").exists():  # refused before anything was recorded: start again
            code, err = invoke([*toy.args(), "--out", str(run_dir)])
        else:
            code, err = invoke(["toy", "tune", "--resume", str(run_dir)])
        found += [] if code == 0 else [f"after space returned: exit {code}: {err.strip()[-200:]}"]
        found += problems(run_dir, toy.budget, before=before, reference=reference)
        row.add(found, _lost(before, run_dir))
    return [row]


def _corruptions() -> dict[str, Callable[[Path], None]]:
    def middle(name: str, raw: bytes) -> Callable[[Path], None]:
        def damage(run_dir: Path) -> None:  # a damaged LAST line would read as torn: dropped, not refused
            path = run_dir / name
            content = path.read_bytes().splitlines(keepends=True)
            content[(len(content) - 1) // 2] = raw
            path.write_bytes(b"".join(content))
        return damage

    def whole(name: str, raw: bytes) -> Callable[[Path], None]:
        return lambda run_dir: (run_dir / name).write_bytes(raw)

    def torn(run_dir: Path) -> None:
        with open(run_dir / "history.jsonl", "ab") as stream:
            stream.write(b'{"id": 99, "split": "tr')

    return {
        "history.jsonl: torn last line": torn,
        "history.jsonl: garbage mid-file": middle("history.jsonl", b"\x00\x17garbage\n"),
        "history.jsonl: half a line mid-file": middle("history.jsonl", b'{"id": 3, "lo\n'),
        "history.jsonl: record missing keys": middle("history.jsonl", b'{"id": 3}\n'),
        "history.jsonl: invalid UTF-8": middle("history.jsonl", b"\xff\xfe\xfd\n"),
        "validation.jsonl: garbage": middle("validation.jsonl", b"}}}\n"),
        "checkpoints.jsonl: garbage": middle("checkpoints.jsonl", b"[\n"),
        "summary.json: truncated": whole("summary.json", b'{"status": "runn'),
        "summary.json: not an object": whole("summary.json", b"[]"),
        "summary.json: empty": whole("summary.json", b""),
        "config.toml: not TOML": whole("config.toml", b"[run\nbudget ="),
        "config.toml: truncated": whole("config.toml", b"[run]\nbudget = 30\n"),
    }


def _good_prefix(path: Path) -> list[dict[str, Any]]:
    """The history records before the first damaged line."""
    import json

    good = []
    for raw in path.read_bytes().splitlines(keepends=True):
        try:
            entry = json.loads(raw)
        except ValueError:
            break
        if not raw.endswith(b"\n") or not isinstance(entry, dict) or "values" not in entry:
            break
        good.append(entry)
    return good


def campaign_corruption(work: Path, seed: int) -> list[Row]:
    """Each damage to an interrupted run's records: a torn last line resumes as is; anything
    else is refused (exit 2, one line naming the file) and, but for config.toml, ``--repair``
    then finishes the run with nothing lost that was before the damage."""
    from retrofit.records import RunRecord

    toy = Toy(budget=30, workers=1, seed=seed, delay=0.0, validate_every=10, executor="serial")
    reference = work / "reference-corrupt"
    code, err = invoke([*toy.args(), "--out", str(reference)])
    assert code == 0, err
    row = Row("corrupt or truncated record file, then --resume [--repair]")
    for index, (label, damage) in enumerate(_corruptions().items()):
        run_dir = work / f"corrupt-{index}"
        original = RunRecord.append

        def append(self: RunRecord, name: str, entry: dict[str, Any],
                   original: Callable[..., None] = original) -> None:
            if name == "history.jsonl" and entry["id"] == 22:
                raise KeyboardInterrupt  # an interrupted run, 22 evaluations in
            original(self, name, entry)

        RunRecord.append = append  # type: ignore[method-assign]
        try:
            invoke([*toy.args(), "--out", str(run_dir)])
        finally:
            RunRecord.append = original  # type: ignore[method-assign]
        damage(run_dir)
        before = _good_prefix(run_dir / "history.jsonl")  # what precedes the damage must survive
        code, err = invoke(["toy", "tune", "--resume", str(run_dir)])
        found: list[str] = []
        if label.endswith("torn last line"):
            found += [] if code == 0 else [f"{label}: exit {code}"]
        else:
            errors = [line for line in err.splitlines() if line.startswith("retrofit: error: ")]
            if code != 2 or len(errors) != 1 or label.split(":")[0] not in errors[0]:
                found.append(f"{label}: not refused clearly (exit {code}: {err.strip()[-200:]})")
            if label.startswith("config.toml"):
                row.add(found)
                continue
            code, err = invoke(["toy", "tune", "--resume", str(run_dir), "--repair"])
            found += [] if code == 0 else [f"{label}: --repair exit {code}: {err.strip()[-200:]}"]
        # re-scores and checkpoints cut from their files are re-made only where the run still needs
        # them (docs/reliability.md): the train history must match, the trace may not
        same = reference if label.split(":")[0] in ("history.jsonl", "summary.json") else None
        found += problems(run_dir, toy.budget, before=before, reference=same)
        row.add(found, _lost(before, run_dir))
    return [row]


def campaign_bad_input(work: Path) -> list[Row]:
    """Every case of the CI table, once: exit 2, one stderr line naming the input."""
    from reliability.test_bad_input import CASES

    files = {"typo.toml": "[toy]\ndims = 3\n", "section.toml": "[tyo]\ndim = 3\n", "bad.toml": "[run\nbudget = ",
             "types.toml": '[run]\nseed = "x"\n', "negative.toml": "[run]\nbudget = -5\n", "afile": "x\n",
             "bad.pt": "not a checkpoint\n"}
    folder = work / "bad-input"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    (folder / "binary.toml").write_bytes(b"\xff\xfe\x00")
    (folder / "adir").mkdir()
    row = Row("bad input (unknown names, malformed files, wrong types, bad paths, budget <= 0, ...)")
    here = Path.cwd()
    os.chdir(folder)
    try:
        for label, args, names in CASES:
            code, err = invoke(list(args))
            err_lines = [line for line in err.splitlines() if line.strip()]
            ok = code == 2 and len(err_lines) == 1 and names in err_lines[0] and "Traceback" not in err
            row.add([] if ok else [f"{label}: exit {code}: {err.strip()[-200:]}"])
    finally:
        os.chdir(here)
    row.notes.append("completed = exit 2 with one line naming the input")
    return [row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50, help="kill -9 points in all (half serial, half pool)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per worker fault kind")
    parser.add_argument("--disk-points", type=int, default=12, help="write counts at which the disk fills")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    started = time.monotonic()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="retrofit-reliability-") as temporary:
        work = Path(temporary)
        rows += campaign_bad_input(work)
        rows += campaign_corruption(work, args.seed)
        rows += campaign_disk(work, args.disk_points, args.seed)
        rows += campaign_workers(work, args.repeats, args.seed)
        rows += campaign_kills(work, args.kills, args.seed)
    print(f"\nretrofit reliability campaign: seed {args.seed}, {time.monotonic() - started:.0f} s, "
          f"{os.cpu_count()} CPUs\n")
    print("| fault | injected | runs completed | finished evaluations lost | notes |")
    print("| --- | ---: | ---: | ---: | --- |")
    for row in rows:
        print(f"| {row.fault} | {row.injected} | {row.completed} | {row.lost} | {'; '.join(row.notes)} |")
    total = sum(r.injected for r in rows), sum(r.completed for r in rows), sum(r.lost for r in rows)
    print(f"| **all** | **{total[0]}** | **{total[1]}** | **{total[2]}** | |")
    sys.exit(0 if total[0] == total[1] and total[2] == 0 else 1)


if __name__ == "__main__":
    main()
