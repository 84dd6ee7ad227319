"""Evaluations on a Dask cluster: one the user already runs (``--scheduler tcp://host:8786``),
or an embedded ``distributed.LocalCluster`` (worker processes on loopback) when no address is
given. Same interface as the executors in :mod:`retrofit.executors`.

How a run uses the cluster:

* :meth:`DaskExecutor.start` registers a ``WorkerPlugin`` that carries the run's
  :class:`~retrofit.config.Config` under a random run token. Every worker, present or joining
  later (a replacement after a crash, a new machine), receives it once. The first task a
  worker runs for the token builds an :class:`~retrofit.evaluator.Evaluator` (the model is
  loaded there, once) and keeps it in a worker-side cache; ``start`` warms every worker up
  that way and returns the search space. Unregistering the plugin at the end frees the model
  on a long-lived cluster.
* After that a task is only a :class:`~retrofit.evaluator.Task` (candidate id, split, knob
  values, batch indices): a few hundred bytes. Futures are submitted with ``pure=False``:
  two identical candidates on noisy episodes must both run.
* :meth:`DaskExecutor.wait` streams results back as they finish (``FIRST_COMPLETED``).
* Retry policy: when a worker dies mid-evaluation (crash, OOM kill, a machine lost), the
  Dask scheduler runs the task again on another worker, up to its ``allowed-failures``
  setting (1 on the embedded cluster: one retry elsewhere; a remote scheduler's own setting,
  3 by default). The outcome's ``attempts`` (written to the history) says how many workers
  ran it; a candidate that kills more workers than that is recorded as a failed evaluation
  and the run goes on, as a worker death is with ``--executor local``.

``distributed`` is an optional dependency (``pip install "retrofit-core[dask]"``), imported
only when this executor starts.
"""

from __future__ import annotations

import collections
import logging
import signal
import threading
import time
import uuid
from concurrent.futures import CancelledError
from dataclasses import dataclass, fields
from typing import Any

from retrofit.config import Config
from retrofit.errors import RunFailed, UsageError
from retrofit.evaluator import Evaluator, Outcome, Setup, Task

#: Worker deaths a task survives on the embedded cluster before it counts as failed.
EMBEDDED_ALLOWED_FAILURES = 1
_CONNECT_TIMEOUT = 30.0  # seconds for the workers to show up
_STARTUP_TIMEOUT = 600.0  # model loading on every worker
_CLOSE_TIMEOUT = 10.0


@dataclass
class DaskOutcome(Outcome):
    """An :class:`Outcome` that also says how many workers ran the task (1 unless a worker died)."""

    attempts: int = 1


def require_distributed() -> Any:
    """Import ``distributed``, or fail with one line saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise UsageError('--executor dask needs dask.distributed: pip install "retrofit-core[dask]" '
                         '(or: pip install "dask[distributed]")') from None
    return distributed


# -- worker side ---------------------------------------------------------------------------
# These run in the Dask worker processes. The cache is per process, keyed by the run token,
# so several runs can share a long-lived cluster without mixing their models.
_CONFIGS: dict[str, Config] = {}
_EVALUATORS: dict[str, tuple[Evaluator, threading.Lock]] = {}
_CACHE_LOCK = threading.Lock()


def _install(token: str, config: Config, ignore_sigint: bool) -> None:
    """Plugin setup on a worker: remember the run's config (the model loads on first use)."""
    _CONFIGS[token] = config
    if ignore_sigint and threading.current_thread() is threading.main_thread():
        # Ctrl-C in the terminal reaches the embedded workers too; stopping is the main process's business
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _uninstall(token: str) -> None:
    """Plugin teardown: forget the run, and its model."""
    with _CACHE_LOCK:
        _CONFIGS.pop(token, None)
        _EVALUATORS.pop(token, None)


def _evaluator(token: str) -> tuple[Evaluator, threading.Lock]:
    with _CACHE_LOCK:
        if token not in _EVALUATORS:
            if token not in _CONFIGS:
                raise RunFailed(f"this worker has no configuration for run {token} (plugin not installed)")
            _EVALUATORS[token] = (Evaluator(_CONFIGS[token]), threading.Lock())
        return _EVALUATORS[token]


def _prepare(token: str) -> Setup:
    """Task: load the model on this worker (if not done yet) and describe its search space."""
    evaluator, _ = _evaluator(token)
    return evaluator.setup()


def _evaluate(token: str, task: Task) -> Outcome:
    """Task: evaluate one candidate with this worker's model."""
    evaluator, lock = _evaluator(token)
    with lock:  # knobs edit the model in place: one evaluation at a time on a multi-threaded worker
        return evaluator.evaluate(task)


_plugin_class: type | None = None


