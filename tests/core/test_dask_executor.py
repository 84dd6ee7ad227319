"""The Dask executor on real clusters: an embedded LocalCluster (worker processes on loopback)
and a scheduler and workers started as separate ``dask`` commands, as on several machines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil  # comes with distributed: the dask extra is part of the test environment (make setup-test)
import pytest
from conftest import cli, history

IGNORED = {"wall_seconds", "evaluation_seconds", "executor"}  # timing, and the executor's own name


def spawned_children() -> list[psutil.Process]:
    """Worker processes this test process started (multiprocessing spawn children)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if any("spawn_main" in part for part in child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def assert_no_workers_left(timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while spawned_children() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not spawned_children(), [p.cmdline() for p in spawned_children()]


def all_entries(run_dir: Path) -> list[dict[str, Any]]:
    entries = []
    for name in ("history.jsonl", "validation.jsonl", "reevaluations.jsonl"):
        path = run_dir / name
        if path.exists():
            entries += [json.loads(line) for line in path.read_text().splitlines()]
    return entries


def test_dask_gives_the_same_run_as_the_local_pool(toy_run):
    pooled, pooled_dir = toy_run(budget=16, executor="local", workers=2, seed=5)
    dasked, dask_dir = toy_run(budget=16, executor="dask", workers=2, seed=5)
    assert dasked["executor"] == "dask" and dasked["workers"] == 2 and dasked["status"] == "finished"
    assert {k: v for k, v in dasked.items() if k not in IGNORED} == {k: v for k, v in pooled.items() if k not in IGNORED}
    strip = lambda entries: [{k: e[k] for k in ("id", "values", "loss", "told")} for e in entries]
    assert strip(history(dask_dir)) == strip(history(pooled_dir))
    # both dask workers did work, every evaluation ran once, and the cluster is gone
    assert len({e["worker"] for e in history(dask_dir)}) == 2
    assert all(e["attempts"] == 1 for e in all_entries(dask_dir) + all_entries(pooled_dir))
    assert_no_workers_left()


def test_a_worker_killed_mid_evaluation_costs_a_retry_not_the_run(tmp_path):
    from retrofit import executors
    from retrofit.config import resolve
    from retrofit.engine import Run
    from retrofit.evaluator import Evaluator, Task
    from retrofit.records import RunRecord
    from retrofit.toy import DOMAIN

    budget = 10
    config = resolve(DOMAIN, None, {"run.executor": "dask", "run.workers": 2, "run.budget": budget,
                                    "run.validate_every": 100, "toy.delay": 0.15})  # 0.45 s per evaluation
    record = RunRecord.create(config, tmp_path / "run")
    executor = executors.create(config)
    killed: dict[str, int] = {}

    def kill_a_busy_worker() -> None:
        while len(all_entries(record.path)) < 3:  # well into the run
            time.sleep(0.05)
        pids = executor.client.run(os.getpid)
        seen: set[Any] = set()
        for _ in range(2000):
            # a task that just reached its worker has ~0.45 s to go: the kill cannot miss it
            for address, keys in executor.client.processing().items():
                if set(keys) - seen and seen:
                    killed[address] = pids[address]
                    os.kill(pids[address], signal.SIGKILL)
                    return
                seen |= set(keys)
            time.sleep(0.005)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    killer.start()
    summary = Run(config, DOMAIN, executor, record).execute()
    killer.join(5)

    assert killed, "no busy worker was found to kill"
    assert summary["status"] == "finished"
    assert summary["evaluations"] == budget == len(history(record.path))
    assert summary["failed_evaluations"] == 0
    retried = [e for e in all_entries(record.path) if e["attempts"] > 1]
    assert len(retried) == 1 and retried[0]["attempts"] == 2 and retried[0]["error"] is None
    # the retry ran elsewhere and measured what this process measures for the same candidate
    entry, evaluator = retried[0], Evaluator(config)
    recorded = {e["id"]: e for e in history(record.path)}.get(entry["id"])
    values = evaluator.space.join(recorded["values"]) if recorded else evaluator.space.identity
    batches = tuple(entry["batches"]) if entry.get("batches") else None
    assert evaluator.evaluate(Task(entry["id"], entry["split"], values, batches)).loss == entry["loss"]
    assert_no_workers_left()


def test_a_hanging_evaluation_times_out_and_its_worker_is_restarted(toy_run):
    summary, run_dir = toy_run(budget=8, executor="dask", workers=2, eval_timeout=1.5,
                               **{"toy.fault": "hang", "toy.fault_rate": 0.15})
    hung = [e for e in history(run_dir) if e["error"]]
    assert summary["evaluations"] == 8 and summary["status"] == "finished"
    assert hung and all("timed out after 1.5 s" in e["error"] for e in hung)
    assert_no_workers_left()  # the hung worker was restarted, then closed with the cluster


def test_an_existing_cluster_started_with_the_dask_commands(tmp_path):
    """The docs' recipe: `dask scheduler`, `dask worker`, then `retrofit ... --scheduler ADDR`."""
    dask = Path(sys.executable).with_name("dask")
    file = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", file], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
    worker = None
    try:
        deadline = time.monotonic() + 30
        while not file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(file.read_text())["address"]
        worker = subprocess.Popen([dask, "worker", "--scheduler-file", file, "--nworkers", "2", "--nthreads", "1",
                                   "--no-dashboard", "--host", "127.0.0.1"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        from distributed import Client

        with Client(address, set_as_default=False, timeout=20) as client:
            client.wait_for_workers(2, timeout=30)
            # workers = 0 (the default on a cluster): every worker the cluster has when the run starts
            done = cli("toy", "tune", "--executor", "dask", "--scheduler", address, "--workers", "0", "--budget",
                       "12", "--out", "R", cwd=tmp_path, check=0)
            result = json.loads((tmp_path / "R" / "summary.json").read_text())
            assert result["executor"] == "dask" and result["workers"] == 2 and result["evaluations"] == 12, done.stderr
            assert len({e["worker"] for e in history(tmp_path / "R")}) == 2
            # the cluster lives on, and the run's models were dropped from it
            cached = client.run(lambda: sorted(__import__("retrofit.dask_executor").dask_executor._EVALUATORS))
            assert len(cached) == 2 and all(keys == [] for keys in cached.values())
    finally:
        for process in (worker, scheduler):
            if process is not None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in (worker, scheduler):
            if process is not None:
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(5)


def test_an_unreachable_scheduler_is_a_usage_error(tmp_path):
    done = cli("toy", "tune", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9", "--budget", "4",
               "--out", "R", cwd=tmp_path, env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"})
    assert done.returncode == 2, done.stderr
    assert "cannot reach the dask scheduler at tcp://127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "R").exists()  # nothing ran: no run directory left behind


def test_without_dask_installed_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    from retrofit import executors
    from retrofit.config import resolve
    from retrofit.errors import UsageError
    from retrofit.toy import DOMAIN

    monkeypatch.setitem(sys.modules, "distributed", None)  # makes `import distributed` fail
    with pytest.raises(UsageError, match=r'pip install "retrofit-core\[dask\]"'):
        executors.create(resolve(DOMAIN, None, {"run.executor": "dask"}))

    # and on the command line: one error line, exit code 2, no run directory left behind
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['distributed'] = None  # not installed\n")
    done = cli("toy", "tune", "--executor", "dask", "--budget", "4", "--out", "R", cwd=tmp_path,
               env={"PYTHONPATH": str(site)})
    errors = [line for line in done.stderr.splitlines() if line.startswith("retrofit: error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(errors) == 1 and 'pip install "retrofit-core[dask]"' in errors[0], done.stderr
    assert not (tmp_path / "R").exists()


def test_histories_written_before_the_attempts_field_still_resume(tmp_path):
    from retrofit import executors
    from retrofit.config import resolve
    from retrofit.engine import Interrupted, Progress, Run
    from retrofit.records import CONFIG, RunRecord
    from retrofit.toy import DOMAIN

    def stop_after_four(done: int, best: float | None) -> None:
        if done == 4:
            raise KeyboardInterrupt

    config = resolve(DOMAIN, None, {"run.executor": "serial", "run.budget": 8})
    record = RunRecord.create(config, tmp_path / "run")
    with pytest.raises(Interrupted):
        Run(config, DOMAIN, executors.create(config), record, Progress(on_result=stop_after_four)).execute()
    old = [{k: v for k, v in e.items() if k != "attempts"} for e in history(record.path)]
    (record.path / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in old))

    config = resolve(DOMAIN, record.path / CONFIG)
    summary = Run(config, DOMAIN, executors.create(config), RunRecord.open(record.path)).execute()
    entries = history(record.path)
    assert summary["status"] == "finished" and len(entries) == 8
    assert ["attempts" in e for e in entries] == [False] * 4 + [True] * 4


def test_dask_is_imported_only_by_a_dask_run(tmp_path):
    code = ("import sys, retrofit.cli, retrofit.plugins, retrofit.executors, retrofit.dask_executor\n"
            "retrofit.cli.build(retrofit.plugins.load())\n"
            "print(sorted({'dask', 'distributed'} & {m.split('.')[0] for m in sys.modules}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"  # not even by importing the executor's module
