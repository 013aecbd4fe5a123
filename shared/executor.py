"""Where the CPU-parallel stages run their tasks: local processes (loky), a Dask cluster or a Ray cluster.

A stage cuts its work into tasks (a chunk of frames, a shard, a sequence) and hands one task function
and the tasks' arguments to `run_tasks`; the distributor is a parameter, the task function is the
same everywhere (the img2dataset pattern). Results come back in completion order, and an exception
raised inside a task is raised again in the driver as itself (an OSError stays an OSError).

    backend  scheduler                    what runs the tasks
    loky     (ignored)                    n_jobs local processes (joblib), one thread each
    dask     ""                           a LocalCluster of n_jobs single-threaded worker processes
    dask     tcp://host:8786              the workers of that Dask scheduler (e.g. dask-jobqueue on SLURM)
    ray      ""                           a local Ray runtime with n_jobs CPUs (or the one this
                                          process already started, or RAY_ADDRESS's)
    ray      host:6379                    that Ray cluster (`ray start --head` / `ray start --address`)

Contract for task functions: they write only their own task's files (under a temporary name, then
renamed) and return what the driver needs to record; the driver alone writes manifests and
pointers. A worker process that dies mid-task therefore leaves at most a temporary file: Dask and
Ray run the task again on another worker, loky stops the stage, and a rerun redoes only what the
manifest does not list.

Dask and Ray are optional (requirements-scale.txt) and imported only when asked for. Workers of a
remote cluster must be able to import this project (same checkout on a shared filesystem, run
from it or with PYTHONPATH pointing at it: see the README's "Scaling out").
"""
from __future__ import annotations

import contextlib
import importlib
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import click

from shared.config import field

BACKENDS = ["loky", "dask", "ray"]
INSTALL_HINT = "pip install -r requirements-scale.txt"
PROJECT_ROOT = str(Path(__file__).resolve().parents[1])
R = TypeVar("R")


def backend_field() -> Any:
    return field("loky", "where tasks run: loky (local processes), dask or ray (a cluster at --scheduler, "
                         "else a local one; needs `pip install -r requirements-scale.txt`)",
                 choices=BACKENDS, hash=False)


def scheduler_field() -> Any:
    return field("", "dask: scheduler address (tcp://host:8786); ray: cluster address (host:6379); "
                     "empty = a local cluster of --workers processes", hash=False)