def _make_plugin_class() -> type:
    """The ``WorkerPlugin`` subclass, created on first use so that importing this module does
    not import ``distributed``. It is published as the module attribute ``RunPlugin`` (see
    ``__getattr__``), so pickle sends it by reference and workers rebuild it the same way."""
    global _plugin_class
    if _plugin_class is None:
        from distributed.diagnostics.plugin import WorkerPlugin

        class RunPlugin(WorkerPlugin):
            """Carries one run's config to every worker; dropping it frees the model."""

            def __init__(self, token: str, config: Config, ignore_sigint: bool) -> None:
                self.token, self.config, self.ignore_sigint = token, config, ignore_sigint

            def setup(self, worker: Any) -> None:
                _install(self.token, self.config, self.ignore_sigint)

            def teardown(self, worker: Any) -> None:
                _uninstall(self.token)

        RunPlugin.__module__ = __name__
        RunPlugin.__qualname__ = "RunPlugin"
        _plugin_class = RunPlugin
    return _plugin_class


def __getattr__(name: str) -> Any:
    if name == "RunPlugin":
        return _make_plugin_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _processing_query() -> Any:
    """A function run on the scheduler: the worker running a task. Built in a closure so that
    cloudpickle ships it by value: the scheduler needs no retrofit installed."""

    def processing_on(dask_scheduler: Any, key: Any) -> str | None:
        state = dask_scheduler.tasks.get(key)
        return state.processing_on.address if state is not None and state.processing_on is not None else None

    return processing_on


