"""Engines that run a study's trainings, and the loop that streams each run's record to the study folder.

* ``LocalEngine(workers)``, the default: ``workers`` > 1 runs the trainings in a ``spawn`` process pool whose
  workers each get one BLAS / OpenMP thread (``OPENBLAS_NUM_THREADS=1`` and friends are set before they import
  numpy); ``workers`` = 1 runs them one after another in this process.
* ``RayEngine(workers, address)``: each training is a Ray task with ``num_cpus=1``, on a local Ray instance
  started here (limited to ``workers`` CPUs when given) or on the cluster at ``address``; the same thread
  variables reach the Ray workers through ``runtime_env``. Ray is shut down afterwards only if it was started
  here. The package must be importable on every node.

``run_tasks`` runs a study function over keyed tasks with one of them: a worker imports the function by its
module's full name and calls it; the driving process writes each run's record to ``OUT/runs/<key>.json``
(``records.RunRecords``) as soon as the run ends, and skips the runs already recorded ``ok``. Every task
carries its own seeds, so the records do not depend on the engine, the number of workers or the order in
which runs finish.

Statuses: a run that raises is recorded ``failed`` (its exception as ``reason``) and the others go on. A
training cut short by SIGINT / SIGTERM raises ``RunInterrupted`` and is recorded ``stopped``. SIGINT or SIGTERM
to the driving process stops the study: it records the runs in flight as ``stopped``, ends them and raises
``StudyStopped``; running the study again resumes it.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..lab.stopping import stop_on_signals
from .folderlock import hold_study_folder
from .records import RunRecords, Sweep

# OMP_NUM_THREADS = 1 also keeps the compiled relaxation (core.fused) to one thread per worker
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
POLL_S = 0.5  # how often the driving loop looks for a stop request while runs are in flight
END_GRACE_S = 5.0  # how long pool workers get to end after SIGTERM before they are killed
ENGINES = ("local", "ray")


class RunInterrupted(KeyboardInterrupt):
    """A run cut short (its training stopped on SIGINT / SIGTERM): recorded ``stopped``, never as a result."""


class StudyStopped(Exception):
    """The study stopped before every run ended; finished records are kept and a new start resumes it."""


class EngineUnavailable(Exception):
    """The engine asked for cannot run here (Ray not installed)."""


def ensure_finished(summary: dict) -> None:
    """Raise ``RunInterrupted`` when a training summary says the run was stopped before its end."""
    if str(summary.get("status", "")).startswith("stopped"):
        raise RunInterrupted(summary["status"])


def function_ref(fn: Callable) -> tuple[str, str]:
    """(module, qualified name) by which a worker imports ``fn``; a module run as ``__main__`` is named by its
    import name, so workers never depend on the driving process's script."""
    module = fn.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        if spec is None:
            raise ValueError(f"{fn.__qualname__} must live in an importable module to run in workers")
        module = spec.name
    return module, fn.__qualname__


def error_record(exc: BaseException, wall_s: float | None = None) -> dict:
    """The ``failed`` record of a run that raised ``exc``: ``reason`` (exception type and message) and, where
    the exception was raised, its ``traceback``."""
    record = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}".strip()}
    if exc.__traceback__ is not None:
        record["traceback"] = "".join(traceback.format_exception(exc))
    if wall_s is not None:
        record["wall_s"] = round(wall_s, 3)
    return record


def call_guarded(ref: tuple[str, str], task: Any) -> dict:
    """Import ``ref`` and call it on ``task`` where the engine runs it: ``{"status": "ok", **result}``, or a
    ``failed`` / ``stopped`` record; only a KeyboardInterrupt that is not ``RunInterrupted`` gets through."""
    t0 = time.perf_counter()
    try:
        result = getattr(importlib.import_module(ref[0]), ref[1])(task)
    except RunInterrupted as exc:
        return {"status": "stopped", "reason": f"interrupted: training {exc}",
                "wall_s": round(time.perf_counter() - t0, 3)}
    except Exception as exc:
        return error_record(exc, wall_s=time.perf_counter() - t0)
    clash = {"key", "status", "reason"} & set(result)
    if clash:
        return error_record(ValueError(f"{ref[1]} returned the reserved fields {sorted(clash)}"))
    return {"status": "ok", **result}