def _engine(module: str, backend: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise click.UsageError(f"--backend {backend} needs the optional package `{module.split('.')[0]}` "
                               f"({e}); install the engines with `{INSTALL_HINT}`") from e


def _ray_token_at_hand() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def _driver_gone(driver: int) -> bool:
    """Whether the driver process has ended (a zombie not yet reaped by its own parent counts as ended)."""
    try:
        os.kill(driver, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's: pid reuse, so ours is gone
        return True
    try:
        return Path(f"/proc/{driver}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):  # no /proc (macOS): os.kill's answer stands
        return False


_WATCHED: set[int] = set()


def watch_driver(driver: int, every_s: float = 0.25) -> None:
    """In a loky worker process: end this process soon after the
    driver `driver` dies. A SIGKILLed driver (OOM killer, closed terminal) cannot stop its workers,
    and they used to go on computing for a minute or more, holding cores and memory; a daemon thread
    polls instead. (A local Dask cluster's workers and a local Ray runtime already end with their driver.) A task holding the GIL in compiled code delays the exit until it lets go."""
    if driver in _WATCHED or driver == os.getpid():
        return
    _WATCHED.add(driver)

    def watch() -> None:
        while not _driver_gone(driver):
            time.sleep(every_s)
        os._exit(1)  # no cleanup: the driver that would record this work is gone; temporaries go on the rerun

    threading.Thread(target=watch, name="watch-driver", daemon=True).start()


class Executor:
    """One engine session: `with Executor("dask", addr, 4) as ex: for r in ex.map_unordered(fn, args): ...`.

    Connecting (or starting a local cluster) happens once on entry, so a stage with two passes pays
    the start-up once; what this object started is shut down on exit, a cluster it only connected to
    is left running."""

    def __init__(self, backend: str = "loky", scheduler: str = "", n_jobs: int = 1):
        if backend not in BACKENDS:
            raise click.UsageError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.backend, self.scheduler, self.n_jobs = backend, scheduler, max(1, int(n_jobs))
        self._stack = contextlib.ExitStack()
        self._client: Any = None
        self._ray: Any = None

    # -- engine sessions

    def __enter__(self) -> "Executor":
        if self.backend == "dask":
            distributed = _engine("distributed", "dask")
            if self.scheduler:
                self._client = self._stack.enter_context(distributed.Client(self.scheduler))
            else:
                cluster = self._stack.enter_context(distributed.LocalCluster(
                    n_workers=self.n_jobs, threads_per_worker=1, processes=True, dashboard_address=None))
                self._client = self._stack.enter_context(distributed.Client(cluster))
        elif self.backend == "ray":
            remote = bool(self.scheduler or os.environ.get("RAY_ADDRESS"))
            if remote and "RAY_AUTH_MODE" not in os.environ and _ray_token_at_hand():
                # A cluster from `ray start` (Ray >= 2.60) wants its token, and a driver sends it only
                # in token mode, which Ray reads when it is imported (the stages import it here, first)
                os.environ["RAY_AUTH_MODE"] = "token"
            ray = self._ray = _engine("ray", "ray")
            if not ray.is_initialized():
                # workers import the task functions by module name: give them this checkout
                path = os.pathsep.join(p for p in (PROJECT_ROOT, os.environ.get("PYTHONPATH", "")) if p)
                kwargs: dict[str, Any] = {"runtime_env": {"env_vars": {"PYTHONPATH": path}},
                                          "include_dashboard": False, "log_to_driver": False}
                if self.scheduler:
                    kwargs["address"] = self.scheduler
                elif not remote:
                    # a new runtime of our own, even where a `ray start` cluster runs on this machine
                    # (ray.init() alone would join that one)
                    kwargs.update(address="local", num_cpus=self.n_jobs)
                ray.init(**kwargs)
                self._stack.callback(ray.shutdown)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    @property
    def address(self) -> str:
        """Where the tasks go: the Dask scheduler's or the Ray cluster's (GCS) address; "local" for loky."""
        if self._client is not None:
            return str(self._client.scheduler.address)
        if self._ray is not None:
            return str(self._ray.get_runtime_context().gcs_address)
        return "local"

    # -- running tasks

    def map_unordered(self, fn: Callable[..., R], task_args: Sequence[tuple], desc: str = "task") -> Iterator[R]:
        """fn(*args) for every args in task_args; results in completion order. Leaving the loop early
        (or an exception in a task) cancels the tasks that have not finished."""
        task_args = [tuple(a) for a in task_args]
        if not task_args:
            return iter(())
        if self.backend == "dask":
            return self._dask(fn, task_args, desc)
        if self.backend == "ray":
            return self._ray_tasks(fn, task_args, desc)
        return self._loky(fn, task_args)

    def _loky(self, fn: Callable[..., R], task_args: list[tuple]) -> Iterator[R]:
        from joblib import Parallel, delayed, parallel_config

        n_jobs = min(self.n_jobs, len(task_args))  # one job: joblib runs the tasks in this process
        with parallel_config(backend="loky", inner_max_num_threads=1, initializer=watch_driver, initargs=(os.getpid(),)):
            yield from Parallel(n_jobs=n_jobs, return_as="generator_unordered")(delayed(fn)(*a) for a in task_args)

    def _dask(self, fn: Callable[..., R], task_args: list[tuple], desc: str) -> Iterator[R]:
        distributed = _engine("distributed", "dask")
        run = uuid.uuid4().hex[:8]
        # pure=False: equal arguments are still separate tasks; a dead worker's task is retried on
        # another (distributed.scheduler.allowed-failures times), a task's exception comes back as itself
        futures = [self._client.submit(fn, *a, key=f"{desc}-{run}-{i}", pure=False) for i, a in enumerate(task_args)]
        try:
            for fut in distributed.as_completed(futures):
                yield fut.result()
        finally:
            self._client.cancel([f for f in futures if not f.done()])

    def _ray_tasks(self, fn: Callable[..., R], task_args: list[tuple], desc: str) -> Iterator[R]:
        ray = self._ray
        # one CPU per task (Ray sets OMP_NUM_THREADS to it); a task whose worker process dies is retried
        remote = ray.remote(num_cpus=1, max_retries=3)(fn)
        pending = [remote.options(name=desc).remote(*a) for a in task_args]
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                try:
                    yield ray.get(ready[0])
                except ray.exceptions.RayTaskError as e:
                    # the task's own exception, not Ray's wrapper (whose text keeps the remote traceback)
                    if isinstance(e.cause, Exception):
                        raise e.cause from e
                    raise
        finally:
            for ref in pending:
                ray.cancel(ref)


def run_tasks(fn: Callable[..., R], task_args: Sequence[tuple], backend: str = "loky", scheduler: str = "",
              n_jobs: int = 1, desc: str = "task") -> Iterator[R]:
    """fn(*args) for every args in task_args on `backend`, yielding results in completion order
    (an engine session for this call alone; see Executor to run several passes on one)."""
    with Executor(backend, scheduler, n_jobs) as ex:
        yield from ex.map_unordered(fn, task_args, desc)