# -- client side ---------------------------------------------------------------------------
class DaskExecutor:
    """Evaluations on the workers of a Dask cluster, one model per worker process."""

    name = "dask"

    def __init__(self, config: Config, workers: int) -> None:
        self.distributed = require_distributed()
        self.config = config
        self.scheduler = config.run.scheduler.strip()
        # with an existing cluster, workers = 0 means "every worker it has", known once connected
        self.workers = workers
        self.timeout = config.run.eval_timeout or None
        self.token = uuid.uuid4().hex
        self.queue: collections.deque[Task] = collections.deque()
        self.in_flight: dict[Any, tuple[Task, float]] = {}  # future -> (task, dispatched at)
        self.cluster: Any = None
        self.client: Any = None
        self.plugin_name = f"retrofit-{self.token}"
        self.startup_seconds = 0.0
        # task key -> workers that left while running it (or holding its unfetched result): each one
        # means the scheduler runs the evaluation again elsewhere
        self.interrupted: collections.Counter[Any] = collections.Counter()

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> Setup:
        began = time.monotonic()
        try:
            self._connect()
            # the scheduler tells subscribers which tasks a departing worker was running, on the same
            # stream and before the retry's result: counting them costs no round trip per evaluation
            self.client.subscribe_topic("all", self._on_cluster_event)
            plugin = _make_plugin_class()(self.token, self.config, self.cluster is not None)
            self.client.register_plugin(plugin, name=self.plugin_name)
            setup = self._warm_up()
        except BaseException:
            self.close()
            raise
        self.startup_seconds = time.monotonic() - began
        return setup

    def _connect(self) -> None:
        distributed = self.distributed
        if self.scheduler:
            try:
                # connect timeout: dask's own setting (distributed.comm.timeouts.connect, 30 s by default)
                self.client = distributed.Client(self.scheduler, set_as_default=False)
            except (OSError, TimeoutError) as error:
                raise UsageError(f"cannot reach the dask scheduler at {self.scheduler}: {error}") from None
        else:
            # loopback only, no dashboard (port 8787 may be taken), no memory limit (like the local pool)
            self.cluster = distributed.LocalCluster(
                n_workers=self.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None, memory_limit=0, silence_logs=logging.ERROR,
                scheduler_kwargs={"allowed_failures": EMBEDDED_ALLOWED_FAILURES})
            self.client = distributed.Client(self.cluster, set_as_default=False)
        try:
            self.client.wait_for_workers(max(self.workers, 1), timeout=_CONNECT_TIMEOUT)
        except TimeoutError:
            have = len(self.client.scheduler_info()["workers"])
            raise RunFailed(f"the dask cluster has {have} worker(s) after {_CONNECT_TIMEOUT:.0f} s; "
                            f"run.workers asks for {self.workers}") from None
        if not self.workers:
            self.workers = len(self.client.scheduler_info()["workers"])

    def _warm_up(self) -> Setup:
        """Load the model on every worker now, so that a broken config fails before the run."""
        addresses = list(self.client.scheduler_info()["workers"])
        futures = [self.client.submit(_prepare, self.token, workers=[address], allow_other_workers=False,
                                      pure=False) for address in addresses]
        try:
            with self.client.as_current():
                self.distributed.wait(futures, timeout=_STARTUP_TIMEOUT)
            setups = self.client.gather(futures)
        except TimeoutError:
            raise RunFailed(f"the dask workers did not load the model within {_STARTUP_TIMEOUT:.0f} s") from None
        except UsageError as error:
            raise UsageError(str(error)) from None
        except Exception as error:
            raise RunFailed(f"a dask worker could not load the model: {type(error).__name__}: {error}") from None
        return setups[0]

    def close(self) -> None:
        """Forget the futures, free the model on the workers, close the client and the embedded
        cluster. Safe to call twice, and after a failed start."""
        self.queue.clear()
        self.in_flight.clear()
        self.interrupted.clear()
        client, cluster, self.client, self.cluster = self.client, self.cluster, None, None
        if client is not None:
            try:  # else the scheduler reports this client's own departure to it, after its comm closed
                client.unsubscribe_topic("all")
            except Exception:  # noqa: BLE001  (not subscribed: start failed before)
                pass
            if cluster is None:  # a shared cluster outlives the run: drop this run's models
                try:
                    client.unregister_worker_plugin(self.plugin_name)
                except Exception:  # noqa: BLE001  (not registered, or the scheduler is gone)
                    pass
            try:
                client.close(timeout=_CLOSE_TIMEOUT)
            except Exception:  # noqa: BLE001
                pass
        if cluster is not None:
            try:
                cluster.close(timeout=_CLOSE_TIMEOUT)
            except Exception:  # noqa: BLE001
                pass

    def _on_cluster_event(self, event: tuple[float, Any]) -> None:
        """Runs in the client's event loop for every scheduler event of topic ``all``."""
        _, message = event
        if isinstance(message, dict) and message.get("action") == "remove-worker":
            for key in (*message.get("processing-tasks", ()), *message.get("lost-computed-tasks", ())):
                self.interrupted[key] += 1

    # -- work ----------------------------------------------------------------------------
    def submit(self, task: Task) -> None:
        self.queue.append(task)

    def _dispatch(self) -> None:
        """At most one task per worker in flight, so an evaluation's timeout starts when it can run."""
        while self.queue and len(self.in_flight) < self.workers:
            task = self.queue.popleft()
            future = self.client.submit(_evaluate, self.token, task, pure=False)
            self.in_flight[future] = (task, time.monotonic())

    def wait(self) -> list[Outcome]:
        assert self.client is not None, "start() first"
        self._dispatch()
        if not self.in_flight:
            return []
        timeout = None
        if self.timeout:
            timeout = max(0.0, min(at for _, at in self.in_flight.values()) + self.timeout - time.monotonic())
        try:
            with self.client.as_current():  # distributed.wait asks for the default client
                self.distributed.wait(list(self.in_flight), timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass
        except getattr(self.distributed.client, "FuturesCancelledError", CancelledError):
            pass  # a future cancelled by the cluster: reported as a failed evaluation below
        outcomes = self._collect([future for future in self.in_flight if future.status != "pending"])
        if self.timeout:
            now = time.monotonic()
            for future, (task, at) in list(self.in_flight.items()):
                if now - at >= self.timeout:
                    outcomes.append(self._time_out(future, task, now - at))
        self._dispatch()
        return outcomes

    def _collect(self, done: list[Any]) -> list[Outcome]:
        if not done:
            return []
        finished = [future for future in done if future.status == "finished"]
        try:
            results = dict(zip(finished, self.client.gather(finished)))
        except Exception:  # noqa: BLE001  (a worker vanished with a result: fetch one by one below)
            results = {}
        outcomes: list[Outcome] = []
        for future in done:
            task, at = self.in_flight.pop(future)
            if future in results:
                outcome = results[future]
            elif future.status == "finished":
                try:
                    outcome = future.result()
                except Exception as error:  # noqa: BLE001
                    outcome = self._failed(task, at, f"result lost: {type(error).__name__}: {error}")
            else:
                outcome = self._failed(task, at, self._reason(future))
            outcomes.append(DaskOutcome(**{f.name: getattr(outcome, f.name) for f in fields(Outcome)},
                                        attempts=1 + self.interrupted.pop(future.key, 0)))
            future.release()
        return outcomes

    def _reason(self, future: Any) -> str:
        if future.status == "cancelled":
            return "cancelled by the dask cluster"
        error = future.exception()
        if type(error).__name__ == "KilledWorker":
            return f"worker died ({error})"
        return f"{type(error).__name__}: {error}"

    def _failed(self, task: Task, dispatched: float, reason: str) -> Outcome:
        return Outcome(candidate=task.candidate, split=task.split, loss=None,
                       seconds=time.monotonic() - dispatched, worker="dask", error=reason)

    def _time_out(self, future: Any, task: Task, elapsed: float) -> Outcome:
        """Record the evaluation as failed; restart the worker running it (its thread cannot be
        stopped otherwise), which needs a nanny (the embedded cluster and ``dask worker`` have one)."""
        worker = None
        try:
            worker = self.client.run_on_scheduler(_processing_query(), key=future.key)
        except Exception:  # noqa: BLE001
            pass
        self.in_flight.pop(future)
        self.interrupted.pop(future.key, None)
        future.cancel()
        if worker:
            try:
                self.client.restart_workers([worker], timeout=_STARTUP_TIMEOUT, raise_for_error=False)
            except Exception:  # noqa: BLE001  (no nanny: the thread runs on, the run does not wait for it)
                pass
        return DaskOutcome(candidate=task.candidate, split=task.split, loss=None, seconds=elapsed,
                           worker=worker or "dask", error=f"timed out after {self.timeout:g} s")