# ---- engines: each ``started(n)`` yields a runner with slots, in_process, submit(ref, task), wait(handles) ----
class _InProcess:
    """Runs each task in this process when the loop waits for it."""

    slots, in_process = 1, True

    def __init__(self):
        self._tasks: dict[int, tuple] = {}
        self._ids = itertools.count()

    def submit(self, ref, task) -> int:
        handle = next(self._ids)
        self._tasks[handle] = (ref, task)
        return handle

    def wait(self, handles: list, timeout: float) -> list[tuple[Any, dict]]:
        return [(handles[0], call_guarded(*self._tasks.pop(handles[0])))]


class _Pool:
    in_process = False

    def __init__(self, pool: ProcessPoolExecutor, slots: int):
        self.pool, self.slots = pool, slots

    def submit(self, ref, task):
        return self.pool.submit(call_guarded, ref, task)

    def wait(self, handles: list, timeout: float) -> list[tuple[Any, dict]]:
        done, _ = wait_futures(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        out = []
        for fut in done:
            exc = fut.exception()
            if isinstance(exc, BrokenProcessPool):
                raise StopStudy("a worker process died (killed, or out of memory)")
            out.append((fut, fut.result() if exc is None else error_record(exc)))
        return out


def _init_worker() -> None:
    """Pool worker set-up: one BLAS and one compiled-relaxation thread; SIGINT is left to the driving process,
    which ends the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for var in THREAD_VARS:
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except ImportError:  # the variables above already limit a freshly imported numpy
        pass


@contextmanager
def _one_thread_env() -> Iterator[None]:
    """The thread variables set to 1 in this process while the block runs (spawned workers inherit them)."""
    saved = {v: os.environ.get(v) for v in THREAD_VARS}
    os.environ.update({v: "1" for v in THREAD_VARS})
    try:
        yield
    finally:
        for var, old in saved.items():
            if old is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = old


@dataclass(frozen=True)
class LocalEngine:
    """This machine: ``workers`` spawn processes, or this process when ``workers`` is 1."""

    workers: int = 1

    @property
    def in_process(self) -> bool:
        return self.workers <= 1

    def describe(self) -> dict:
        return {"engine": "local", "workers": self.workers}

    @contextmanager
    def started(self, n_runs: int):
        if self.workers <= 1 or n_runs <= 1:
            yield _InProcess()
            return
        with _one_thread_env():  # for as long as the pool lives: it spawns its workers when tasks arrive
            pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_init_worker)
            try:
                yield _Pool(pool, self.workers)
            finally:  # runs still in flight after a stop or an error are ended, not waited for (the executor has
                # no public way to end its workers before Python 3.14, hence _processes)
                _end_workers(list((getattr(pool, "_processes", None) or {}).values()))
                pool.shutdown(wait=True, cancel_futures=True)


def _end_workers(processes: list, grace_s: float = END_GRACE_S) -> None:
    """SIGTERM every worker, then SIGKILL those still alive after ``grace_s``: a worker's training takes SIGTERM
    as "stop after this step", and a step or an evaluation may take minutes (their records are already written
    ``stopped`` by the driving process)."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + grace_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


class _Ray:
    in_process = False

    def __init__(self, ray, slots: int):
        self.ray, self.slots = ray, slots
        self.remote = ray.remote(num_cpus=1)(call_guarded)
        self.live: set = set()  # submitted, result not taken yet

    def submit(self, ref, task):
        handle = self.remote.remote(ref, task)
        self.live.add(handle)
        return handle

    def wait(self, handles: list, timeout: float) -> list[tuple[Any, dict]]:
        done, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        out = []
        for ref in done:
            self.live.discard(ref)
            try:
                out.append((ref, self.ray.get(ref)))
            except self.ray.exceptions.RayError as exc:  # the worker crashed or the task was cancelled
                out.append((ref, error_record(exc)))
        return out


@dataclass(frozen=True)
class RayEngine:
    """Ray tasks: a local instance (``workers`` CPUs, default all) or the cluster at ``address``. ``workers``
    also caps the runs in flight (default: the CPUs the instance or cluster has when the study starts)."""

    workers: int | None = None
    address: str | None = None
    in_process = False

    def __post_init__(self):
        if importlib.util.find_spec("ray") is None:
            raise EngineUnavailable("--engine ray needs Ray, which is not installed: pip install 'xyoptics[ray]'")

    def describe(self) -> dict:
        return {"engine": "ray", "workers": self.workers, "address": self.address}

    @contextmanager
    def started(self, n_runs: int):
        import ray

        ours = not ray.is_initialized()
        if ours:
            env = {"env_vars": {v: "1" for v in THREAD_VARS}}
            if self.address is None:
                ray.init(num_cpus=self.workers, runtime_env=env, include_dashboard=False, logging_level="WARNING")
            else:
                ray.init(address=self.address, runtime_env=env, logging_level="WARNING")
        runner = _Ray(ray, self.workers or max(1, int(ray.cluster_resources().get("CPU", 1))))
        try:
            yield runner
        finally:  # runs still in flight after a stop or an error are cancelled (their workers killed)
            for handle in runner.live:
                ray.cancel(handle, force=True)
            if ours:
                ray.shutdown()


def make_engine(kind: str = "local", workers: int | None = None, address: str | None = None):
    """The engine named ``kind`` ("local" or "ray"); ``workers`` None means 1 locally, all CPUs on Ray."""
    if kind == "local":
        if address is not None:
            raise ValueError("--address needs --engine ray")
        return LocalEngine(workers or 1)
    if kind == "ray":
        return RayEngine(workers, address)
    raise ValueError(f"unknown engine {kind!r}; choose from {', '.join(ENGINES)}")


# ---- the driving loop -----------------------------------------------------------------------------------
class StopStudy(Exception):
    """Raised inside the driving loop: stop the study, recording the runs in flight with this reason."""


def run_tasks(fn: Callable, tasks: dict[str, Any], config: dict, out_dir: str | Path, engine=None, workers: int = 1,
              progress: bool = True, desc: str = "runs", study: str | None = None) -> Sweep:
    """Run ``fn(task)`` for every ``key: task`` whose record in ``out_dir/runs`` is not ``ok`` yet, on
    ``engine`` (default ``LocalEngine(workers)``), writing each record as its run ends; returns all records.
    ``config`` (the study config as JSON) claims the folder for ``study`` (default: the name of ``fn``'s
    module): another study or config there is a ``ConfigError``, and so is a folder another process is
    driving a study in (``StudyFolderBusy``)."""
    engine = engine or LocalEngine(workers)
    ref = function_ref(fn)
    with hold_study_folder(out_dir):
        store = RunRecords(out_dir, study or ref[0].rpartition(".")[2], config)
        pending = {key: task for key, task in tasks.items() if not store.is_done(key)}
        bar = tqdm(total=len(tasks), initial=len(tasks) - len(pending), desc=desc, unit="run", disable=not progress)
        try:
            if pending:
                with engine.started(len(pending)) as runner, stop_on_signals() as stop:
                    _drive(runner, ref, pending, store, bar, stop)
        finally:
            bar.close()
        return Sweep([store.get(key) for key in tasks], engine.describe())


def _drive(runner, ref, pending: dict[str, Any], store: RunRecords, bar, stop) -> None:
    queue = iter(pending.items())
    in_flight: dict[Any, str] = {}
    try:
        while True:
            if stop.requested:
                raise StopStudy(f"interrupted ({stop.reason})")
            for key, task in itertools.islice(queue, runner.slots - len(in_flight)):
                in_flight[runner.submit(ref, task)] = key
            if not in_flight:
                return
            for handle, record in runner.wait(list(in_flight), POLL_S):
                key = in_flight.pop(handle)
                store.put(key, record)
                bar.update()
                if record["status"] == "stopped" and runner.in_process:  # this process got the signal
                    raise StopStudy(record["reason"])
    except KeyboardInterrupt:  # raised in this process: a second Ctrl-C, or a run that let it through
        reason = f"interrupted ({stop.reason or 'KeyboardInterrupt'})"
    except StopStudy as exc:
        reason = str(exc)
    for key in in_flight.values():
        store.put(key, {"status": "stopped", "reason": reason})
    statuses = [(store.get(key) or {}).get("status") for key in pending]
    raise StudyStopped(f"stopped: {reason}; {statuses.count('ok')} of {len(pending)} runs of this start finished, "
                       f"{statuses.count('stopped')} recorded as stopped")
